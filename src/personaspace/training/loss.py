"""The assistant-only loss, with the LM head run only where a label is.

A causal LM's head maps every position to vocabulary logits: ``[batch, tokens, vocab]``,
which for Gemma's 262k-token vocabulary is most of a training step's memory. Only the
positions that predict a trained token need logits, so a pre-hook on the output
embedding gathers those positions before the head runs (anything the model does after
its head, such as Gemma 2's logit soft-capping, still applies). The loss is the summed
token cross-entropy divided by ``denominator`` (the trained tokens of the whole
optimizer step, so gradient accumulation gives the mean over the step's tokens).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from personaspace.training.batches import Batch
from personaspace.training.dataset import IGNORE


def _head(model: nn.Module) -> nn.Module:
    head = model.get_output_embeddings()  # type: ignore[operator]
    if not isinstance(head, nn.Module):
        raise TypeError("the model has no output embedding")
    return head


def assistant_loss(model: nn.Module, batch: Batch, denominator: int) -> torch.Tensor:
    """Summed cross-entropy of the trained next tokens of ``batch``, over ``denominator``.

    Equal to Hugging Face's ``model(ids, labels=labels).loss`` when ``denominator`` is the
    batch's own ``n_trained`` (a test checks it on every supported architecture).

    Example:
        >>> loss = assistant_loss(lm.model, batch, batch.n_trained)  # doctest: +SKIP
        >>> loss.backward()  # doctest: +SKIP
    """
    device = next(model.parameters()).device
    labels = batch.labels.to(device)
    targets = labels[:, 1:]
    keep = targets != IGNORE
    flat = keep.flatten().nonzero().squeeze(-1)
    hidden_width = labels.shape[1] - 1

    def gather(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        hidden = args[0][:, :hidden_width, :]
        chosen = hidden.reshape(-1, hidden.shape[-1]).index_select(0, flat)
        return (chosen[None], *args[1:])

    handle = _head(model).register_forward_pre_hook(gather)
    try:
        out = model(
            input_ids=batch.input_ids.to(device),
            attention_mask=batch.attention_mask.to(device),
            use_cache=False,
        )
    finally:
        handle.remove()
    logits = out.logits[0].float()
    summed = nn.functional.cross_entropy(logits, targets[keep], reduction="sum")
    return summed / max(denominator, 1)
