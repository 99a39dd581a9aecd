"""What the values below need to know of a model: its name, layer count and residual width.

A structural type, so that the values (axis, calibration, capping) can be checked against a
loaded model without this layer importing the model code above it.
"""

from __future__ import annotations

from typing import Protocol

import torch


class LayerShape(Protocol):
    """A model's decoder-block count and residual-stream width (``ArchitectureAdapter``)."""

    @property
    def n_layers(self) -> int: ...

    @property
    def hidden_size(self) -> int: ...


class ModelShape(Protocol):
    """Anything with a ``model_id`` and an ``adapter`` giving its shape (``LoadedModel``)."""

    @property
    def model_id(self) -> str: ...

    @property
    def adapter(self) -> LayerShape: ...


def unit(vector: torch.Tensor) -> torch.Tensor:
    """``vector / |vector|`` (a zero vector stays zero), along the last dimension.

    Example:
        >>> unit(torch.tensor([3.0, 4.0]))
        tensor([0.6000, 0.8000])
    """
    if vector.ndim == 1:
        return vector / vector.norm().clamp(min=1e-30)
    return vector / vector.norm(dim=-1, keepdim=True).clamp(min=1e-30)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """The cosine of two vectors, computed in float64.

    Example:
        >>> cosine(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]))
        0.7071067811865475
    """
    return float(unit(a.double()) @ unit(b.double()))
