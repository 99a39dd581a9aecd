"""Prompts for a model: a system prompt and a user message (after any earlier turns) rendered
the way that model reads conversations, ready to generate the assistant's reply.

A chat model gets its chat template; a pre-trained base model gets the plain transcript
format (``personaspace.conversation.plain``), its default persona framed by
``BASE_DEFAULT_FRAME``, and generation stops where it starts the next user turn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from personaspace.conversation.format import FormattedConversation, format_conversation
from personaspace.conversation.messages import Message
from personaspace.conversation.plain import PLAIN_STOP_STRINGS

# A base model cannot read "You are an AI assistant." as an instruction to itself; it reads
# a document. For base models each default prompt is preceded by this opening paragraph,
# which makes the document a transcript of a helpful AI assistant (see docs/formats.md).
BASE_DEFAULT_FRAME = (
    "The following is a transcript of a conversation between a user and a helpful AI "
    "assistant. The assistant answers the user's questions helpfully, honestly and directly."
)


class ChatReader(Protocol):
    """What prompt assembly needs of a model: its tokenizer and whether it is chat-tuned."""

    @property
    def tokenizer(self) -> Any: ...

    @property
    def chat_tuned(self) -> bool: ...


def stop_strings(chat_tuned: bool) -> tuple[str, ...]:
    """Where generation stops besides the end-of-turn token: base models write the next user
    turn themselves, so they stop at ``"\\nUser:"``.

    Example:
        >>> stop_strings(True), stop_strings(False)
        ((), ('\\nUser:',))
    """
    return () if chat_tuned else PLAIN_STOP_STRINGS


def default_system(chat_tuned: bool) -> str | None:
    """The system prompt of the default persona: none for chat models (their own default),
    the transcript frame for base models.

    Example:
        >>> default_system(True) is None, default_system(False) == BASE_DEFAULT_FRAME
        (True, True)
    """
    return None if chat_tuned else BASE_DEFAULT_FRAME


def default_system_prompt(prompt: str, model_name: str, *, chat_tuned: bool = True) -> str | None:
    """The system prompt (opening paragraph, for base models) of one default prompt.

    Chat models get the catalogue prompt as it is (an empty prompt means no system
    message); base models get ``BASE_DEFAULT_FRAME`` first, then the prompt, if any, as a
    second paragraph.

    Example:
        >>> default_system_prompt("You are {model_name}.", "Gemma")
        'You are Gemma.'
        >>> default_system_prompt("", "Gemma") is None
        True
        >>> default_system_prompt("", "Gemma", chat_tuned=False) == BASE_DEFAULT_FRAME
        True
        >>> base = default_system_prompt("You are {model_name}.", "Gemma", chat_tuned=False)
        >>> base.split(chr(10) * 2)[1]
        'You are Gemma.'
    """
    filled = prompt.format(model_name=model_name) if prompt else ""
    if chat_tuned:
        return filled or None
    return BASE_DEFAULT_FRAME + ("\n\n" + filled if filled else "")


def prompt_messages(
    system: str | None,
    user: str,
    history: Sequence[Message | Mapping[str, str]] = (),
    reply: str | None = None,
) -> list[dict[str, str]]:
    """``[system?] + history + user (+ the assistant's reply)`` as ``{"role", "content"}`` dicts.

    ``history`` holds earlier turns (it may start with its own system message, in which case
    ``system`` must be ``None``).

    Example:
        >>> [m["role"] for m in prompt_messages("Be a pirate.", "Hi", reply="Arr")]
        ['system', 'user', 'assistant']
    """
    head = [{"role": "system", "content": system}] if system else []
    earlier = [
        {"role": m.role, "content": m.content}
        if isinstance(m, Message)
        else {"role": m["role"], "content": m["content"]}
        for m in history
    ]
    tail = [{"role": "assistant", "content": reply}] if reply is not None else []
    return [*head, *earlier, {"role": "user", "content": user}, *tail]


def format_prompt(
    lm: ChatReader,
    user: str,
    system: str | None = None,
    history: Sequence[Message | Mapping[str, str]] = (),
) -> FormattedConversation:
    """The prompt that asks ``lm`` for its reply to ``user`` (chat template or plain format).

    Example:
        >>> p = format_prompt(lm, "What do you value?", "You are a poet.")  # doctest: +SKIP
        >>> p.generation_start == len(p.input_ids)  # doctest: +SKIP
        True
    """
    return format_conversation(
        lm.tokenizer,
        prompt_messages(system, user, history),
        add_generation_prompt=True,
        use_chat_template=lm.chat_tuned,
    )


def format_exchange(
    lm: ChatReader, user: str, reply: str, system: str | None = None
) -> FormattedConversation:
    """One finished exchange (system, user, the assistant's reply), for teacher forcing."""
    return format_conversation(
        lm.tokenizer, prompt_messages(system, user, reply=reply), use_chat_template=lm.chat_tuned
    )
