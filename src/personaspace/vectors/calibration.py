"""Calibration as a value: the scale of the residual stream and the spread of axis projections.

Measured per layer of an axis over a calibration set of conversations (by default the
replies of the axis run itself), over every assistant content token:

- ``norms``: the mean L2 norm of the residual stream, the unit of steering coefficients
  (``coef_frac`` = multiple of this norm);
- ``percentiles``: percentiles 0..100 of the per-token projection on the unit axis, from
  which capping thresholds are chosen (``tau = percentiles[layer, 25]`` for ``p25``).

It is stored beside the axis as ``calibration.safetensors``. The measuring pass lives with
the code that runs models (``personaspace.interventions.calibrate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from personaspace.errors import PersonaspaceError
from personaspace.fileformat import load_vectors, save_vectors

NORM_UNIT = "mean L2 norm of the residual stream over assistant content tokens at that layer"


@dataclass(frozen=True, eq=False)
class Calibration:
    """Per-layer residual norms ``[L]`` and projection percentiles ``[L, 101]``."""

    model_id: str
    layers: list[int]
    norms: torch.Tensor
    percentiles: torch.Tensor
    n_tokens: int
    n_conversations: int
    source: str

    def _row(self, layer: int) -> int:
        if layer not in self.layers:
            raise PersonaspaceError(
                f"the calibration has no layer {layer}",
                fix=f"choose among layers {self.layers[0]}..{self.layers[-1]}",
            )
        return self.layers.index(layer)

    def norm(self, layer: int) -> float:
        """Mean residual norm at ``layer``: one unit of steering coefficient."""
        return float(self.norms[self._row(layer)])

    def tau(self, layer: int, percentile: float) -> float:
        """The projection at ``percentile`` (0..100, linear between whole percentiles).

        Example:
            >>> c = Calibration("m", [2], torch.ones(1), torch.arange(101.0)[None], 9, 1, "x")
            >>> c.tau(2, 25), c.tau(2, 12.5)
            (25.0, 12.5)
        """
        if not 0 <= percentile <= 100:
            raise PersonaspaceError(
                f"percentile {percentile} is outside 0..100", fix="use e.g. 25 for p25"
            )
        row = self.percentiles[self._row(layer)]
        low = int(percentile)
        high = min(low + 1, 100)
        frac = percentile - low
        return float(row[low] * (1 - frac) + row[high] * frac)

    def thresholds(self, layers: list[int], percentile: float) -> dict[int, float]:
        """The floor ``tau`` at ``percentile`` for each of ``layers`` this calibration covers.

        Example:
            >>> cal = Calibration("m", [2], torch.ones(1), torch.arange(101.0)[None], 9, 1, "x")
            >>> cal.thresholds([2, 3], 25)
            {2: 25.0}
        """
        return {layer: self.tau(layer, percentile) for layer in layers if layer in self.layers}


def save_calibration(path: str | Path, calibration: Calibration) -> Path:
    """Write ``calibration.safetensors`` (norms, percentiles; JSON metadata with the unit)."""
    return save_vectors(
        path,
        {"norms": calibration.norms, "percentiles": calibration.percentiles},
        {
            "kind": "calibration",
            "model_id": calibration.model_id,
            "layers": calibration.layers,
            "norm_unit": NORM_UNIT,
            "percentiles": "0..100 of the per-token projection on the unit axis",
            "n_tokens": calibration.n_tokens,
            "n_conversations": calibration.n_conversations,
            "source": calibration.source,
        },
    )


def read_calibration_file(path: str | Path) -> Calibration:
    """Read a calibration file (``calibration.safetensors``).

    Example:
        >>> import tempfile, pathlib
        >>> cal = Calibration("m", [2], torch.ones(1), torch.zeros(1, 101), 9, 1, "x")
        >>> p = save_calibration(pathlib.Path(tempfile.mkdtemp()) / "c.safetensors", cal)
        >>> read_calibration_file(p).norm(2)
        1.0
    """
    file = Path(path)
    tensors, meta = load_vectors(file)
    if meta.get("kind") != "calibration" or {"norms", "percentiles"} - set(tensors):
        raise PersonaspaceError(f"{file} is not a calibration file", fix="recalibrate")
    return Calibration(
        model_id=str(meta.get("model_id", "unknown")),
        layers=[int(i) for i in meta["layers"]],
        norms=tensors["norms"].float(),
        percentiles=tensors["percentiles"].float(),
        n_tokens=int(meta.get("n_tokens", 0)),
        n_conversations=int(meta.get("n_conversations", 0)),
        source=str(meta.get("source", "")),
    )
