"""Top-p sampling without sorting the vocabulary picks exactly what a full sort picks, and
draws from the nucleus distribution."""

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
    """The same rule on a sort of the whole vocabulary: mask outside the nucleus, and pick
    where the cumulative kept mass first exceeds u times the nucleus's mass."""
    probs = torch.softmax(logits.float() / config.temperature, dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    before = sorted_p.cumsum(dim=-1) - sorted_p
    sorted_p = sorted_p.masked_fill(before >= config.top_p, 0.0)
    picks = []
    for row, generator in enumerate(generators):
        u = float(torch.rand(1, generator=generator))
        cumulative = sorted_p[row].cumsum(0)
        index = int((cumulative <= u * cumulative[-1]).sum())
        index = min(index, int((sorted_p[row] > 0).sum()) - 1)
        picks.append(int(order[row, index]))
    return torch.tensor(picks)


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


def test_draws_follow_the_nucleus_distribution() -> None:
    from scipy.stats import chisquare

    logits = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.06, 0.04]]))
    config = SamplingConfig(temperature=1.0, top_p=0.85)  # nucleus: the first three tokens
    counts = torch.zeros(5)
    for seed in range(3000):
        counts[choose_tokens(logits, config, row_generators([seed], torch.device("cpu")))] += 1
    assert counts[3:].sum() == 0
    expected = torch.tensor([0.5, 0.25, 0.15]) / 0.9 * 3000
    assert chisquare(counts[:3].numpy(), expected.numpy()).pvalue > 0.001


def test_a_rows_draw_does_not_depend_on_its_neighbours() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 5000) * 2
    config = SamplingConfig(temperature=0.7, top_p=0.9)
    together = choose_tokens(logits, config, row_generators(list(range(6)), torch.device("cpu")))
    for row in range(6):
        [alone] = choose_tokens(
            logits[row : row + 1], config, row_generators([row], torch.device("cpu"))
        ).tolist()
        assert alone == int(together[row])
