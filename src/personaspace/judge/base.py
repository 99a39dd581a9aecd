"""What a judge is: a scorer of (character, question, answer) triples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from personaspace.catalogue import Catalogue, Role, Trait
from personaspace.errors import PersonaspaceError


@dataclass(frozen=True)
class RoleItem:
    """An answer given under a role prompt, to be scored 0-3 for adherence."""

    role: Role
    question: str
    answer: str


@dataclass(frozen=True)
class TraitItem:
    """An answer given under a trait instruction, to be scored 0-100 for expression."""

    trait: Trait
    question: str
    answer: str


class Judge(Protocol):
    """Scores answers; ``None`` means the score could not be obtained (recorded as missing)."""

    name: str

    def check(self) -> None:
        """Fail fast (before any generation) if the judge cannot work."""

    def score_roles(self, items: list[RoleItem]) -> list[int | None]: ...

    def score_traits(self, items: list[TraitItem]) -> list[float | None]: ...


class NoJudge:
    """``--judge none``: keep every response (every role answer counts as fully in role)."""

    name = "none"

    def check(self) -> None:
        return None

    def score_roles(self, items: list[RoleItem]) -> list[int | None]:
        return [None] * len(items)

    def score_traits(self, items: list[TraitItem]) -> list[float | None]:
        return [None] * len(items)


def make_judge(
    kind: str,
    catalogue: Catalogue,
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    concurrency: int = 4,
    rate_per_s: float = 5.0,
) -> Judge:
    """Build the judge named ``kind`` (``local``, ``openai`` or ``none``).

    Example:
        >>> from personaspace.catalogue import load_catalogue
        >>> make_judge("none", load_catalogue()).name
        'none'
    """
    if kind == "none":
        return NoJudge()
    if kind == "local":
        from personaspace.judge.local import LocalJudge

        return LocalJudge()
    if kind == "openai":
        from personaspace.judge.openai import OpenAIJudge

        return OpenAIJudge(
            catalogue.rubrics,
            model=model,
            base_url=base_url,
            api_key=api_key,
            concurrency=concurrency,
            rate_per_s=rate_per_s,
        )
    raise PersonaspaceError(f"unknown judge {kind!r}", fix="use local, openai or none")
