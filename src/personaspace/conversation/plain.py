"""The plain transcript format, for base models that have no chat template.

A pre-trained model cannot read a chat template, but it has read many transcripts. A
conversation is written as::

    {system prompt}

    User: {user message}

    Assistant: {assistant message}

    User: {next user message}

    Assistant:

The system prompt (a role prompt, or the default persona) is the opening paragraph; each
turn is a paragraph starting ``User: `` or ``Assistant: ``; a generation prompt ends with
``Assistant:`` and the model continues from there. Generation stops at the first
``\\nUser:`` (the model starting the next user turn), which is not part of the reply.
The tokenizer's BOS token, if it has one, comes first.
"""

from __future__ import annotations

from personaspace.conversation.messages import Message

USER_PREFIX = "User: "
ASSISTANT_PREFIX = "Assistant: "
TURN_SEPARATOR = "\n\n"
PLAIN_STOP_STRINGS: tuple[str, ...] = ("\nUser:",)


def render_plain(
    messages: list[Message], *, add_generation_prompt: bool, bos: str = ""
) -> tuple[str, list[tuple[int, int]]]:
    """Render ``messages`` as a plain transcript, with each content's character span.

    Example:
        >>> text, spans = render_plain(
        ...     [Message("user", "Hi"), Message("assistant", "Hello!")], add_generation_prompt=False
        ... )
        >>> text
        'User: Hi\\n\\nAssistant: Hello!'
        >>> [text[a:b] for a, b in spans]
        ['Hi', 'Hello!']
    """
    text = bos
    spans: list[tuple[int, int]] = []
    for index, message in enumerate(messages):
        if index > 0:
            text += TURN_SEPARATOR
        if message.role == "user":
            text += USER_PREFIX
        elif message.role == "assistant":
            text += ASSISTANT_PREFIX
        spans.append((len(text), len(text) + len(message.content)))
        text += message.content
    if add_generation_prompt:
        text += TURN_SEPARATOR + ASSISTANT_PREFIX.rstrip()
    return text, spans
