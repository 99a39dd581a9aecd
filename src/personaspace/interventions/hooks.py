"""``intervene``: apply interventions for exactly the duration of a ``with`` block."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from personaspace.errors import PersonaspaceError
from personaspace.models.adapters import block_output
from personaspace.models.loading import LoadedModel
from personaspace.vectors.intervention import Intervention


@dataclass
class InterventionHandle:
    """What the interventions did while the ``with`` block ran.

    ``cap_engaged[layer]`` counts, per batch row, the positions where a cap at that layer
    moved the state; ``positions_seen[layer]`` counts the positions it was applied to. Rows
    are the batch rows of the forward calls (the counts reset when the batch size changes).
    """

    interventions: list[Intervention]
    cap_engaged: dict[int, torch.Tensor] = field(default_factory=dict)
    positions_seen: dict[int, torch.Tensor] = field(default_factory=dict)

    def reset(self) -> None:
        """Forget the counts (e.g. between two generations in one ``with`` block)."""
        self.cap_engaged.clear()
        self.positions_seen.clear()

    def engaged_tokens(self, row: int = 0) -> dict[int, int]:
        """Positions of batch row ``row`` where a cap engaged, per capped layer."""
        return {layer: int(counts[row]) for layer, counts in sorted(self.cap_engaged.items())}

    def _count(self, layer: int, engaged: torch.Tensor) -> None:
        batch = engaged.shape[0]
        seen = self.positions_seen.get(layer)
        if seen is None or seen.shape[0] != batch:
            self.cap_engaged[layer] = torch.zeros(batch, dtype=torch.long)
            self.positions_seen[layer] = torch.zeros(batch, dtype=torch.long)
        self.cap_engaged[layer] += engaged.sum(dim=-1).cpu()
        self.positions_seen[layer] += engaged.shape[-1]


def _replace_output(output: object, hidden: torch.Tensor) -> object:
    if isinstance(output, tuple):
        return (hidden, *output[1:])
    return hidden


@contextmanager
def intervene(
    lm: LoadedModel, interventions: Sequence[Intervention]
) -> Iterator[InterventionHandle]:
    """Apply ``interventions`` to ``lm`` inside the block; the model is untouched after it.

    Several interventions at one layer apply in the order given. Hooks are removed on exit
    even if the body raises, so outputs afterwards are bit-identical to before.

    Example:
        >>> lm = load_model("smollm2-135m-instruct")  # doctest: +SKIP
        >>> floor = cap(20, axis_unit, tau=3.5)  # doctest: +SKIP
        >>> with intervene(lm, [floor]) as handle:  # doctest: +SKIP
        ...     replies = generate(lm, prompts)
        >>> handle.engaged_tokens(0)  # doctest: +SKIP
        {20: 7}
    """
    chosen = list(interventions)
    lm.adapter.check_layers(sorted({i.layer for i in chosen}))
    for item in chosen:
        if item.direction.numel() != lm.adapter.hidden_size:
            raise PersonaspaceError(
                f"a {item.kind} direction at layer {item.layer} has {item.direction.numel()} "
                f"entries but the model's hidden size is {lm.adapter.hidden_size}",
                fix="use an axis built from this model (same hidden size)",
            )
    handle = InterventionHandle(chosen)
    blocks = lm.adapter.layers(lm.model)
    by_layer: dict[int, list[Intervention]] = {}
    for item in chosen:
        by_layer.setdefault(item.layer, []).append(item)
    hooks = []
    try:
        for layer, items in by_layer.items():

            def hook(
                _m: nn.Module, _in: object, out: object, items: list[Intervention] = items
            ) -> object:
                hidden = block_output(out)
                decode_step = hidden.shape[1] == 1
                changed = hidden
                for item in items:
                    if item.scope == "generated" and not decode_step:
                        continue
                    if item.kind == "cap":
                        handle._count(item.layer, item.engaged(changed))
                    changed = item.apply(changed)
                return out if changed is hidden else _replace_output(out, changed)

            hooks.append(blocks[layer].register_forward_hook(hook))
        yield handle
    finally:
        for h in hooks:
            h.remove()
