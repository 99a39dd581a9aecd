"""Conversations and the exact token spans of every message's content."""

from personaspace.conversation.format import (
    FormattedConversation,
    TokenSpan,
    format_conversation,
)
from personaspace.conversation.messages import Message, as_messages
from personaspace.conversation.transcript import PLAIN_STOP_STRINGS, render_plain

__all__ = [
    "PLAIN_STOP_STRINGS",
    "FormattedConversation",
    "Message",
    "TokenSpan",
    "as_messages",
    "format_conversation",
    "render_plain",
]
