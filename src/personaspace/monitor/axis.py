"""The Assistant Axis as monitoring and capping use it: unit vectors per layer, checked.

An axis comes from a run folder (``axis.safetensors``, plus ``calibration.safetensors`` when
the run was calibrated), a lone axis file (ours, or the reference release's raw
``[n_layers, hidden]`` tensor in a ``.pt`` file, read with ``weights_only=True``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from personaspace.errors import PersonaspaceError
from personaspace.fileformat import load_vectors
from personaspace.models.loading import LoadedModel

CALIBRATION_FILE = "calibration.safetensors"


@dataclass(frozen=True, eq=False)
class Axis:
    """Axis vectors ``[len(layers), hidden]`` (pointing toward the Assistant) and their units.

    ``layers[i]`` is the decoder block of row ``i``. ``n_model_layers`` is the layer count of
    the model the axis was built on, when the file says so. ``source`` is where it was read.
    """

    model_id: str
    layers: list[int]
    vectors: torch.Tensor
    n_model_layers: int | None
    source: str

    @property
    def units(self) -> torch.Tensor:
        return self.vectors / self.vectors.norm(dim=-1, keepdim=True)

    @property
    def hidden_size(self) -> int:
        return int(self.vectors.shape[-1])

    def fingerprint(self) -> str:
        """The first 16 hex digits of the sha256 of the axis vectors (float32 bytes).

        Two axes with the same fingerprint hold the same vectors; experiments record it to
        refuse resuming a run with another axis.

        Example:
            >>> a = Axis("m", [0], torch.tensor([[1.0, 0.0]]), 1, "x")
            >>> a.fingerprint()
            '434b26042aff3fb8'
            >>> b = Axis("other", [0], torch.tensor([[1.0, 0.0]]), 1, "y")
            >>> a.fingerprint() == b.fingerprint()
            True
        """
        data = self.vectors.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
        return hashlib.sha256(data).hexdigest()[:16]

    def unit(self, layer: int) -> torch.Tensor:
        """The unit axis at decoder block ``layer``.

        Example:
            >>> a = Axis("m", [3, 4], torch.tensor([[3.0, 4.0], [0.0, 2.0]]), 5, "x")
            >>> a.unit(3)
            tensor([0.6000, 0.8000])
        """
        if layer not in self.layers:
            raise PersonaspaceError(
                f"the axis has no vector for layer {layer}",
                fix=f"choose among layers {self.layers[0]}..{self.layers[-1]}",
            )
        return self.units[self.layers.index(layer)]

    def check_model(self, lm: LoadedModel) -> None:
        """Refuse a model this axis was not built on (hidden size or layer count differ)."""
        if self.hidden_size != lm.adapter.hidden_size:
            raise PersonaspaceError(
                f"the axis ({self.source}) has hidden size {self.hidden_size} but "
                f"{lm.model_id} has {lm.adapter.hidden_size}",
                fix="use an axis built from this model (personaspace axis --model ...)",
            )
        n_model = lm.adapter.n_layers
        if (self.n_model_layers is not None and self.n_model_layers != n_model) or max(
            self.layers
        ) >= n_model:
            raise PersonaspaceError(
                f"the axis ({self.source}) was built on a model with "
                f"{self.n_model_layers or max(self.layers) + 1} layers but {lm.model_id} has "
                f"{n_model}",
                fix="use an axis built from this model (personaspace axis --model ...)",
            )


def _check_vectors(vectors: torch.Tensor, source: str) -> torch.Tensor:
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise PersonaspaceError(
            f"{source} holds a tensor of shape {list(vectors.shape)}, not [n_layers, hidden]",
            fix="pass an axis file or run folder",
        )
    vectors = vectors.detach().float()
    if not torch.isfinite(vectors).all():
        raise PersonaspaceError(f"{source} has NaN or infinite entries", fix="rebuild the axis")
    zero = (vectors.norm(dim=-1) == 0).nonzero().flatten().tolist()
    if zero:
        raise PersonaspaceError(
            f"{source} has zero vectors at rows {zero[:5]}", fix="rebuild the axis"
        )
    return vectors


def load_axis(path: str | Path, lm: LoadedModel | None = None) -> Axis:
    """Read and check an axis; with ``lm``, also check it fits that model.

    Example:
        >>> axis = load_axis("runs/axis-smollm2-135m-instruct-quick")  # doctest: +SKIP
        >>> axis.vectors.shape, axis.layers[:3]  # doctest: +SKIP
        (torch.Size([30, 576]), [0, 1, 2])
    """
    source = Path(path)
    file = source / "axis.safetensors" if source.is_dir() else source
    if source.is_dir() and not file.is_file():
        legacy = source / "axis.pt"
        if not legacy.is_file():
            raise PersonaspaceError(
                f"{source} holds no axis.safetensors or axis.pt",
                fix="pass a finished axis run folder (personaspace axis) or an axis file",
            )
        file = legacy
    tensors, meta = load_vectors(file)
    if "axis" in tensors:
        vectors = tensors["axis"]
    elif len(tensors) == 1:
        vectors = next(iter(tensors.values()))
    else:
        raise PersonaspaceError(
            f"{file} holds {len(tensors)} tensors and none is named 'axis'",
            fix="pass an axis file",
        )
    vectors = _check_vectors(vectors, str(file))
    layers = [int(i) for i in meta.get("layers", range(vectors.shape[0]))]
    if len(layers) != vectors.shape[0]:
        raise PersonaspaceError(
            f"{file} names {len(layers)} layers for {vectors.shape[0]} vectors",
            fix="rebuild the axis",
        )
    n_model = meta.get("n_layers")
    axis = Axis(
        model_id=str(meta.get("model_id", "unknown")),
        layers=layers,
        vectors=vectors,
        n_model_layers=int(n_model) if n_model is not None else None,
        source=str(file),
    )
    if lm is not None:
        axis.check_model(lm)
    return axis
