"""Format a conversation into token ids with the exact token span of each message's content.

Spans come from the rendered text, not from guessing template lengths: the conversation is
rendered once with a unique marker in place of each content, which tells where the
template puts every content; the real text is those template pieces with the contents put
back, checked against a direct rendering. Tokenizing with character offsets then maps each
content's characters to tokens. A token counts as content when its characters overlap the
content's; template and special tokens never do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from personaspace.conversation.messages import Message, as_messages
from personaspace.conversation.plain import render_plain
from personaspace.errors import PersonaspaceError

SYSTEM_FOLD_SEPARATOR = "\n\n"
_MARKER = "\ue000{}\ue001"
_MARKER_RE = re.compile("\ue000(\\d+)\ue001")


@dataclass(frozen=True)
class TokenSpan:
    """The content tokens ``[start, end)`` of message ``message_index``."""

    message_index: int
    role: str
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class FormattedConversation:
    """Token ids of a rendered conversation and the content span of each message.

    ``generation_start`` is the number of prompt tokens when the conversation ends with a
    generation prompt (the reply's tokens start there), else ``None``.
    """

    text: str
    input_ids: list[int]
    spans: list[TokenSpan]
    format: str  # "chat_template" | "chat_template+folded_system" | "plain"
    generation_start: int | None = None
    messages: list[Message] = field(default_factory=list)

    def spans_of(self, role: str) -> list[TokenSpan]:
        """The spans of all messages with ``role``, in order."""
        return [s for s in self.spans if s.role == role]


def _render_template(tokenizer: Any, messages: list[dict[str, str]], gen: bool, **kw: Any) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen, **kw)
    assert isinstance(text, str)
    return text


def _fold_system(messages: list[Message]) -> list[dict[str, str]]:
    """Put the system prompt at the head of the first user turn (for templates without one)."""
    first_user = messages[1].content if len(messages) > 1 else ""
    folded = [{"role": "user", "content": messages[0].content + SYSTEM_FOLD_SEPARATOR + first_user}]
    return folded + [{"role": m.role, "content": m.content} for m in messages[2:]]


def _chat_char_spans(
    tokenizer: Any, messages: list[Message], gen: bool, template_kwargs: dict[str, Any]
) -> tuple[str, list[tuple[int, int]], str]:
    marked = [Message(m.role, _MARKER.format(i)) for i, m in enumerate(messages)]
    plain = [{"role": m.role, "content": m.content} for m in marked]
    mode = "chat_template"
    try:
        rendered = _render_template(tokenizer, plain, gen, **template_kwargs)
    except Exception as err:  # jinja raises TemplateError (or others) for unsupported roles
        if messages[0].role != "system":
            raise PersonaspaceError(
                f"the chat template rejected the conversation ({str(err)[:120]})",
                fix="check the roles alternate user/assistant",
            ) from err
        mode = "chat_template+folded_system"
        rendered = _render_template(tokenizer, _fold_system(marked), gen, **template_kwargs)
    pieces = _MARKER_RE.split(rendered)
    # pieces = [template, index, template, index, ..., template]
    order = [int(i) for i in pieces[1::2]]
    if order != list(range(len(messages))):
        raise PersonaspaceError(
            "the chat template drops, repeats or reorders message contents",
            fix="exact spans need a template that writes each content once; use the plain "
            "transcript format",
        )
    text, spans = "", []
    for template_piece, message in zip(pieces[0::2], messages):
        text += template_piece
        spans.append((len(text), len(text) + len(message.content)))
        text += message.content
    text += pieces[-1]
    real = [{"role": m.role, "content": m.content} for m in messages]
    direct = _render_template(
        tokenizer,
        _fold_system(messages) if mode.endswith("folded_system") else real,
        gen,
        **template_kwargs,
    )
    if direct != text:
        raise PersonaspaceError(
            "the chat template changes message contents as it renders them",
            fix="exact spans are unavailable with this template; use the plain transcript format",
        )
    return text, spans, mode


def _token_spans(offsets: list[tuple[int, int]], char_spans: list[tuple[int, int]]) -> list[range]:
    result = []
    for lo, hi in char_spans:
        inside = [i for i, (s, e) in enumerate(offsets) if e > s and s < hi and e > lo]
        if inside:
            result.append(range(inside[0], inside[-1] + 1))
        else:  # empty content: an empty span at the first token after where it would be
            after = next((i for i, (s, _) in enumerate(offsets) if s >= hi), len(offsets))
            result.append(range(after, after))
    return result


def format_conversation(
    tokenizer: Any,
    conversation: Iterable[Message | Mapping[str, object]],
    *,
    add_generation_prompt: bool = False,
    use_chat_template: bool | None = None,
    template_kwargs: dict[str, Any] | None = None,
) -> FormattedConversation:
    """Render and tokenize a conversation, returning exact content spans per message.

    Args:
        tokenizer: a fast Hugging Face tokenizer (character offsets are needed).
        conversation: messages (``Message`` or ``{"role", "content"}`` dicts).
        add_generation_prompt: end with the assistant header, ready to generate a reply.
        use_chat_template: ``None`` uses the tokenizer's template if it has one, else the
            plain transcript format; ``True``/``False`` force one.
        template_kwargs: extra template variables (e.g. ``{"enable_thinking": False}``).

    Example:
        >>> from personaspace.models import load_model
        >>> tok = load_model("smollm2-135m-instruct").tokenizer  # doctest: +SKIP
        >>> chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
        >>> conv = format_conversation(tok, chat)  # doctest: +SKIP
        >>> s = conv.spans_of("assistant")[0]  # doctest: +SKIP
        >>> tok.decode(conv.input_ids[s.start:s.end])  # doctest: +SKIP
        'Hello!'
    """
    messages = as_messages(conversation)
    if add_generation_prompt and messages[-1].role != "user":
        raise PersonaspaceError(
            "a generation prompt needs the conversation to end with a user message",
            fix="drop the trailing assistant message or set add_generation_prompt=False",
        )
    has_template = getattr(tokenizer, "chat_template", None) is not None
    chat = has_template if use_chat_template is None else use_chat_template
    if chat and not has_template:
        raise PersonaspaceError(
            "this tokenizer has no chat template", fix="use the plain transcript format"
        )
    if chat:
        text, char_spans, mode = _chat_char_spans(
            tokenizer, messages, add_generation_prompt, dict(template_kwargs or {})
        )
    else:
        text, char_spans = render_plain(
            messages, add_generation_prompt=add_generation_prompt, bos=tokenizer.bos_token or ""
        )
        mode = "plain"
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(encoded["input_ids"])
    token_ranges = _token_spans([tuple(o) for o in encoded["offset_mapping"]], char_spans)
    spans = [
        TokenSpan(i, m.role, r.start, r.stop)
        for i, (m, r) in enumerate(zip(messages, token_ranges))
    ]
    return FormattedConversation(
        text=text,
        input_ids=ids,
        spans=spans,
        format=mode,
        generation_start=len(ids) if add_generation_prompt else None,
        messages=messages,
    )
