"""Presets: deterministic subsets of the catalogue sized for a test, a laptop, or the paper.

``tiny``   a handful of roles, 1 prompt each, 2 questions: for tests.
``quick``  49 roles spanning every category, 2 prompts each, 12 questions (6 of them tasks,
           dealt across every category): the default,
           a run of a few minutes on a laptop CPU with the bundled model.
``traits`` persona vectors: every instruction pair and extraction question of the traits
           (choose them with ``--traits``; 5 pairs x 20 questions each), and only 3 roles,
           1 prompt, 4 questions (the axis of such a run is not meant to be used).
``full``   everything: every role with all its prompts and every question (the published
           scale: 5 prompts x 240 questions per role), every trait.

Subsets are chosen by rule, not by chance: roles are dealt round-robin across categories in
a fixed order (reference roles first, then by name), so a preset names the same roles on
every machine and every run.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from itertools import zip_longest
from typing import Literal, TypeVar

from personaspace.catalogue.types import Catalogue, Question, Role, Trait
from personaspace.errors import PersonaspaceError

T = TypeVar("T")
PresetName = Literal["tiny", "quick", "traits", "full"]
PRESETS: tuple[str, ...] = ("tiny", "quick", "traits", "full")

# Roles the published analysis singles out (either end of PC1); included whenever present.
REFERENCE_ROLES = (
    "therapist",
    "consultant",
    "reviewer",
    "evaluator",
    "coach",
    "ghost",
    "leviathan",
    "bard",
)
KEY_TRAITS = (
    "evil",
    "sycophantic",
    "hallucinating",
    "optimistic",
    "impolite",
    "apathetic",
    "humorous",
    "extraverted",
)


@dataclass(frozen=True)
class PresetSpec:
    """How many of each thing a preset takes (``None`` = all), and how many kept replies a
    role needs (``min_count``, never more than the replies it gets)."""

    roles: int | None
    prompts_per_role: int | None
    questions: int | None
    default_prompts: int | None
    traits: int | None
    pairs_per_trait: int | None
    trait_questions: int | None
    min_count: int = 3


SPECS: dict[str, PresetSpec] = {
    "tiny": PresetSpec(4, 1, 2, 1, 2, 1, 2, min_count=1),
    "quick": PresetSpec(49, 2, 12, None, 8, 2, 4),
    "traits": PresetSpec(3, 1, 4, 1, 8, None, None, min_count=1),
    "full": PresetSpec(None, None, None, None, None, None, None),
}


def preset_spec(preset: str) -> PresetSpec:
    """The spec of a preset, or a one-line error naming the presets.

    Example:
        >>> preset_spec("tiny").min_count
        1
    """
    if preset not in SPECS:
        raise PersonaspaceError(
            f"unknown preset {preset!r}", fix=f"use one of {', '.join(PRESETS)}", param="preset"
        )
    return SPECS[preset]


@dataclass(frozen=True)
class Selection:
    """The concrete roles (with their chosen prompts), questions and traits of a preset."""

    preset: str
    roles: tuple[Role, ...]
    questions: tuple[Question, ...]
    default_prompts: tuple[str, ...]
    traits: tuple[Trait, ...]
    trait_questions: int | None


def _take(items: list[T], n: int | None) -> list[T]:
    return items if n is None else items[:n]


def _deal_roles(catalogue: Catalogue, n: int | None) -> list[Role]:
    by_category: dict[str, list[Role]] = {}
    for role in sorted(
        catalogue.roles.values(), key=lambda r: (r.name not in REFERENCE_ROLES, r.name)
    ):
        by_category.setdefault(role.category, []).append(role)
    dealt: list[Role] = []
    queues = [by_category[c] for c in sorted(by_category)]
    while any(queues) and (n is None or len(dealt) < n):
        for queue in queues:
            if queue and (n is None or len(dealt) < n):
                dealt.append(queue.pop(0))
    return sorted(dealt, key=lambda r: (r.category, r.name))


def deal_questions(questions: Collection[Question], n: int | None) -> list[Question]:
    """``n`` questions dealt round-robin across categories, task categories (``task_*``)
    taking turns with the others, each category in id order: any ``n`` gets an even mix of
    tasks and character questions, the same on every machine.

    Example:
        >>> qs = [Question(f"q{i}", c, "?") for i, c in enumerate(["a", "a", "task_x", "b"])]
        >>> [q.category for q in deal_questions(qs, 3)]
        ['a', 'task_x', 'b']
    """
    by_category: dict[str, list[Question]] = {}
    for question in sorted(questions, key=lambda q: q.id):
        by_category.setdefault(question.category, []).append(question)
    tasks = sorted(c for c in by_category if c.startswith("task_"))
    others = sorted(c for c in by_category if not c.startswith("task_"))
    order = [c for pair in zip_longest(others, tasks) for c in pair if c is not None]
    queues = [list(by_category[c]) for c in order]
    dealt: list[Question] = []
    while any(queues) and (n is None or len(dealt) < n):
        for queue in queues:
            if queue and (n is None or len(dealt) < n):
                dealt.append(queue.pop(0))
    return dealt


def _only(names: list[str] | None, known: Collection[str], what: str) -> set[str] | None:
    if names is None:
        return None
    unknown = [n for n in names if n not in known]
    if unknown:
        close = sorted(k for k in known if unknown[0][:4] in k)[:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise PersonaspaceError(
            f"unknown {what} {unknown[0]!r}{hint}",
            fix=f"list the {what}s with `personaspace catalogue --json`",
        )
    return set(names)


def select(
    catalogue: Catalogue,
    preset: str,
    *,
    roles: list[str] | None = None,
    traits: list[str] | None = None,
) -> Selection:
    """Choose a preset's subset of ``catalogue``; ``roles``/``traits`` restrict it to names.

    With ``roles`` given, those roles are taken whatever the preset's role count (the
    preset still sets prompts per role and questions); likewise ``traits``.

    Example:
        >>> from personaspace.catalogue import load_catalogue
        >>> sel = select(load_catalogue(), "tiny")
        >>> len(sel.roles), len(sel.roles[0].prompts), len(sel.questions)
        (4, 1, 2)
    """
    spec = preset_spec(preset)
    only_roles = _only(roles, catalogue.roles.keys(), "role")
    only_traits = _only(traits, catalogue.traits.keys(), "trait")
    if only_roles is not None:
        pool = replace(
            catalogue, roles={n: r for n, r in catalogue.roles.items() if n in only_roles}
        )
        chosen_roles = _deal_roles(pool, None)
    else:
        chosen_roles = _deal_roles(catalogue, spec.roles)
    chosen = [
        Role(
            r.name,
            r.category,
            r.description,
            tuple(_take(list(r.prompts), spec.prompts_per_role)),
            r.in_role,
        )
        for r in chosen_roles
    ]
    questions = deal_questions(catalogue.questions.values(), spec.questions)
    ordered_traits = sorted(
        catalogue.traits.values(),
        key=lambda t: (
            t.name not in KEY_TRAITS,
            KEY_TRAITS.index(t.name) if t.name in KEY_TRAITS else 0,
            t.name,
        ),
    )
    if only_traits is not None:
        ordered_traits = [t for t in ordered_traits if t.name in only_traits]
    elif spec.traits is not None:
        ordered_traits = ordered_traits[: spec.traits]
    chosen_traits = [
        Trait(
            t.name,
            t.group,
            t.description,
            tuple(_take(list(t.pairs), spec.pairs_per_trait)),
            t.extraction_questions,
            t.evaluation_questions,
            t.rubric,
        )
        for t in ordered_traits
    ]
    return Selection(
        preset=preset,
        roles=tuple(chosen),
        questions=tuple(questions),
        default_prompts=tuple(_take(list(catalogue.default_prompts), spec.default_prompts)),
        traits=tuple(chosen_traits),
        trait_questions=spec.trait_questions,
    )
