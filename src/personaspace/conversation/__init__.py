"""Conversations, the exact token spans of every message's content, and prompts per model."""

from personaspace.conversation.format import (
    FormattedConversation,
    TokenSpan,
    format_conversation,
)
from personaspace.conversation.messages import Message, as_messages
from personaspace.conversation.plain import PLAIN_STOP_STRINGS, render_plain
from personaspace.conversation.prompts import (
    BASE_DEFAULT_FRAME,
    default_system,
    default_system_prompt,
    format_exchange,
    format_prompt,
    prompt_messages,
    stop_strings,
)

__all__ = [
    "BASE_DEFAULT_FRAME",
    "PLAIN_STOP_STRINGS",
    "FormattedConversation",
    "Message",
    "TokenSpan",
    "as_messages",
    "default_system",
    "default_system_prompt",
    "format_conversation",
    "format_exchange",
    "format_prompt",
    "prompt_messages",
    "render_plain",
    "stop_strings",
]
