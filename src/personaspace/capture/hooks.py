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


@contextmanager
def contiguous_head_input(model: nn.Module) -> Iterator[None]:
    """Give the output (vocabulary) projection a contiguous input for the ``with`` block.

    With ``logits_to_keep=1`` transformers hands the head a strided slice of the last
    position; in bfloat16 PyTorch's CPU linear then broadcasts the weight into a batched
    matmul, copying ``[batch, hidden, vocab]`` (3.4 s for one prefill of SmolLM2 at batch
    32, by the profile). A contiguous copy of the ``[batch, 1, hidden]`` input avoids it.
    The values are the same.

    Example:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16,
        ...                                       num_hidden_layers=1, num_attention_heads=2))
        >>> ids = torch.tensor([[1, 2, 3]])
        >>> with contiguous_head_input(model):
        ...     inside = model(ids, logits_to_keep=1).logits
        >>> torch.equal(inside, model(ids, logits_to_keep=1).logits)
        True
    """
    head = getattr(model, "get_output_embeddings", lambda: None)()
    if not isinstance(head, nn.Module):
        yield
        return

    def before(_m: nn.Module, args: tuple[object, ...]) -> tuple[object, ...] | None:
        if args and isinstance(args[0], torch.Tensor) and not args[0].is_contiguous():
            return (args[0].contiguous(), *args[1:])
        return None

    handle = head.register_forward_pre_hook(before)
    try:
        yield
    finally:
        handle.remove()
