"""Prefill a batch of prompts, computing each shared prompt prefix once.

The axis pipeline asks every role prompt several questions, so many prompts of a batch
start with the same tokens (the system prompt and the template up to the question). Each
prompt is split at a point the caller gives (``prefix_lengths``: for chat prompts, where the
last user message begins), each distinct prefix is run once, its keys and values are
copied to every row that shares it, and the rest of each prompt is run on top.

Every row is laid out as it would be without sharing: left padding, then its tokens
contiguous to the end, so column distances equal position distances (which sliding-window
attention reads). The prefill's last block of ``width`` columns holds each row's last
``width`` tokens (the ends of some prefixes are recomputed there, which costs little), and
the cache holds the tokens before them, taken from the prefix pass.

A row's split depends on its own prompt alone, never on its neighbours in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from personaspace.capture.forward import left_pad, positions_of
from personaspace.capture.kv import GrowingCache, GrowingLayer

MIN_SHARED = 8  # shorter shared prefixes are not worth a separate pass


@dataclass(frozen=True)
class PrefillPlan:
    """How a batch is prefilled: which distinct prefixes run first, and what each row caches.

    ``prefixes[u]`` are the tokens of distinct prefix ``u``; row ``r`` caches the first
    ``cached[r]`` tokens of ``prefixes[row_prefix[r]]`` and feeds the rest of its prompt in
    the last ``width`` columns.
    """

    prefixes: list[list[int]]
    row_prefix: list[int]
    cached: list[int]
    width: int

    @property
    def shared(self) -> bool:
        return bool(self.prefixes)


def plan_prefill(prompts: Sequence[list[int]], prefix_lengths: Sequence[int]) -> PrefillPlan:
    """Group the rows by prefix (each prompt split at its own prefix length).

    Example:
        >>> plan = plan_prefill([[1] * 9 + [5], [1] * 9 + [6, 7], [2, 3]], [9, 9, 0])
        >>> plan.prefixes, plan.row_prefix, plan.width, plan.cached
        ([[1, 1, 1, 1, 1, 1, 1, 1, 1]], [0, 0, -1], 2, [8, 9, 0])
    """
    rows = [list(p) for p in prompts]
    splits = [k if MIN_SHARED <= k < len(p) else 0 for p, k in zip(rows, prefix_lengths)]
    distinct = sorted({tuple(p[:k]) for p, k in zip(rows, splits) if k})
    if not distinct:
        return PrefillPlan([], [-1] * len(rows), [0] * len(rows), max(map(len, rows)))
    index = {prefix: u for u, prefix in enumerate(distinct)}
    row_prefix = [index[tuple(p[:k])] if k else -1 for p, k in zip(rows, splits)]
    # the last block holds every row's suffix, and all of a prompt without a prefix
    width = max(len(p) - k for p, k in zip(rows, splits))
    cached = [max(len(p) - width, 0) if k else 0 for p, k in zip(rows, splits)]
    return PrefillPlan([list(d) for d in distinct], row_prefix, cached, width)


def shared_prefix_cache(
    model: nn.Module,
    plan: PrefillPlan,
    n_layers: int,
    capacity: int,
    pad_id: int,
    device: torch.device,
) -> tuple[GrowingCache, torch.Tensor]:
    """Run the distinct prefixes once and lay their keys and values out per row.

    Returns the rows' cache (``C = max(cached)`` columns, each row's cached tokens right-
    aligned in them) and the attention mask of those columns.
    """
    ids, mask = left_pad(plan.prefixes, pad_id)
    prefix_cache = GrowingCache(n_layers, ids.shape[1])
    model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions_of(mask).to(device),
        cache=prefix_cache,
        use_cache=True,
        logits_to_keep=1,
    )
    columns = max(plan.cached)
    lengths = [len(p) for p in plan.prefixes]
    cache = GrowingCache(n_layers, capacity)
    cache.layers = [
        _row_layer(layer, plan, lengths, ids.shape[1], columns, capacity)
        for layer in prefix_cache.layers
    ]
    row_mask = torch.zeros(len(plan.cached), columns, dtype=torch.long)
    for row, n in enumerate(plan.cached):
        if n:
            row_mask[row, columns - n :] = 1
    return cache, row_mask.to(device)


def _row_layer(
    layer: object,
    plan: PrefillPlan,
    lengths: list[int],
    prefix_width: int,
    columns: int,
    capacity: int,
) -> GrowingLayer:
    assert isinstance(layer, GrowingLayer)
    keys, values = layer.key_buffer, layer.value_buffer
    batch = len(plan.cached)
    out = GrowingLayer(capacity)
    shape = (batch, keys.shape[1], columns, keys.shape[3])
    row_keys = torch.zeros(shape, dtype=keys.dtype, device=keys.device)
    row_values = torch.zeros(shape, dtype=values.dtype, device=values.device)
    for row, (u, n) in enumerate(zip(plan.row_prefix, plan.cached)):
        if n:
            start = prefix_width - lengths[u]  # the prefix's first token in the prefix pass
            row_keys[row, :, columns - n :] = keys[u, :, start : start + n]
            row_values[row, :, columns - n :] = values[u, :, start : start + n]
    out.update(row_keys, row_values)
    return out


def suffix_inputs(
    prompts: Sequence[list[int]], plan: PrefillPlan, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The last block of the prefill: ids and mask ``[batch, width]`` (left padded) and the
    positions of its tokens (after each row's cached tokens).

    Example:
        >>> plan = plan_prefill([[1] * 9 + [5], [2, 3]], [9, 0])
        >>> ids, mask, pos = suffix_inputs([[1] * 9 + [5], [2, 3]], plan, 0)
        >>> ids.tolist(), pos.tolist()
        ([[1, 5], [2, 3]], [[8, 9], [0, 1]])
    """
    tails = [list(p[n:]) for p, n in zip(prompts, plan.cached)]
    ids, mask = left_pad(tails, pad_id)
    offsets = torch.tensor(plan.cached, dtype=torch.long)[:, None]
    return ids, mask, positions_of(mask) + offsets
