"""Top-p sampling without sorting the vocabulary picks exactly what a full sort picks."""

from __future__ import annotations

import pytest
import torch

from personaspace.capture.sampling import (
    NUCLEUS_START,
    SamplingConfig,
    choose_tokens,
    nucleus,
    row_generators,
)


def full_sort_choice(
    logits: torch.Tensor, config: SamplingConfig, generators: list[torch.Generator]
) -> torch.Tensor:
    """The previous implementation: sort the whole vocabulary, mask, scatter back, race."""
    probs = torch.softmax(logits.float() / config.temperature, dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    before = sorted_p.cumsum(dim=-1) - sorted_p
    sorted_p = sorted_p.masked_fill(before >= config.top_p, 0.0)
    probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    race = torch.empty_like(probs)
    for row, generator in enumerate(generators):
        race[row].exponential_(generator=generator)
    return (probs / race).argmax(dim=-1)


@pytest.mark.parametrize(
    ("vocab", "scale", "peak"),
    [
        (300, 1.0, 0.0),  # smaller than NUCLEUS_START
        (50_000, 3.0, 12.0),  # peaked: the nucleus fits in the first top-k
        (50_000, 0.05, 0.0),  # nearly flat: widens to the whole vocabulary
        (20_000, 1.5, 4.0),  # in between: widens once or twice
    ],
)
def test_same_tokens_as_full_sort(vocab: int, scale: float, peak: float) -> None:
    torch.manual_seed(vocab)
    config = SamplingConfig(temperature=0.7, top_p=0.9)
    for step in range(8):
        logits = torch.randn(8, vocab) * scale
        logits[:, :40] += peak
        seeds = [step * 100 + row for row in range(8)]
        new = choose_tokens(logits, config, row_generators(seeds, torch.device("cpu")))
        old = full_sort_choice(logits, config, row_generators(seeds, torch.device("cpu")))
        assert new.tolist() == old.tolist()


def test_nucleus_keeps_the_same_set_as_a_full_sort() -> None:
    torch.manual_seed(1)
    probs = torch.softmax(torch.randn(4, 30_000) * 2.0, dim=-1)
    kept, ids = nucleus(probs, 0.8)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    full = sorted_p.masked_fill(sorted_p.cumsum(-1) - sorted_p >= 0.8, 0.0)
    for row in range(4):
        assert set(ids[row][kept[row] > 0].tolist()) == set(order[row][full[row] > 0].tolist())
    assert ids.shape[1] > NUCLEUS_START  # this distribution needed a wider search
