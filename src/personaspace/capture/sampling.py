"""Token choice: greedy, or temperature + nucleus sampling with one RNG stream per sequence.

Each sequence draws from its own seeded generator, so a sampled reply depends on its seed
alone, not on which other prompts share its batch or in what order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from personaspace.errors import PersonaspaceError


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings. ``temperature == 0`` means greedy.

    Example:
        >>> SamplingConfig(temperature=0.7, top_p=0.9, seed=1).greedy
        False
    """

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop_strings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise PersonaspaceError(
                f"max_new_tokens is {self.max_new_tokens}", fix="ask for at least 1 token"
            )
        if self.temperature < 0:
            raise PersonaspaceError(
                f"temperature is {self.temperature}", fix="use 0 (greedy) or a positive value"
            )
        if not 0 < self.top_p <= 1:
            raise PersonaspaceError(f"top_p is {self.top_p}", fix="use a value in (0, 1]")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def choose_tokens(
    logits: torch.Tensor, config: SamplingConfig, generators: list[torch.Generator]
) -> torch.Tensor:
    """Pick one token per row of ``logits`` ``[batch, vocab]``.

    Sampling uses the exponential race: ``argmax(p / E)`` with ``E ~ Exp(1)`` drawn from each
    row's own generator is a draw from ``p``.
    """
    if config.greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / config.temperature, dim=-1)
    if config.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        before = sorted_p.cumsum(dim=-1) - sorted_p  # mass strictly above each token
        sorted_p = sorted_p.masked_fill(before >= config.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    race = torch.empty_like(probs)
    for row, generator in enumerate(generators):
        race[row].exponential_(generator=generator)
    return (probs / race).argmax(dim=-1)


def row_generators(seeds: list[int], device: torch.device) -> list[torch.Generator]:
    """One seeded generator per sequence."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
