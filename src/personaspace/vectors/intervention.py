"""Interventions on the residual stream as values: what each one does to a hidden state.

Three operations, each a pure function of the block output ``h`` (``[..., hidden]``):

- **steer** (addition): ``h <- h + c * n * u``, with ``u`` the unit direction, ``n`` the mean
  residual-stream norm at that layer (from calibration) and ``c`` the coefficient. ``c`` is
  therefore in units of "typical residual norm at this layer" (``coef_frac``), which means the
  same thing on every model: ``c = 0.1`` adds a vector one tenth as long as a typical state.
- **ablate** (directional ablation): ``h <- h - (h . u) u``, removing the component along ``u``.
- **cap** (activation capping, a floor on the projection): ``h <- h + max(tau - h . u, 0) u``.
  States whose projection on the Assistant axis ``u`` is already ``>= tau`` are untouched.

Each applies at every position (``scope="all"``) or only in the forward calls that feed one
generated token per sequence (``scope="generated"``: the cached decode steps of generation,
so the prompt's states are left alone).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from personaspace.errors import PersonaspaceError
from personaspace.vectors.axis import Axis
from personaspace.vectors.calibration import Calibration

Kind = Literal["steer", "ablate", "cap"]
Scope = Literal["all", "generated"]
SCOPES: tuple[str, ...] = ("all", "generated")


@dataclass(frozen=True, eq=False)
class Intervention:
    """One operation at the output of one decoder block.

    ``direction`` is a unit vector ``[hidden]``; ``amount`` is the added length for
    ``steer`` (``coef_frac * norm``), the floor ``tau`` for ``cap`` and unused for ``ablate``.
    """

    kind: Kind
    layer: int
    direction: torch.Tensor
    amount: float = 0.0
    scope: Scope = "all"

    def apply(self, hidden: torch.Tensor) -> torch.Tensor:
        """The block output after this intervention (a new tensor; ``hidden`` is unchanged).

        Example:
            >>> u = torch.tensor([1.0, 0.0])
            >>> cap(0, u, tau=2.0).apply(torch.tensor([[0.5, 3.0], [4.0, 1.0]]))
            tensor([[2., 3.],
                    [4., 1.]])
        """
        u = self.direction.to(device=hidden.device, dtype=hidden.dtype)
        if self.kind == "steer":
            return hidden + self.amount * u
        projection = hidden @ u
        if self.kind == "ablate":
            return hidden - projection[..., None] * u
        return hidden + (self.amount - projection).clamp(min=0)[..., None] * u

    def engaged(self, hidden: torch.Tensor) -> torch.Tensor:
        """For a cap, which positions it would move (``h . u < tau``); all-False otherwise."""
        if self.kind != "cap":
            return torch.zeros(hidden.shape[:-1], dtype=torch.bool, device=hidden.device)
        u = self.direction.to(device=hidden.device, dtype=hidden.dtype)
        return (hidden @ u) < self.amount


def unit_direction(direction: torch.Tensor, what: str = "direction") -> torch.Tensor:
    """``direction / |direction|`` as float32, refusing NaN, inf and zero vectors.

    Example:
        >>> unit_direction(torch.tensor([3.0, 4.0]))
        tensor([0.6000, 0.8000])
    """
    vector = direction.detach().float().flatten()
    if not torch.isfinite(vector).all():
        raise PersonaspaceError(f"the {what} has NaN or infinite entries", fix="rebuild it")
    norm = float(vector.norm())
    if norm == 0.0:
        raise PersonaspaceError(f"the {what} is a zero vector", fix="rebuild it")
    return vector / norm


def _check_scope(scope: str) -> Scope:
    if scope == "all":
        return "all"
    if scope == "generated":
        return "generated"
    raise PersonaspaceError(f"unknown scope '{scope}'", fix="use 'all' or 'generated'")


def _check_finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise PersonaspaceError(f"{what} is {value}", fix="give a finite number")
    return float(value)


def steer(
    layer: int, direction: torch.Tensor, coef_frac: float, norm: float, scope: Scope = "all"
) -> Intervention:
    """Add ``coef_frac * norm`` times the unit ``direction`` at ``layer``.

    ``norm`` is the mean residual-stream norm at that layer (``Calibration.norms``), so
    ``coef_frac`` is model-independent. Positive values move toward the direction.

    Example:
        >>> steer(3, torch.tensor([0.0, 2.0]), coef_frac=0.5, norm=10.0).apply(torch.zeros(2))
        tensor([0., 5.])
    """
    _check_finite(coef_frac, "the steering coefficient")
    if not math.isfinite(norm) or norm <= 0:
        raise PersonaspaceError(
            f"the residual norm {norm} is not positive", fix="recalibrate the axis"
        )
    return Intervention(
        "steer", layer, unit_direction(direction), coef_frac * norm, _check_scope(scope)
    )


def ablate(layer: int, direction: torch.Tensor, scope: Scope = "all") -> Intervention:
    """Project the unit ``direction`` out of the residual stream at ``layer``.

    Example:
        >>> ablate(0, torch.tensor([1.0, 0.0])).apply(torch.tensor([3.0, 4.0]))
        tensor([0., 4.])
    """
    return Intervention("ablate", layer, unit_direction(direction), 0.0, _check_scope(scope))


def cap(layer: int, direction: torch.Tensor, tau: float, scope: Scope = "all") -> Intervention:
    """Keep the projection on the unit ``direction`` at ``layer`` from falling below ``tau``.

    Example:
        >>> cap(0, torch.tensor([1.0, 0.0]), tau=1.0).apply(torch.tensor([-2.0, 5.0]))
        tensor([1., 5.])
    """
    return Intervention(
        "cap", layer, unit_direction(direction), _check_finite(tau, "tau"), _check_scope(scope)
    )


def steer_along_axis(
    axis: Axis,
    calibration: Calibration,
    coef_frac: float,
    layers: Sequence[int],
    scope: Scope = "all",
) -> list[Intervention]:
    """Additive steering along the unit axis at ``layers``: ``coef_frac`` x the layer's norm.

    Positive coefficients push toward the Assistant (the axis's direction).

    Example:
        >>> a = Axis("m", [0], torch.tensor([[0.0, 2.0]]), 1, "x")
        >>> cal = Calibration("m", [0], torch.tensor([10.0]), torch.zeros(1, 101), 1, 1, "x")
        >>> [s] = steer_along_axis(a, cal, 0.5, [0])
        >>> s.apply(torch.zeros(2))
        tensor([0., 5.])
    """
    missing = [layer for layer in layers if layer not in calibration.layers]
    if missing:
        raise PersonaspaceError(
            f"the calibration has no residual norm for layer(s) {missing}",
            fix="recalibrate the run (personaspace calibrate RUN) or steer another layer",
        )
    return [
        steer(layer, axis.unit(layer), coef_frac, calibration.norm(layer), scope)
        for layer in layers
    ]
