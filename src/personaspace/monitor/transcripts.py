"""Read conversations to monitor: our transcript JSON, OpenAI-style lists, reference files.

Three shapes of JSON value are recognised, in a ``.json`` file (one value: a transcript or
a list of transcripts) or a ``.jsonl`` file (one value per line):

- **ours**: ``{"messages": [{"role", "content"}, ...], "domain"?, "model"?, ...}``;
- **OpenAI-style**: a bare list of ``{"role", "content"}`` messages (content may also be a
  list of ``{"type": "text", "text"}`` parts, which are joined);
- **the reference release's**: ``{"model", "turns", "conversation": [...],
  "steering_config"?, "domain"?, "persona"?, "topic"?, "auditor_model"?}``.

Every other key is kept in ``Transcript.meta``. A transcript needs at least one assistant
turn; roles are ``system`` (first only), ``user`` and ``assistant``, alternating.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from personaspace.conversation.messages import ROLES, Message, as_messages
from personaspace.errors import PersonaspaceError
from personaspace.fileformat import write_json

TranscriptFormat = Literal["personaspace", "openai", "reference"]
JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class Transcript:
    """One conversation to monitor.

    ``name`` labels it in tables and plots (the file stem, with ``:N`` for the N-th
    conversation of a file holding several); ``source`` is where it was read (the file, with
    ``:line`` for JSONL or ``[i]`` for a JSON list); ``file`` is the file alone; ``meta``
    holds the other fields (``persona``, ``steering_config``, ...).
    """

    messages: list[Message]
    name: str
    source: str
    format: TranscriptFormat
    domain: str | None = None
    model: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    file: str = ""

    @property
    def n_assistant_turns(self) -> int:
        return sum(m.role == "assistant" for m in self.messages)

    def to_json(self) -> dict[str, Any]:
        """This transcript in our format (what ``write_transcript`` writes).

        Example:
            >>> t = parse_transcript([{"role": "user", "content": "Hi"},
            ...                       {"role": "assistant", "content": "Hello"}], "chat.json")
            >>> t.to_json()["messages"][1]
            {'role': 'assistant', 'content': 'Hello'}
        """
        data: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in self.messages]
        }
        if self.domain is not None:
            data["domain"] = self.domain
        if self.model is not None:
            data["model"] = self.model
        return {**data, **{k: v for k, v in self.meta.items() if k not in data}}


def _text(content: object) -> object:
    """OpenAI content parts ``[{"type": "text", "text": ...}]`` joined into one string."""
    if isinstance(content, list) and all(
        isinstance(p, Mapping) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    ):
        return "".join(str(p["text"]) for p in content)
    return content


def _messages(raw: object, source: str) -> list[Message]:
    if not isinstance(raw, list):
        raise PersonaspaceError(
            f"{source}: the messages are a {type(raw).__name__}, not a list",
            fix='give "messages" as a list of {"role", "content"} objects',
        )
    items = []
    for index, item in enumerate(raw):
        if isinstance(item, Mapping) and "role" in item and item["role"] not in ROLES:
            raise PersonaspaceError(
                f"{source}: message {index} has unknown role {item['role']!r}",
                fix="monitoring reads system, user and assistant messages only",
            )
        if isinstance(item, Mapping) and "content" in item:
            item = {**item, "content": _text(item["content"])}
        items.append(item)
    try:
        messages = as_messages(items)
    except PersonaspaceError as err:
        raise err.within(source) from err
    if not any(m.role == "assistant" for m in messages):
        raise PersonaspaceError(
            f"{source} has no assistant turns",
            fix="monitoring projects assistant replies; give a conversation with replies",
        )
    return messages


def _optional_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return None if value is None else str(value)


def parse_transcript(
    value: object, source: str, name: str | None = None, file: str | None = None
) -> Transcript:
    """One transcript from a parsed JSON value (any of the three formats).

    Example:
        >>> t = parse_transcript({"model": "m", "turns": 1, "domain": "coding",
        ...     "conversation": [{"role": "user", "content": "Hi"},
        ...                      {"role": "assistant", "content": "Hello"}]}, "x.json")
        >>> t.format, t.domain, t.n_assistant_turns
        ('reference', 'coding', 1)
    """
    label = name if name is not None else Path(source).stem
    file = file if file is not None else source
    if isinstance(value, list):
        return Transcript(_messages(value, source), label, source, "openai", file=file)
    if isinstance(value, Mapping):
        kind: TranscriptFormat
        if "messages" in value:
            kind, key = "personaspace", "messages"
        elif "conversation" in value:
            kind, key = "reference", "conversation"
        else:
            raise PersonaspaceError(
                f"{source} is an object with neither 'messages' nor 'conversation'",
                fix='give {"messages": [...]}, a list of messages, or a reference transcript',
            )
        meta = {k: v for k, v in value.items() if k not in {key, "domain", "model"}}
        return Transcript(
            _messages(value[key], source),
            label,
            source,
            kind,
            domain=_optional_str(value, "domain"),
            model=_optional_str(value, "model"),
            meta=meta,
            file=file,
        )
    raise PersonaspaceError(
        f"{source} holds a JSON {type(value).__name__}, not a conversation",
        fix="give a list of messages or an object with 'messages' or 'conversation'",
    )


def _is_message_list(value: list[Any]) -> bool:
    return bool(value) and all(isinstance(v, Mapping) and "role" in v for v in value)


def _from_value(value: object, path: Path) -> list[Transcript]:
    if isinstance(value, list) and value and not _is_message_list(value):
        many = len(value) > 1
        return [
            parse_transcript(
                v, f"{path}[{i}]", f"{path.stem}:{i + 1}" if many else path.stem, str(path)
            )
            for i, v in enumerate(value)
        ]
    return [parse_transcript(value, str(path), path.stem, str(path))]


def _read_jsonl(path: Path, text: str) -> list[Transcript]:
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    result = []
    for n, line in lines:
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise PersonaspaceError(
                f"{path} line {n} is not valid JSON ({err.msg} at column {err.colno})",
                fix="write one JSON conversation per line",
            ) from err
        label = f"{path.stem}:{n}" if len(lines) > 1 else path.stem
        result.append(parse_transcript(value, f"{path}:{n}", label, str(path)))
    return result


def read_transcripts(path: str | Path) -> list[Transcript]:
    """All conversations in a ``.json`` or ``.jsonl`` file, checked.

    A ``.json`` file holding several JSON values, one per line, is read as JSONL.

    Example:
        >>> [t] = read_transcripts("chat.json")  # doctest: +SKIP
        >>> t.messages[1]  # doctest: +SKIP
        Message(role='assistant', content='Hello! How can I help?')
    """
    source = Path(path)
    if not source.is_file():
        raise PersonaspaceError(f"no such transcript file: {source}", fix="check the path")
    try:
        text = source.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise PersonaspaceError(f"{source} is not UTF-8 text", fix="save it as UTF-8") from err
    if not text.strip():
        raise PersonaspaceError(f"{source} is empty", fix="give a transcript with messages")
    if source.suffix.lower() in JSONL_SUFFIXES:
        return _read_jsonl(source, text)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data" and len([x for x in text.splitlines() if x.strip()]) > 1:
            return _read_jsonl(source, text)
        raise PersonaspaceError(
            f"{source} is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})",
            fix="fix the file (a .jsonl file holds one conversation per line)",
        ) from err
    if value == [] or value == {}:
        raise PersonaspaceError(f"{source} is empty", fix="give a transcript with messages")
    return _from_value(value, source)


def write_transcript(path: str | Path, transcripts: Sequence[Transcript]) -> Path:
    """Write transcripts in our format, atomically: one object, or a list for several.

    Example:
        >>> import tempfile, pathlib
        >>> t = parse_transcript([{"role": "user", "content": "Hi"},
        ...                       {"role": "assistant", "content": "Hello"}], "x")
        >>> p = write_transcript(pathlib.Path(tempfile.mkdtemp()) / "t.json", [t])
        >>> read_transcripts(p)[0].messages == t.messages
        True
    """
    if not transcripts:
        raise PersonaspaceError("there is no transcript to write", fix="give at least one")
    target = Path(path)
    data = [t.to_json() for t in transcripts]
    write_json(target, data[0] if len(data) == 1 else data)
    return target
