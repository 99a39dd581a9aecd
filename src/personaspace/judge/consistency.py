"""What a consistency judge is: does a line contradict what it must agree with?

Every consistency measure asks one question of a pair: does ``line`` (an assistant reply,
or its answer to a question about itself) contradict ``reference`` (the persona's
statement, one of the speaker's earlier lines, or the answer the persona should give)?
A judge answers with a number in ``[0, 1]``, the confidence that it does; the measures
count a contradiction at ``CONTRADICTS_AT`` or above. ``None`` means the judge could not
tell (an empty reply, an endpoint that failed), recorded as missing, never guessed.

Judges: ``local`` (identity claims and their negations, plus sentence embeddings;
``judge.consistency_local``), ``likelihood`` (a bundled model's p(yes) against p(no);
``judge.consistency_likelihood``) and ``openai`` (any OpenAI-compatible endpoint;
``judge.consistency_openai``). Their agreement with hand labels is in
docs/consistency.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from personaspace.errors import PersonaspaceError

if TYPE_CHECKING:
    from personaspace.models.loading import LoadedModel

CONTRADICTS_AT = 0.5
ConsistencyJudgeKind = Literal["local", "likelihood", "openai"]
CONSISTENCY_JUDGES: tuple[str, ...] = ("local", "likelihood", "openai")


@dataclass(frozen=True)
class ConsistencyItem:
    """Does ``line`` contradict ``reference``? ``context`` is what the line answered."""

    reference: str
    line: str
    context: str = ""


class ConsistencyJudge(Protocol):
    """Scores items: the confidence in ``[0, 1]`` that each line contradicts its reference."""

    @property
    def name(self) -> str: ...

    def check(self) -> None:
        """Fail fast (before any work) if the judge cannot work."""

    def contradictions(self, items: list[ConsistencyItem]) -> list[float | None]: ...


def contradicts(score: float | None) -> bool | None:
    """A judge's score as a verdict (``None`` stays ``None``).

    Example:
        >>> contradicts(0.9), contradicts(0.1), contradicts(None)
        (True, False, None)
    """
    return None if score is None else score >= CONTRADICTS_AT


def make_consistency_judge(
    kind: str,
    *,
    lm: LoadedModel | None = None,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    concurrency: int = 4,
    rate_per_s: float = 5.0,
) -> ConsistencyJudge:
    """Build the consistency judge named ``kind`` (``local``, ``likelihood`` or ``openai``).

    ``lm`` is the model the likelihood judge asks (``None``: the bundled
    SmolLM2-135M-Instruct); ``model``, ``base_url`` and ``api_key`` are the endpoint's.

    Example:
        >>> make_consistency_judge("local").name
        'local'
    """
    if kind == "local":
        from personaspace.judge.consistency_local import LocalConsistencyJudge

        return LocalConsistencyJudge()
    if kind == "likelihood":
        from personaspace.judge.consistency_likelihood import LikelihoodConsistencyJudge

        return LikelihoodConsistencyJudge(lm)
    if kind == "openai":
        from personaspace.judge.consistency_openai import OpenAIConsistencyJudge

        return OpenAIConsistencyJudge(
            model=model,
            base_url=base_url,
            api_key=api_key,
            concurrency=concurrency,
            rate_per_s=rate_per_s,
        )
    raise PersonaspaceError(
        f"unknown consistency judge {kind!r}",
        fix=f"use {', '.join(CONSISTENCY_JUDGES)}",
        param="judge",
    )
