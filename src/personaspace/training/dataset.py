"""Chat datasets for finetuning: JSONL files of ``{"messages": [...]}``, read with their line
numbers, written atomically, and tokenized with labels on the assistant's content only.

The labels come from the exact content spans of ``format_conversation``: a token is
trained on when it lies in an assistant message's content span (and, with
``end_of_turn=True``, the one template token that closes each assistant turn, so a model
learns to stop). Every other token (system, user, template, padding) has label ``-100``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from personaspace.capture.forward import context_tokens
from personaspace.conversation.format import FormattedConversation, format_conversation
from personaspace.conversation.messages import Message, as_messages
from personaspace.errors import PersonaspaceError
from personaspace.fileformat import atomic_write
from personaspace.models.loading import LoadedModel

IGNORE = -100
Overlong = Literal["refuse", "truncate", "drop"]
OVERLONG: tuple[str, ...] = ("refuse", "truncate", "drop")


@dataclass(frozen=True)
class ChatExample:
    """One conversation of a dataset and where it was read (``file:line``)."""

    messages: list[Message]
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The example as a dataset line (``meta`` keys beside ``messages``).

        Example:
            >>> ChatExample([Message("user", "Hi"), Message("assistant", "Hello")], "d:1",
            ...             {"score": 3}).to_json()
            {'messages': [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello'}], 'score': 3}
        """  # noqa: E501
        messages = [{"role": m.role, "content": m.content} for m in self.messages]
        return {"messages": messages, **self.meta}


def _example(value: Any, source: str) -> ChatExample:
    if not isinstance(value, Mapping) or not isinstance(value.get("messages"), list):
        raise PersonaspaceError(
            f"{source} is not an object with a 'messages' list",
            fix='write one {"messages": [{"role": ..., "content": ...}, ...]} per line',
        )
    try:
        messages = as_messages(value["messages"])
    except PersonaspaceError as err:
        raise err.within(source) from err
    if not any(m.role == "assistant" for m in messages):
        raise PersonaspaceError(
            f"{source} has no assistant turn, so nothing in it would be trained on",
            fix="end each example with the assistant reply to learn (or drop the line)",
        )
    meta = {k: v for k, v in value.items() if k != "messages"}
    return ChatExample(messages, source, meta)


def read_chat_dataset(path: str | Path) -> list[ChatExample]:
    """Every example of a JSONL chat dataset, checked line by line.

    Blank lines are skipped; a line that is not JSON, has no ``messages`` list, an unknown
    role, turns out of order or no assistant turn is refused, naming ``file:line``.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "d.jsonl")
        >>> _ = open(path, "w").write('{"messages": [{"role": "user", "content": "2+2?"}, '
        ...                           '{"role": "assistant", "content": "4"}]}\\n')
        >>> [m.content for m in read_chat_dataset(path)[0].messages]
        ['2+2?', '4']
    """
    file = Path(path)
    if not file.is_file():
        raise PersonaspaceError(f"no such dataset file: {file}", fix="check the path")
    examples = []
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            source = f"{file}:{number}"
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise PersonaspaceError(
                    f"{source} is not JSON ({err.msg} at column {err.colno})",
                    fix="write one JSON object per line",
                ) from err
            examples.append(_example(value, source))
    if not examples:
        raise PersonaspaceError(
            f"{file} has no examples", fix='write one {"messages": [...]} per line'
        )
    return examples


def write_chat_dataset(
    path: str | Path, examples: Iterable[ChatExample | Sequence[Message | Mapping[str, Any]]]
) -> Path:
    """Write examples as a JSONL chat dataset, atomically (no half-written file on failure).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "d.jsonl")
        >>> _ = write_chat_dataset(path, [[{"role": "user", "content": "Hi"},
        ...                                {"role": "assistant", "content": "Hello"}]])
        >>> len(read_chat_dataset(path))
        1
    """
    target = Path(path)
    with atomic_write(target) as handle:
        for item in examples:
            example = item if isinstance(item, ChatExample) else ChatExample(as_messages(item), "")
            handle.write(json.dumps(example.to_json(), ensure_ascii=False) + "\n")
    return target


@dataclass(frozen=True)
class TokenizedExample:
    """Token ids and labels (``-100`` where there is no loss) of one example."""

    input_ids: list[int]
    labels: list[int]
    source: str

    @property
    def n_trained(self) -> int:
        return sum(label != IGNORE for label in self.labels)


def loss_labels(conv: FormattedConversation, *, end_of_turn: bool = False) -> list[int]:
    """Labels for ``conv``: the token id on assistant content tokens, ``-100`` elsewhere.

    ``end_of_turn`` also trains the token right after each assistant content span (the
    template's end-of-turn marker), where the conversation continues past it.

    Example:
        >>> from personaspace.conversation.format import TokenSpan
        >>> conv = FormattedConversation("", [1, 2, 3, 4, 5], [TokenSpan(0, "user", 0, 1),
        ...     TokenSpan(1, "assistant", 2, 4)], "plain")
        >>> loss_labels(conv), loss_labels(conv, end_of_turn=True)
        ([-100, -100, 3, 4, -100], [-100, -100, 3, 4, 5])
    """
    labels = [IGNORE] * len(conv.input_ids)
    for span in conv.spans_of("assistant"):
        stop = span.end + 1 if end_of_turn and span.end < len(labels) else span.end
        labels[span.start : stop] = conv.input_ids[span.start : stop]
    return labels


def tokenize_examples(
    lm: LoadedModel,
    examples: Sequence[ChatExample],
    *,
    max_tokens: int | None = None,
    overlong: Overlong = "refuse",
    end_of_turn: bool = False,
    chat_template: bool | None = None,
) -> list[TokenizedExample]:
    """Tokenize ``examples`` with the model's format and assistant-only labels.

    ``max_tokens`` defaults to the model's context length. An example longer than that is
    refused (``overlong="refuse"``, naming its line), cut to ``max_tokens``
    (``"truncate"``) or left out (``"drop"``); one left with no trained token is refused.
    ``chat_template`` (default: the model's ``chat_tuned``) renders with the tokenizer's
    chat template rather than the plain transcript format.

    Example:
        >>> data = tokenize_examples(lm, read_chat_dataset("data.jsonl"))  # doctest: +SKIP
        >>> data[0].n_trained  # doctest: +SKIP
        42
    """
    if overlong not in OVERLONG:
        raise PersonaspaceError(
            f"unknown overlong policy '{overlong}'", fix="use refuse, truncate or drop"
        )
    limit = max_tokens if max_tokens is not None else context_tokens(lm)
    if limit is not None and limit < 2:
        raise PersonaspaceError(f"max_tokens is {limit}", fix="give at least 2", param="max_tokens")
    chat = lm.chat_tuned if chat_template is None else chat_template
    out = []
    for example in examples:
        try:
            conv = format_conversation(lm.tokenizer, example.messages, use_chat_template=chat)
        except PersonaspaceError as err:
            raise err.within(example.source) from err
        ids, labels = conv.input_ids, loss_labels(conv, end_of_turn=end_of_turn)
        if limit is not None and len(ids) > limit:
            if overlong == "drop":
                continue
            if overlong == "refuse":
                raise PersonaspaceError(
                    f"{example.source} has {len(ids)} tokens, more than the limit of {limit}",
                    fix="shorten it, raise --max-tokens, or pass --overlong truncate|drop",
                    param="max_tokens",
                )
            ids, labels = ids[:limit], labels[:limit]
        item = TokenizedExample(list(ids), labels, example.source)
        if item.n_trained == 0:
            raise PersonaspaceError(
                f"{example.source} has no assistant content token left to train on",
                fix="give it a non-empty assistant reply (or a larger --max-tokens)",
            )
        out.append(item)
    if not out:
        raise PersonaspaceError(
            "every example is longer than the limit", fix="raise --max-tokens or use truncate"
        )
    return out
