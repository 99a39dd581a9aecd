"""Token choice: greedy, or temperature + nucleus sampling with one RNG stream per sequence.

Each sequence draws from its own seeded generator, so a sampled reply depends on its seed
alone, not on which other prompts share its batch or in what order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from personaspace.conversation.prompts import stop_strings
from personaspace.errors import PersonaspaceError

# Nucleus search: start with the top 128 tokens; a row is settled once they hold at
# least top_p + 1e-4 of its mass (the margin absorbs float32 rounding of the cumulative
# sums, so the kept set is exactly what sorting the whole vocabulary keeps).
NUCLEUS_START = 128
NUCLEUS_MARGIN = 1e-4


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
                f"max_new_tokens is {self.max_new_tokens}",
                fix="ask for at least 1 token",
                param="max_new_tokens",
            )
        if self.temperature < 0:
            raise PersonaspaceError(
                f"temperature is {self.temperature}",
                fix="use 0 (greedy) or a positive value",
                param="temperature",
            )
        if not 0 < self.top_p <= 1:
            raise PersonaspaceError(
                f"top_p is {self.top_p}", fix="use a value in (0, 1]", param="top_p"
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def for_model(self, chat_tuned: bool) -> SamplingConfig:
        """These settings with the model's own stop strings added (a base model stops where
        it starts writing the next user turn).

        Example:
            >>> SamplingConfig(stop_strings=("END",)).for_model(chat_tuned=False).stop_strings
            ('END', '\\nUser:')
        """
        stops = tuple(dict.fromkeys(self.stop_strings + stop_strings(chat_tuned)))
        return self if stops == self.stop_strings else dataclasses.replace(self, stop_strings=stops)


# The sampling rule, recorded with every run: replies drawn under another rule differ.
SAMPLER = "inverse-cdf/v2"


def choose_tokens(
    logits: torch.Tensor, config: SamplingConfig, generators: list[torch.Generator]
) -> torch.Tensor:
    """Pick one token per row of ``logits`` ``[batch, vocab]``.

    Sampling is by inverse CDF: one uniform ``u`` per row from that row's own generator,
    and the token where the cumulative probability of the nucleus (in descending order)
    first reaches ``u`` times its mass. One draw per row and step, whatever the vocabulary
    or the nucleus, so a row's random stream depends on its seed alone (not on its batch
    neighbours), and no random number is spent on the vocabulary outside the nucleus.

    Example:
        >>> logits = torch.tensor([[0.0, 5.0, 0.0], [9.0, 0.0, 0.0]])
        >>> choose_tokens(logits, SamplingConfig(), []).tolist()  # greedy
        [1, 0]
        >>> gens = row_generators([1, 2], torch.device("cpu"))
        >>> choose_tokens(logits, SamplingConfig(temperature=0.7, top_p=0.9), gens).tolist()
        [1, 0]
    """
    if config.greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / config.temperature, dim=-1)
    if config.top_p >= 1.0:
        kept, order = probs, None
    else:
        kept, order = nucleus(probs, config.top_p)
    u = torch.cat([torch.rand(1, generator=g, device=g.device) for g in generators])
    cumulative = kept.cumsum(dim=-1)
    target = (u.to(cumulative.device) * cumulative[:, -1])[:, None]
    picked = torch.searchsorted(cumulative, target, right=True).clamp(max=kept.shape[-1] - 1)
    # never a token outside the nucleus: step back over zero-probability entries
    last = (kept > 0).long().cumsum(dim=-1).argmax(dim=-1, keepdim=True)
    picked = torch.minimum(picked, last)
    if order is None:
        return picked.squeeze(-1)
    return order.gather(-1, picked).squeeze(-1)


def nucleus(probs: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's nucleus: probabilities in descending order with those outside it zeroed,
    and their token ids (both ``[batch, k]``).

    A token is in the nucleus when the mass strictly above it is below ``top_p``. Rather
    than sort the whole vocabulary (most of the sampling time with a 262k-token vocabulary),
    take the top ``NUCLEUS_START`` tokens and widen (x4) until every row's nucleus ends
    inside them, with a margin that makes the result identical to a full sort's.

    Example:
        >>> kept, ids = nucleus(torch.tensor([[0.1, 0.6, 0.3]]), 0.7)
        >>> kept.tolist(), ids.tolist()
        ([[0.6000000238418579, 0.30000001192092896, 0.0]], [[1, 2, 0]])
    """
    vocab = probs.shape[-1]
    k = min(vocab, NUCLEUS_START)
    while True:
        values, order = probs.topk(k, dim=-1)  # sorted, descending
        cumulative = values.cumsum(dim=-1)
        if k == vocab or bool((cumulative[:, -1] >= top_p + NUCLEUS_MARGIN).all()):
            break
        k = min(vocab, 4 * k)
    before = cumulative - values  # mass strictly above each token
    return values.masked_fill(before >= top_p, 0.0), order


def row_generators(seeds: list[int], device: torch.device) -> list[torch.Generator]:
    """One seeded generator per sequence."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
