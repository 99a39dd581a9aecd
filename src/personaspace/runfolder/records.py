"""What a run folder holds, as types: one reply's record, and the run's vectors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import torch


class _Reply(TypedDict):
    """The fields every record has (see ``ResponseRecord``)."""

    id: str
    shard: str
    kind: str  # "default" | "role" | "trait_pos" | "trait_neg"
    name: str
    prompt_index: int
    question_id: str
    system: str | None
    question: str
    response: str
    n_tokens: int
    finish_reason: str
    seed: int
    judge: str


class ResponseRecord(_Reply, total=False):
    """One reply of a run, as ``responses.jsonl`` holds it (and each shard's metadata):
    role replies carry the judge's ``score`` (0-3), trait replies its ``trait_score``."""

    score: int | None
    trait_score: float | None


@dataclass(frozen=True)
class RunVectors:
    """The vectors of a run, each ``[len(layers), hidden]``."""

    model_id: str
    layers: list[int]
    axis: torch.Tensor
    default: torch.Tensor | None
    roles: dict[str, torch.Tensor]
    traits: dict[str, torch.Tensor]
