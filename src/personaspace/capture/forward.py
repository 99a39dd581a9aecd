"""Batches of token rows: left padding, and one teacher-forced forward pass with hooks."""

from __future__ import annotations

import torch

from personaspace.capture.hooks import BlockCallback, contiguous_head_input, residual_hooks
from personaspace.errors import PersonaspaceError
from personaspace.models.loading import LoadedModel


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``[batch, width]`` padded on the left with ``pad_id``, and the attention mask.

    Example:
        >>> ids, mask = left_pad([[5, 6], [7]], 0)
        >>> ids.tolist(), mask.tolist()
        ([[5, 6], [0, 7]], [[1, 1], [0, 1]])
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids, mask


def positions_of(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on each row's first real token (left padding).

    Example:
        >>> positions_of(torch.tensor([[0, 1, 1], [1, 1, 1]])).tolist()
        [[0, 0, 1], [0, 1, 2]]
    """
    return (mask.cumsum(-1) - 1).clamp(min=0)


def context_tokens(lm: LoadedModel) -> int | None:
    """The model's context length (``max_position_embeddings``), when its config says.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> cfg = NS(get_text_config=lambda: NS(max_position_embeddings=8192))
        >>> context_tokens(NS(model=NS(config=cfg)))
        8192
    """
    config = getattr(lm.model, "config", None)
    getter = getattr(config, "get_text_config", None)
    text_config = getter() if callable(getter) else config
    value = getattr(text_config, "max_position_embeddings", None)
    return int(value) if value is not None else None


def check_fits(lm: LoadedModel, n_tokens: int, what: str, new_tokens: int = 0) -> None:
    """Refuse, before any forward pass, ``n_tokens`` (plus ``new_tokens`` to generate) beyond
    the model's context: the projections of positions it was never trained on mean nothing.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> lm = NS(model_id="m", model=NS(config=NS(max_position_embeddings=100)))
        >>> check_fits(lm, 120, "the transcript")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        personaspace.errors.PersonaspaceError: the transcript has 120 tokens but m reads at ...
    """
    limit = context_tokens(lm)
    if limit is None or n_tokens + new_tokens <= limit:
        return
    asked = f"{n_tokens} tokens" + (f" plus {new_tokens} to generate" if new_tokens else "")
    raise PersonaspaceError(
        f"{what} has {asked} but {lm.model_id} reads at most {limit} (its context)",
        fix="shorten it, or split it into shorter conversations",
    )


def teacher_forward(
    lm: LoadedModel,
    ids: torch.Tensor,
    mask: torch.Tensor,
    layers: list[int],
    on_block: BlockCallback,
) -> None:
    """One forward pass over padded rows with ``on_block`` reading each chosen block's output.

    No cache and only the last position's logits: the residual stream is what is wanted.
    """
    device = lm.device
    if ids.numel() == 0:
        raise PersonaspaceError("a batch has no tokens", fix="give each row some tokens")
    with (
        torch.inference_mode(),
        contiguous_head_input(lm.model),
        residual_hooks(lm.model, lm.adapter, layers, on_block),
    ):
        lm.model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions_of(mask).to(device),
            use_cache=False,
            logits_to_keep=1,
        )
