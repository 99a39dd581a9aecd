"""Project conversations on the Assistant Axis: one value per assistant turn and layer.

A turn's projection is the mean over its content tokens of ``h . u`` (``u`` the unit axis),
which equals the projection of the turn's mean state. Everything comes from one
teacher-forced forward pass over each conversation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from personaspace.capture.teacher import capture_conversations
from personaspace.conversation.format import FormattedConversation, TokenSpan
from personaspace.errors import PersonaspaceError
from personaspace.models.adapters import ArchitectureAdapter
from personaspace.models.loading import LoadedModel
from personaspace.vectors.axis import Axis


@dataclass
class Trajectory:
    """Projections of one conversation's assistant turns on the axis.

    ``turns``: ``[n_assistant_turns, len(layers)]``. ``tokens`` (on request):
    ``[n_tokens, len(layers)]`` for every token of the conversation; ``spans`` locates each
    assistant turn's content tokens in it.
    """

    layers: list[int]
    turns: torch.Tensor
    spans: list[TokenSpan]
    tokens: torch.Tensor | None = None

    def at(self, layer: int) -> list[float]:
        """The per-turn projections at decoder block ``layer``.

        Example:
            >>> t = Trajectory([5, 9], torch.tensor([[1.0, 2.0], [3.0, 4.0]]), [])
            >>> t.at(9)
            [2.0, 4.0]
        """
        if layer not in self.layers:
            raise PersonaspaceError(
                f"layer {layer} was not projected", fix=f"choose one of {self.layers}"
            )
        return self.turns[:, self.layers.index(layer)].tolist()


class HasAdapter(Protocol):
    """A loaded model, or what a driver knows of one (``pipeline.replicas.ModelFacts``)."""

    @property
    def adapter(self) -> ArchitectureAdapter: ...


def resolve_layers(axis: Axis, lm: HasAdapter, layers: Sequence[int] | None) -> list[int]:
    """The layers to use: ``layers`` (negative from the end) or the axis's middle layer."""
    if layers is None:
        return [axis.middle_layer]
    chosen = lm.adapter.check_layers(list(layers))
    missing = [layer for layer in chosen if layer not in axis.layers]
    if missing:
        raise PersonaspaceError(
            f"the axis has no vector for layer(s) {missing}",
            fix=f"choose among layers {axis.layers[0]}..{axis.layers[-1]}",
        )
    return chosen


def project_turns(
    lm: LoadedModel,
    axis: Axis,
    conversations: Sequence[FormattedConversation],
    *,
    layers: Sequence[int] | None = None,
    per_token: bool = False,
    batch_size: int = 4,
) -> list[Trajectory]:
    """The trajectory of each conversation on the axis (one forward pass each).

    Args:
        lm: the model the axis was built on (checked).
        axis: from ``load_axis``.
        conversations: formatted conversations with at least one assistant turn.
        layers: decoder blocks to project at (default: the axis's middle layer).
        per_token: also project every token.
        batch_size: conversations per forward pass.

    Example:
        >>> conv = format_conversation(lm.tokenizer, messages)  # doctest: +SKIP
        >>> [t] = project_turns(lm, load_axis(run, lm), [conv], layers=[10, 20])  # doctest: +SKIP
        >>> t.turns.shape  # doctest: +SKIP
        torch.Size([3, 2])
    """
    axis.check_model(lm)
    chosen = resolve_layers(axis, lm, layers)
    for index, conv in enumerate(conversations):
        if not conv.spans_of("assistant"):
            raise PersonaspaceError(
                f"conversation {index} has no assistant turn",
                fix="monitoring projects assistant turns; give a transcript with replies",
            )
    units = axis.units_at(chosen)  # [L, H]
    captures = capture_conversations(
        lm, conversations, layers=chosen, all_tokens=per_token, batch_size=batch_size
    )
    result = []
    for conv, cap in zip(conversations, captures):
        turns = torch.einsum("tlh,lh->tl", cap.turn_means, units)
        tokens = None
        if cap.tokens is not None:
            tokens = torch.einsum("nlh,lh->nl", cap.tokens, units)
        result.append(Trajectory(chosen, turns, conv.spans_of("assistant"), tokens))
    return result
