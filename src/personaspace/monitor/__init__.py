"""Monitoring: where a conversation's assistant turns sit on the Assistant Axis."""

from typing import Any

from personaspace.monitor.axis import CALIBRATION_FILE, Axis, load_axis
from personaspace.monitor.projection import Trajectory, project_turns, resolve_layers
from personaspace.monitor.transcripts import Transcript, read_transcripts, write_transcript

# The live API and reports use interventions, which import monitor.axis: load them lazily.
_LAZY = {
    "LiveChat": "live",
    "TurnResult": "live",
    "chat_turn": "live",
    "run_conversation": "live",
    "run_calibration": "live",
    "steer_along_axis": "live",
    "MonitorReport": "report",
    "monitor_transcripts": "report",
    "trajectory_png": "plot",
}

__all__ = [
    "CALIBRATION_FILE",
    "Axis",
    "LiveChat",
    "MonitorReport",
    "Trajectory",
    "Transcript",
    "TurnResult",
    "chat_turn",
    "load_axis",
    "monitor_transcripts",
    "project_turns",
    "read_transcripts",
    "resolve_layers",
    "run_calibration",
    "run_conversation",
    "steer_along_axis",
    "trajectory_png",
    "write_transcript",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f"personaspace.monitor.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'personaspace.monitor' has no attribute {name!r}")
