"""Messages: the (role, content) turns of a conversation, validated once at the edge."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from personaspace.errors import PersonaspaceError

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    """One turn. Content is stored stripped of surrounding whitespace (templates strip it too).

    Example:
        >>> Message("user", "  Hi  ")
        Message(role='user', content='Hi')
    """

    role: Role
    content: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "content", self.content.strip())


def as_messages(conversation: Iterable[Message | Mapping[str, object]]) -> list[Message]:
    """Validate a conversation given as ``Message`` objects or OpenAI-style dicts.

    Rules: at least one message; roles are system/user/assistant; a system message may only
    come first; after it, user and assistant alternate starting with user.

    Example:
        >>> as_messages([{"role": "user", "content": "Hello"}])
        [Message(role='user', content='Hello')]
    """
    messages: list[Message] = []
    for index, item in enumerate(conversation):
        if isinstance(item, Message):
            messages.append(item)
            continue
        if not isinstance(item, Mapping) or "role" not in item or "content" not in item:
            raise PersonaspaceError(
                f"message {index} is not a {{'role', 'content'}} object",
                fix="give each message a role (system/user/assistant) and a text content",
            )
        role, content = _role(item["role"]), item["content"]
        if role is None:
            raise PersonaspaceError(
                f"message {index} has unknown role {item['role']!r}",
                fix="use system, user or assistant",
            )
        if not isinstance(content, str):
            raise PersonaspaceError(
                f"message {index} ({role}) has non-text content",
                fix="give the content as a string",
            )
        messages.append(Message(role, content))
    if not messages:
        raise PersonaspaceError("the conversation is empty", fix="give at least one user message")
    body = messages[1:] if messages[0].role == "system" else messages
    for index, message in enumerate(body):
        expected = "user" if index % 2 == 0 else "assistant"
        if message.role != expected:
            position = index + (len(messages) - len(body))
            raise PersonaspaceError(
                f"message {position} is {_a(message.role)} turn where {_a(expected)} turn belongs",
                fix="put an optional system message first, then alternate user and assistant",
            )
    return messages


def _role(value: object) -> Role | None:
    """``value`` as a role, or ``None`` if it is not one.

    Example:
        >>> _role("user"), _role("tool")
        ('user', None)
    """
    if value == "system":
        return "system"
    if value == "user":
        return "user"
    if value == "assistant":
        return "assistant"
    return None


def _a(word: str) -> str:
    """``word`` with its indefinite article.

    Example:
        >>> _a("user"), _a("assistant")
        ('a user', 'an assistant')
    """
    # By sound, for the role names we meet: "an assistant", but "a user".
    return f"{'an' if word[:1] in 'aeio' else 'a'} {word}"
