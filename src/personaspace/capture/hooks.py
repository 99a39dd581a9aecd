"""Forward hooks on decoder blocks that live exactly as long as a ``with`` block."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from personaspace.models.adapters import ArchitectureAdapter, block_output

BlockCallback = Callable[[int, torch.Tensor], None]
"""Called as ``callback(position, hidden)``: ``position`` indexes the chosen layers list and
``hidden`` is that block's output residual stream, ``[batch, tokens, hidden]``."""


@contextmanager
def residual_hooks(
    model: nn.Module, adapter: ArchitectureAdapter, layers: list[int], callback: BlockCallback
) -> Iterator[None]:
    """Call ``callback`` with the residual stream after each chosen decoder block.

    The hooks read, never modify, and are removed on exit even if the body raises, so the
    model afterwards computes exactly what it computed before.

    Example:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> from personaspace.models import adapter_for
        >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16,
        ...                                       num_hidden_layers=2, num_attention_heads=2))
        >>> seen = []
        >>> with residual_hooks(model, adapter_for(model), [1], lambda i, h: seen.append(h.shape)):
        ...     _ = model(torch.tensor([[1, 2, 3]]))
        >>> seen
        [torch.Size([1, 3, 8])]
    """
    blocks = adapter.layers(model)
    handles = []
    try:
        for position, layer in enumerate(layers):

            def hook(_m: nn.Module, _in: object, out: object, position: int = position) -> None:
                callback(position, block_output(out))

            handles.append(blocks[layer].register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
