"""Capture the residual stream: during generation (single pass) or teacher-forced."""

from personaspace.capture.generate import Generation, engine_of, generate, response_means
from personaspace.capture.hooks import residual_hooks
from personaspace.capture.sampling import SamplingConfig
from personaspace.capture.teacher import TurnCapture, capture_conversations, with_reply

__all__ = [
    "Generation",
    "SamplingConfig",
    "TurnCapture",
    "capture_conversations",
    "engine_of",
    "generate",
    "residual_hooks",
    "response_means",
    "with_reply",
]
