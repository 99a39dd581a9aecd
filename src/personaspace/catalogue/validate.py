"""Turn raw catalogue JSON into typed entries, failing with file, entry and field.

Every problem becomes one ``PersonaspaceError`` line such as::

    roles/mine.json: entry 3 ('pirate'): field 'prompts': needs at least 5 items, has 2
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Any

from personaspace.catalogue.types import (
    CapabilityItem,
    ModulationPrompt,
    Question,
    Role,
    Rubric,
    Scenario,
    Trait,
    TraitPair,
)
from personaspace.errors import PersonaspaceError

NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DOCS = "see docs/catalogue.md for the format"
RUBRIC_FIELDS = {
    "role_adherence": {"role", "role_description", "in_role", "question", "answer"},
    "trait_expression": {"trait", "trait_description", "rubric", "question", "answer"},
    "coherence": {"question", "answer"},
}


class Where:
    """Where in the catalogue a value came from, for error messages."""

    def __init__(self, file: str, index: int | None = None, name: str | None = None) -> None:
        self.file, self.index, self.name = file, index, name

    def fail(self, field: str | None, problem: str) -> PersonaspaceError:
        place = self.file
        if self.index is not None:
            place += f": entry {self.index}" + (f" ({self.name!r})" if self.name else "")
        if field is not None:
            place += f": field '{field}'"
        return PersonaspaceError(f"{place}: {problem}", fix=DOCS)

    def text(self, raw: dict[str, Any], field: str, *, allow_empty: bool = False) -> str:
        if field not in raw:
            raise self.fail(field, "is missing")
        value = raw[field]
        if not isinstance(value, str):
            raise self.fail(field, f"must be text, not {type(value).__name__}")
        if not allow_empty and not value.strip():
            raise self.fail(field, "is empty")
        return value.strip()

    def texts(self, raw: dict[str, Any], field: str, minimum: int) -> tuple[str, ...]:
        value = raw.get(field)
        if value is None:
            raise self.fail(field, "is missing")
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(field, "must be a list of texts")
        items = tuple(v.strip() for v in value)
        if len(items) < minimum:
            raise self.fail(field, f"needs at least {minimum} items, has {len(items)}")
        if any(not v for v in items):
            raise self.fail(field, f"item {[bool(v) for v in items].index(False)} is empty")
        duplicates = sorted({v for v in items if items.count(v) > 1})
        if duplicates:
            raise self.fail(field, f"repeats {duplicates[0][:60]!r}")
        return items

    def name_field(self, raw: dict[str, Any], field: str, pattern: re.Pattern[str]) -> str:
        value = self.text(raw, field)
        if not pattern.match(value):
            raise self.fail(field, f"{value!r} must be lower_snake_case letters, digits, _")
        return value

    def only(self, raw: dict[str, Any], allowed: set[str]) -> None:
        extra = sorted(set(raw) - allowed)
        if extra:
            raise self.fail(extra[0], f"is not a known field (known: {', '.join(sorted(allowed))})")


def placeholders(template: str) -> set[str]:
    """The ``{names}`` a format string expects.

    Example:
        >>> sorted(placeholders("Hi {name}, {{literal}} {x}"))
        ['name', 'x']
    """
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


def _entries(data: Any, file: str) -> list[dict[str, Any]]:
    if not isinstance(data, list):
        raise Where(file).fail(None, "must hold a JSON list of entries")
    for index, raw in enumerate(data):
        if not isinstance(raw, dict):
            raise Where(file, index).fail(None, "must be a JSON object")
    return data


def _entry_where(file: str, index: int, raw: dict[str, Any], key: str) -> Where:
    name = raw.get(key)
    return Where(file, index, name if isinstance(name, str) else None)


def parse_role(raw: dict[str, Any], w: Where) -> Role:
    w.only(raw, {"name", "category", "description", "prompts", "in_role"})
    prompts = w.texts(raw, "prompts", 5)
    for i, prompt in enumerate(prompts):
        if placeholders(prompt):
            raise w.fail("prompts", f"item {i} has a placeholder {sorted(placeholders(prompt))}")
    return Role(
        name=w.name_field(raw, "name", NAME),
        category=w.name_field(raw, "category", NAME),
        description=w.text(raw, "description"),
        prompts=prompts,
        in_role=w.text(raw, "in_role"),
    )


def parse_trait(raw: dict[str, Any], w: Where) -> Trait:
    w.only(
        raw,
        {
            "name",
            "group",
            "description",
            "pairs",
            "extraction_questions",
            "evaluation_questions",
            "rubric",
        },
    )
    pairs_raw = raw.get("pairs")
    if not isinstance(pairs_raw, list) or len(pairs_raw) < 5:
        raise w.fail("pairs", "needs a list of at least 5 {pos, neg} objects")
    pairs = []
    for i, pair in enumerate(pairs_raw):
        if not isinstance(pair, dict) or set(pair) != {"pos", "neg"}:
            raise w.fail("pairs", f"item {i} must be an object with exactly 'pos' and 'neg'")
        if not all(isinstance(pair[k], str) and pair[k].strip() for k in ("pos", "neg")):
            raise w.fail("pairs", f"item {i} needs non-empty 'pos' and 'neg' texts")
        pairs.append(TraitPair(pair["pos"].strip(), pair["neg"].strip()))
    extraction = w.texts(raw, "extraction_questions", 20)
    evaluation = w.texts(raw, "evaluation_questions", 20)
    shared = sorted(set(extraction) & set(evaluation))
    if shared:
        raise w.fail("evaluation_questions", f"repeats an extraction question: {shared[0][:60]!r}")
    return Trait(
        name=w.name_field(raw, "name", NAME),
        group=w.name_field(raw, "group", NAME),
        description=w.text(raw, "description"),
        pairs=tuple(pairs),
        extraction_questions=extraction,
        evaluation_questions=evaluation,
        rubric=w.text(raw, "rubric"),
    )


def parse_question(raw: dict[str, Any], w: Where) -> Question:
    w.only(raw, {"id", "category", "text"})
    return Question(
        id=w.name_field(raw, "id", ID),
        category=w.name_field(raw, "category", NAME),
        text=w.text(raw, "text"),
    )


def parse_scenario(raw: dict[str, Any], w: Where) -> Scenario:
    w.only(raw, {"id", "domain", "title", "user_turns"})
    return Scenario(
        id=w.name_field(raw, "id", ID),
        domain=w.name_field(raw, "domain", NAME),
        title=w.text(raw, "title"),
        user_turns=w.texts(raw, "user_turns", 8),
    )


def parse_modulation(raw: dict[str, Any], w: Where) -> ModulationPrompt:
    w.only(raw, {"id", "persona", "tactic", "text"})
    return ModulationPrompt(
        id=w.name_field(raw, "id", ID),
        persona=w.text(raw, "persona"),
        tactic=w.name_field(raw, "tactic", NAME),
        text=w.text(raw, "text"),
    )


def parse_capability(raw: dict[str, Any], w: Where) -> CapabilityItem:
    w.only(raw, {"id", "topic", "kind", "question", "choices", "answer"})
    kind = w.text(raw, "kind")
    answer = w.text(raw, "answer")
    choices: tuple[str, ...] = ()
    if kind == "mc":
        choices = w.texts(raw, "choices", 2)
        letters = "ABCDEFGH"[: len(choices)]
        if len(answer) != 1 or answer not in letters:
            raise w.fail("answer", f"must be one of the choice letters {', '.join(letters)}")
    elif kind == "exact":
        if "choices" in raw:
            raise w.fail("choices", "only multiple-choice ('mc') items have choices")
    else:
        raise w.fail("kind", f"{kind!r} must be 'mc' or 'exact'")
    return CapabilityItem(
        id=w.name_field(raw, "id", ID),
        topic=w.name_field(raw, "topic", NAME),
        kind="mc" if kind == "mc" else "exact",
        question=w.text(raw, "question"),
        answer=answer,
        choices=choices,
    )


def parse_list(
    data: Any, file: str, key: str, parse: Callable[[dict[str, Any], Where], Any]
) -> list[Any]:
    """Parse a JSON list of entries, each checked by ``parse`` with its position."""
    return [
        parse(raw, _entry_where(file, i, raw, key)) for i, raw in enumerate(_entries(data, file))
    ]


def parse_default(data: Any, file: str) -> tuple[str, ...]:
    w = Where(file)
    if not isinstance(data, dict):
        raise w.fail(None, "must be a JSON object with 'prompts'")
    prompts = data.get("prompts")
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise w.fail("prompts", "must be a non-empty list of texts ('' means no system prompt)")
    for i, prompt in enumerate(prompts):
        unknown = placeholders(prompt) - {"model_name"}
        if unknown:
            raise w.fail("prompts", f"item {i} has unknown placeholder {sorted(unknown)[0]!r}")
    return tuple(p.strip() for p in prompts)


def parse_rubrics(data: Any, file: str) -> dict[str, Rubric]:
    if not isinstance(data, dict):
        raise Where(file).fail(None, "must be a JSON object of rubrics")
    rubrics = {}
    for name, raw in data.items():
        w = Where(file, None, None)
        if not isinstance(raw, dict):
            raise w.fail(name, "must be an object with 'template' and 'scale'")
        template = w.text(raw, "template")
        expected = RUBRIC_FIELDS.get(name)
        if expected is not None and placeholders(template) != expected:
            raise w.fail(
                f"{name}.template",
                f"must use exactly the placeholders {sorted(expected)}, "
                f"uses {sorted(placeholders(template))}",
            )
        scale = raw.get("scale")
        if not (
            isinstance(scale, list) and len(scale) == 2 and all(isinstance(s, int) for s in scale)
        ):
            raise w.fail(f"{name}.scale", "must be [low, high] integers")
        rubrics[name] = Rubric(name, template, (scale[0], scale[1]), dict(raw.get("levels", {})))
    return rubrics
