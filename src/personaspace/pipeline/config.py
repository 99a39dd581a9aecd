"""Settings of an axis run; the ones that change outputs are pinned to the run folder."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from personaspace.capture.sampling import SamplingConfig
from personaspace.catalogue.presets import preset_spec
from personaspace.errors import PersonaspaceError
from personaspace.models.device import check_batch_size

# Settings that do not change what is computed, so a resumed run may differ in them.
# (device and dtype do change results: the resolved ones are checked from config.json's
# header when a run resumes, so "auto" on two machines is compared by what it chose.)
NON_RESULT_FIELDS = frozenset(
    {"batch_size", "judge_concurrency", "judge_rate_per_s", "device", "dtype"}
)
# Settings applied after generation and judging: changing them against a finished or
# partial run keeps every response and re-aggregates (no --force needed).
ANALYSIS_FIELDS = frozenset(
    {
        "score_threshold",
        "min_count",
        "trait_threshold",
        "analysis_layer",
        "normalize_rows",
        "null",
    }
)
NULLS = ("random-init", "none")
# The decoding of every reply: temperature 0.7 and top-p 0.9 as published, 64 new tokens.
AXIS_SAMPLING = SamplingConfig(max_new_tokens=64, temperature=0.7, top_p=0.9, seed=0)
SAMPLING_FIELDS = ("max_new_tokens", "temperature", "top_p", "seed")


@dataclass(frozen=True)
class AxisConfig:
    """Everything that defines an axis run.

    ``min_count`` left as ``None`` takes the preset's (a role needs that many kept replies;
    no preset asks for more replies per role than it generates).

    Example:
        >>> AxisConfig().preset, AxisConfig().sampling.temperature, AxisConfig().min_count
        ('quick', 0.7, 3)
        >>> AxisConfig(preset="tiny").min_count
        1
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
    min_count: int | None = None
    trait_threshold: float = 50.0
    sampling: SamplingConfig = field(default=AXIS_SAMPLING)
    batch_size: int | None = None
    analysis_layer: int | str | None = None  # None: the middle layer; "auto": best held-out AUC
    normalize_rows: bool = False
    role_card: bool = True  # the character card before each role prompt (work.character_card)
    device: str = "auto"
    dtype: str = "auto"
    null: str = "random-init"

    def __post_init__(self) -> None:
        if self.judge not in ("local", "openai", "none"):
            raise PersonaspaceError(
                f"unknown judge {self.judge!r}", fix="use local, openai or none", param="judge"
            )
        if self.score_threshold not in (2, 3):
            raise PersonaspaceError(
                f"score_threshold is {self.score_threshold}",
                fix="use 3 (fully in role) or 2",
                param="score_threshold",
            )
        if self.min_count is None:
            object.__setattr__(self, "min_count", preset_spec(self.preset).min_count)
        if self.kept_per_role < 1:
            raise PersonaspaceError(
                f"min_count is {self.min_count}", fix="use 1 or more", param="min_count"
            )
        check_batch_size(self.batch_size)
        if isinstance(self.analysis_layer, str) and self.analysis_layer != "auto":
            raise PersonaspaceError(
                f"analysis_layer is {self.analysis_layer!r}",
                fix="give a layer number, or auto",
                param="analysis_layer",
            )
        if self.null not in NULLS:
            raise PersonaspaceError(
                f"null is {self.null!r}", fix="use random-init or none", param="null"
            )

    @property
    def kept_per_role(self) -> int:
        """The replies a role needs scored at or above the threshold (``min_count``)."""
        assert self.min_count is not None  # set in __post_init__
        return self.min_count

    def to_json(self) -> dict[str, Any]:
        """The settings as ``config.json`` records them (decoding settings inline).

        Example:
            >>> list(AxisConfig().to_json())[13:18]
            ['trait_threshold', 'max_new_tokens', 'temperature', 'top_p', 'seed']
        """
        data: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "sampling":
                data.update({k: getattr(value, k) for k in SAMPLING_FIELDS})
            else:
                data[f.name] = list(value) if isinstance(value, tuple) else value
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AxisConfig:
        """Settings from ``config.json`` (or any flat mapping of them); unknown keys are ignored.

        Example:
            >>> AxisConfig.from_json({"max_new_tokens": 8, "roles": ["pirate"]}).sampling
            SamplingConfig(max_new_tokens=8, temperature=0.7, top_p=0.9, seed=0, stop_strings=())
        """
        known = {f.name for f in dataclasses.fields(cls)} - {"sampling"}
        values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        for key in ("roles", "traits"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        decoding = {k: data[k] for k in SAMPLING_FIELDS if k in data}
        return cls(**values, sampling=dataclasses.replace(AXIS_SAMPLING, **decoding))

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
