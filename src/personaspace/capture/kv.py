"""A key/value cache that is written in place instead of concatenated.

transformers' ``DynamicCache`` concatenates every new key and value onto the old ones, at
every layer and every decode step: a copy of the whole cache per token (17 % of the
decode time of the axis pipeline on SmolLM2, by the profile in BENCHMARKS.md). This cache
preallocates room for the prompt and the reply and writes each step into it; attention
reads a view of the filled part, the same values in the same order.

Every layer keeps every position (no sliding-window truncation): the attention masks
transformers builds from the positions apply each layer's window, exactly as in a
teacher-forced pass over the whole sequence.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


class GrowingLayer(DynamicLayer):
    """One layer's keys and values ``[batch, heads, capacity, head_dim]``, filled left to right.

    Example:
        >>> layer = GrowingLayer(capacity=4)
        >>> k = torch.ones(1, 2, 3, 5)
        >>> keys, _ = layer.update(k, k)
        >>> keys.shape, layer.get_seq_length()
        (torch.Size([1, 2, 3, 5]), 3)
        >>> keys, _ = layer.update(k, k)  # grows past its capacity
        >>> keys.shape, layer.capacity
        (torch.Size([1, 2, 6, 5]), 8)
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = max(1, capacity)
        self.length = 0
        self.key_buffer = torch.empty(0)
        self.value_buffer = torch.empty(0)

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.key_buffer = self._empty(key_states, self.capacity)
        self.value_buffer = self._empty(value_states, self.capacity)

    @staticmethod
    def _empty(like: torch.Tensor, capacity: int) -> torch.Tensor:
        batch, heads, _, dim = like.shape
        return torch.empty(batch, heads, capacity, dim, dtype=like.dtype, device=like.device)

    def _grow(self, needed: int) -> None:
        capacity = max(needed, 2 * self.capacity)
        for name in ("key_buffer", "value_buffer"):
            old = getattr(self, name)
            new = self._empty(old, capacity)
            new[:, :, : self.length] = old[:, :, : self.length]
            setattr(self, name, new)
        self.capacity = capacity

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            self._grow(end)
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        self.keys = self.key_buffer[:, :, :end]
        self.values = self.value_buffer[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def keep_rows(self, index: torch.Tensor) -> None:
        """Keep only the rows ``index`` (the others' sequences are finished)."""
        if self.is_initialized:
            self.key_buffer = self.key_buffer[index]
            self.value_buffer = self.value_buffer[index]
            self.keys = self.key_buffer[:, :, : self.length]
            self.values = self.value_buffer[:, :, : self.length]

    def rows(self, index: torch.Tensor, capacity: int) -> GrowingLayer:
        """A new layer holding the rows ``index`` of this one (rows may repeat), with room
        for ``capacity`` positions."""
        layer = GrowingLayer(max(capacity, self.length))
        if self.is_initialized:
            keys = self.key_buffer[index, :, : self.length]
            values = self.value_buffer[index, :, : self.length]
            layer.update(keys, values)
        return layer


class GrowingCache(DynamicCache):
    """A cache of ``GrowingLayer``s, one per decoder layer (see the module docstring).

    Example:
        >>> cache = GrowingCache(n_layers=2, capacity=16)
        >>> len(cache.layers), cache.get_seq_length()
        (2, 0)
    """

    def __init__(self, n_layers: int, capacity: int) -> None:
        super().__init__()
        self.layers = [GrowingLayer(capacity) for _ in range(n_layers)]

    def keep_rows(self, index: torch.Tensor) -> None:
        """Drop every row not in ``index`` from every layer.

        Example:
            >>> cache = GrowingCache(n_layers=1, capacity=4)
            >>> _ = cache.layers[0].update(torch.arange(3.0).reshape(3, 1, 1, 1),
            ...                            torch.zeros(3, 1, 1, 1))
            >>> cache.keep_rows(torch.tensor([0, 2]))
            >>> cache.layers[0].keys.flatten().tolist()
            [0.0, 2.0]
        """
        for layer in self.layers:
            if isinstance(layer, GrowingLayer):
                layer.keep_rows(index)

    def rows(self, index: torch.Tensor, capacity: int) -> GrowingCache:
        """The cache of the rows ``index`` (a prompt prefix shared by several rows is
        repeated for each), with room for ``capacity`` positions per layer."""
        cache = GrowingCache(len(self.layers), capacity)
        cache.layers = [
            layer.rows(index, capacity) if isinstance(layer, GrowingLayer) else layer
            for layer in self.layers
        ]
        return cache
