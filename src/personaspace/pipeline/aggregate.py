"""From scored responses to vectors: role, default and trait vectors, and the axis.

All functions take per-response vectors ``[n, layers, hidden]`` with their records and
return per-layer vectors; no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from personaspace.runfolder import ResponseRecord, RunFolder


@dataclass
class Aggregate:
    """The vectors of a run, each ``[layers, hidden]``, plus what was kept and dropped."""

    default_vector: torch.Tensor
    role_vectors: dict[str, torch.Tensor]
    trait_vectors: dict[str, torch.Tensor]
    axis: torch.Tensor
    role_counts: dict[str, int] = field(default_factory=dict)
    dropped_roles: dict[str, int] = field(default_factory=dict)
    trait_pair_counts: dict[str, int] = field(default_factory=dict)
    dropped_traits: dict[str, int] = field(default_factory=dict)


def assistant_axis(default_vector: torch.Tensor, role_vectors: list[torch.Tensor]) -> torch.Tensor:
    """Default vector minus the mean of the role vectors, per layer (not normalised).

    Example:
        >>> assistant_axis(torch.ones(2, 3), [torch.zeros(2, 3), 2 * torch.ones(2, 3)]).sum()
        tensor(0.)
    """
    return default_vector - torch.stack(role_vectors).mean(0)


def aggregate(
    records: Sequence[ResponseRecord],
    vectors: torch.Tensor,
    *,
    score_threshold: int,
    min_count: int,
    trait_threshold: float,
) -> Aggregate:
    """Role vector = mean of responses scoring >= threshold (unscored ones count when the
    judge is ``none``); roles with fewer than ``min_count`` kept are dropped. Default vector
    = mean of all default responses. Trait vector = mean(positive) - mean(negative) over
    pairs whose positive answer scores >= ``trait_threshold`` and negative below it."""
    vectors = vectors.float()
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        # An empty reply has no content tokens, hence no activation mean: it never counts.
        if r.get("n_tokens", 1) > 0:
            by_kind[r["kind"]].append(i)
    if not by_kind["default"]:
        raise ValueError("no default responses")
    default_vector = vectors[by_kind["default"]].mean(0)

    kept: dict[str, list[int]] = defaultdict(list)
    totals: dict[str, int] = defaultdict(int)
    for r in records:
        if r["kind"] == "role":
            totals[r["name"]] += 0
    for i in by_kind["role"]:
        r = records[i]
        totals[r["name"]] += 1
        score = r.get("score")
        if r.get("judge") == "none" or (score is not None and score >= score_threshold):
            kept[r["name"]].append(i)
    role_vectors, role_counts, dropped = {}, {}, {}
    for name in sorted(totals):
        if len(kept[name]) >= min_count:
            role_vectors[name] = vectors[kept[name]].mean(0)
            role_counts[name] = len(kept[name])
        else:
            dropped[name] = len(kept[name])

    pos = {
        (
            records[i]["name"],
            records[i]["prompt_index"],
            records[i]["question_id"].split("/")[-1],
        ): i
        for i in by_kind["trait_pos"]
    }
    neg = {
        (
            records[i]["name"],
            records[i]["prompt_index"],
            records[i]["question_id"].split("/")[-1],
        ): i
        for i in by_kind["trait_neg"]
    }
    pairs: dict[str, list[tuple[int, int]]] = defaultdict(list)
    trait_names = sorted({r["name"] for r in records if r["kind"] == "trait_pos"})
    for key, i in pos.items():
        j = neg.get(key)
        if j is None:
            continue
        sp, sn = records[i].get("trait_score"), records[j].get("trait_score")
        unjudged = records[i].get("judge") == "none"
        if unjudged or (sp is not None and sn is not None and sp >= trait_threshold > sn):
            pairs[key[0]].append((i, j))
    trait_vectors, pair_counts, dropped_traits = {}, {}, {}
    for name in trait_names:
        if pairs[name]:
            p_idx, n_idx = zip(*pairs[name])
            trait_vectors[name] = vectors[list(p_idx)].mean(0) - vectors[list(n_idx)].mean(0)
            pair_counts[name] = len(pairs[name])
        else:
            dropped_traits[name] = 0
    if not role_vectors:
        axis = torch.full_like(default_vector, torch.nan)
    else:
        axis = assistant_axis(default_vector, list(role_vectors.values()))
    return Aggregate(
        default_vector,
        role_vectors,
        trait_vectors,
        axis,
        role_counts,
        dropped,
        pair_counts,
        dropped_traits,
    )


def save_aggregate(
    folder: RunFolder,
    agg: Aggregate,
    records: Sequence[ResponseRecord],
    *,
    model_id: str,
    layers: Sequence[int],
    hidden_size: int,
    n_layers: int,
    unit: str = "raw residual stream (post-block)",
    axis_layer: int | None = None,
) -> None:
    """Write ``agg``'s role, default and trait vectors (and, at ``axis_layer``, its axis) to
    ``folder``, with the vector metadata beside them.

    Example:
        >>> save_aggregate(RunFolder("runs/x"), agg, records, model_id="m", layers=[0, 1],
        ...                hidden_size=64, n_layers=2, axis_layer=1)  # doctest: +SKIP
    """
    meta: dict[str, object] = {
        "model_id": model_id,
        "layers": list(layers),
        "hidden_size": hidden_size,
        "n_layers": n_layers,
        "reduction": "response_mean",
        "unit": unit,
    }
    folder.save_vectors(
        meta,
        roles=agg.role_vectors,
        role_counts=agg.role_counts,
        default=agg.default_vector,
        default_count=sum(r["kind"] == "default" for r in records),
        traits=agg.trait_vectors,
        trait_counts=agg.trait_pair_counts,
    )
    if axis_layer is not None:
        folder.save_axis(agg.axis, meta, axis_layer)
