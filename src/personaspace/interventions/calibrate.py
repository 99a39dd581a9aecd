"""Measure a calibration: one teacher-forced pass over a calibration set of conversations.

At every layer of the axis and over every assistant content token, the mean residual norm
(the steering unit) and the percentiles of the per-token projection on the unit axis (the
capping floors); see ``personaspace.vectors.calibration`` for what they mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from personaspace.capture.forward import left_pad, teacher_forward
from personaspace.conversation.format import FormattedConversation
from personaspace.errors import PersonaspaceError
from personaspace.models.loading import LoadedModel
from personaspace.vectors.axis import Axis
from personaspace.vectors.calibration import Calibration


def calibrate(
    lm: LoadedModel,
    axis: Axis,
    conversations: Sequence[FormattedConversation],
    *,
    batch_size: int = 8,
    source: str = "conversations",
    on_batch: Callable[[int], object] | None = None,
) -> Calibration:
    """Measure norms and projection percentiles over the assistant tokens of ``conversations``.

    Example:
        >>> convs = RunFolder(run).calibration_set(lm)  # doctest: +SKIP
        >>> cal = calibrate(lm, RunFolder(run).axis(lm), convs)  # doctest: +SKIP
        >>> cal.tau(20, 25)  # doctest: +SKIP
        3.91
    """
    axis.check_model(lm)
    if not conversations:
        raise PersonaspaceError("the calibration set is empty", fix="give it some conversations")
    layers = list(axis.layers)
    units = axis.units.to(lm.device)
    projections: list[list[torch.Tensor]] = [[] for _ in layers]
    norm_sums = torch.zeros(len(layers), dtype=torch.float64)
    n_tokens = 0
    for start in range(0, len(conversations), batch_size):
        batch = list(conversations[start : start + batch_size])
        ids, mask = left_pad([c.input_ids for c in batch], int(lm.tokenizer.pad_token_id))
        content = torch.zeros_like(mask, dtype=torch.bool)
        for row, conv in enumerate(batch):
            offset = ids.shape[1] - len(conv.input_ids)
            for span in conv.spans_of("assistant"):
                content[row, offset + span.start : offset + span.end] = True
        n_tokens += int(content.sum())
        keep = content.to(lm.device)

        def on_block(position: int, hidden: torch.Tensor, keep: torch.Tensor = keep) -> None:
            states = hidden.float()[keep]  # [n_content, H]
            projections[position].append((states @ units[position]).cpu())
            norm_sums[position] += float(states.norm(dim=-1).double().sum())

        teacher_forward(lm, ids, mask, layers, on_block)
        if on_batch is not None:
            on_batch(len(batch))
    if n_tokens == 0:
        raise PersonaspaceError(
            "the calibration set has no assistant content tokens", fix="give it replies"
        )
    q = torch.linspace(0, 1, 101, dtype=torch.float64)
    percentiles = torch.stack([torch.quantile(torch.cat(p).double(), q) for p in projections])
    return Calibration(
        model_id=lm.model_id,
        layers=layers,
        norms=(norm_sums / n_tokens).float(),
        percentiles=percentiles.float(),
        n_tokens=n_tokens,
        n_conversations=len(conversations),
        source=source,
    )
