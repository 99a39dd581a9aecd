"""Settings of an axis run; the ones that change outputs are pinned to the run folder."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from personaspace.errors import PersonaspaceError

# Settings that do not change what is computed, so a resumed run may differ in them.
NON_RESULT_FIELDS = frozenset({"batch_size", "judge_concurrency", "judge_rate_per_s"})
# Settings applied after generation and judging: changing them against a finished or
# partial run keeps every response and re-aggregates (no --force needed).
ANALYSIS_FIELDS = frozenset(
    {"score_threshold", "min_count", "trait_threshold", "analysis_layer", "normalize_rows"}
)


@dataclass(frozen=True)
class AxisConfig:
    """Everything that defines an axis run.

    Example:
        >>> AxisConfig().preset, AxisConfig().temperature, AxisConfig().top_p
        ('quick', 0.7, 0.9)
    """

    model: str = "smollm2-135m-instruct"
    preset: str = "quick"
    catalogue: str | None = None
    catalogue_replace: bool = False
    roles: tuple[str, ...] | None = None
    traits: tuple[str, ...] | None = None
    judge: str = "local"
    judge_model: str | None = None
    judge_base_url: str | None = None
    judge_concurrency: int = 4
    judge_rate_per_s: float = 5.0
    score_threshold: int = 3
    min_count: int = 3
    trait_threshold: float = 50.0
    max_new_tokens: int = 64
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 0
    batch_size: int = 32
    analysis_layer: int | None = None
    normalize_rows: bool = False

    def __post_init__(self) -> None:
        if self.judge not in ("local", "openai", "none"):
            raise PersonaspaceError(
                f"unknown judge {self.judge!r}", fix="use --judge local, openai or none"
            )
        if self.score_threshold not in (2, 3):
            raise PersonaspaceError(
                f"score threshold {self.score_threshold}", fix="use 3 (fully in role) or 2"
            )
        if self.min_count < 1 or self.batch_size < 1:
            raise PersonaspaceError("min-count and batch-size must be >= 1", fix="use 1 or more")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AxisConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("roles", "traits"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)

    def differences(self, other: AxisConfig, *, include_analysis: bool = True) -> list[str]:
        """Names of result-changing settings that differ between two configs.

        Example:
            >>> AxisConfig(min_count=2).differences(AxisConfig())
            ['min_count']
            >>> AxisConfig(min_count=2).differences(AxisConfig(), include_analysis=False)
            []
        """
        skip = NON_RESULT_FIELDS if include_analysis else NON_RESULT_FIELDS | ANALYSIS_FIELDS
        mine, theirs = (
            json.loads(json.dumps(self.to_json())),
            json.loads(json.dumps(other.to_json())),
        )
        return sorted(k for k in mine if k not in skip and mine[k] != theirs[k])
