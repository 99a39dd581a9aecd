"""The order of training: a seeded permutation per epoch, cut into batches, padded on the right.

Batch ``b`` of a run is a pure function of the seed, the dataset size and the batch size,
so a resumed run reads exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from personaspace.training.dataset import IGNORE, TokenizedExample


@dataclass(frozen=True)
class Batch:
    """``input_ids``, ``attention_mask`` and ``labels``, each ``[rows, width]``."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    @property
    def n_trained(self) -> int:
        """Tokens with a loss: label positions after the first (the first has no context)."""
        return int((self.labels[:, 1:] != IGNORE).sum())

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())


def batches_per_epoch(n_examples: int, batch_size: int) -> int:
    """Full and partial batches of one epoch.

    Example:
        >>> batches_per_epoch(10, 4)
        3
    """
    return -(-n_examples // batch_size)


def batch_indices(n_examples: int, batch_size: int, seed: int, index: int) -> list[int]:
    """The example indices of global batch ``index`` (epochs follow one another).

    Example:
        >>> batch_indices(5, 2, seed=0, index=0) == batch_indices(5, 2, seed=0, index=0)
        True
        >>> sorted(sum((batch_indices(5, 2, 0, b) for b in range(3)), []))
        [0, 1, 2, 3, 4]
    """
    per_epoch = batches_per_epoch(n_examples, batch_size)
    epoch, within = divmod(index, per_epoch)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n_examples, generator=generator).tolist()
    return order[within * batch_size : (within + 1) * batch_size]


def collate(examples: Sequence[TokenizedExample], pad_id: int) -> Batch:
    """Right-padded tensors of ``examples`` (labels ``-100`` on padding).

    Example:
        >>> b = collate([TokenizedExample([5, 6, 7], [-100, 6, 7], "a"),
        ...              TokenizedExample([8], [8], "b")], pad_id=0)
        >>> b.input_ids.tolist(), b.labels.tolist()
        ([[5, 6, 7], [8, 0, 0]], [[-100, 6, 7], [8, -100, -100]])
    """
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(example.labels)
    return Batch(ids, mask, labels)
