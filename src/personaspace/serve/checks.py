"""Every check of a request against what this server serves and allows, in one place.

Each check raises an OpenAI-style ``APIError`` (a 4xx). ``check_chat`` runs a chat
request's checks in the order their refusals are reported: the model, the message count,
``max_tokens``, then the conversation itself (roles alternate, the last one is the user's).
Checks that need the model (the prompt fits its context) run in the worker, in
``ServeEngine.prompt_tokens``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from personaspace.conversation.messages import Message, as_messages
from personaspace.monitor.transcripts import Transcript
from personaspace.serve.errors import APIError
from personaspace.serve.guard import Limits
from personaspace.serve.schemas import ChatCompletionRequest


def check_model_name(requested: str, served: Sequence[str]) -> None:
    """Refuse a ``model`` the server does not serve (404, as OpenAI does).

    Example:
        >>> check_model_name("gpt-9", ["tiny"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        personaspace.serve.errors.APIError: the model 'gpt-9' is not served here; ... 'tiny'
    """
    if requested not in served:
        raise APIError(
            404,
            f"the model '{requested}' is not served here; this server serves "
            f"{', '.join(repr(s) for s in served)}",
            code="model_not_found",
            param="model",
        )


def check_message_count(count: int, limits: Limits) -> None:
    """Refuse a chat request with more than ``limits.max_messages`` messages."""
    if count > limits.max_messages:
        raise APIError(
            400,
            f"{count} messages; this server accepts at most {limits.max_messages}",
            code="too_many_messages",
            param="messages",
        )


def checked_max_tokens(requested: int | None, limits: Limits) -> int:
    """The reply's token budget: the requested one (or the default), within the limit.

    Example:
        >>> checked_max_tokens(None, Limits(default_max_tokens=16))
        16
    """
    max_tokens = requested or limits.default_max_tokens
    if max_tokens > limits.max_tokens:
        raise APIError(
            400,
            f"max_tokens is {max_tokens}; this server allows at most {limits.max_tokens}",
            code="max_tokens_too_large",
            param="max_tokens",
        )
    return max_tokens


def check_ends_with_user(history: Sequence[Message]) -> None:
    """Refuse a conversation whose last message is not the user's (nothing to reply to)."""
    if history[-1].role != "user":
        raise APIError(400, "the last message must be a user message", param="messages")


class ChatInput(NamedTuple):
    """A checked chat request's conversation and the reply's token budget."""

    history: list[Message]
    max_tokens: int


def check_chat(req: ChatCompletionRequest, served: Sequence[str], limits: Limits) -> ChatInput:
    """Run every check of a chat request; its conversation and the reply's token budget.

    A conversation whose roles do not alternate is refused by ``as_messages`` (a
    ``PersonaspaceError``, reported as a 400).
    """
    check_model_name(req.model, served)
    check_message_count(len(req.messages), limits)
    max_tokens = checked_max_tokens(req.requested_max_tokens, limits)
    history = as_messages([m.as_dict() for m in req.messages])
    check_ends_with_user(history)
    return ChatInput(history, max_tokens)


def check_transcript_length(transcript: Transcript, limits: Limits) -> None:
    """Refuse a transcript to project with more than ``limits.max_messages`` messages."""
    if len(transcript.messages) > limits.max_messages:
        raise APIError(
            400,
            f"the transcript has {len(transcript.messages)} messages; the limit is "
            f"{limits.max_messages}",
            code="too_many_messages",
        )
