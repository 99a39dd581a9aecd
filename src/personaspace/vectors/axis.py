"""The Assistant Axis as a value: one vector per layer, pointing toward the Assistant.

An axis is built by ``personaspace axis`` (``default vector - mean(role vectors)``, per
layer, not normalised) and read from its ``axis.safetensors``, or from the reference
release's raw ``[n_layers, hidden]`` tensor in a ``.pt`` file (``weights_only=True``).
Monitoring, steering and capping use its unit vectors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from personaspace.errors import PersonaspaceError
from personaspace.fileformat import load_vectors, save_vectors
from personaspace.vectors.shape import ModelShape

AXIS_DEFINITION = (
    "default vector - mean(role vectors), per layer; not normalised; points toward the Assistant"
)


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

    @property
    def middle_layer(self) -> int:
        """The layer monitoring uses when none is chosen: the middle row's.

        Example:
            >>> Axis("m", [0, 1, 2, 3], torch.ones(4, 2), 4, "x").middle_layer
            2
        """
        return self.layers[len(self.layers) // 2]

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

    def units_at(self, layers: Sequence[int]) -> torch.Tensor:
        """The unit axes at ``layers``, stacked ``[len(layers), hidden]``.

        Example:
            >>> Axis("m", [0, 1], torch.tensor([[2.0, 0.0], [0.0, 3.0]]), 2, "x").units_at([1])
            tensor([[0., 1.]])
        """
        return torch.stack([self.unit(layer) for layer in layers])

    def project(self, states: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
        """``h . u`` for states ``[..., len(layers), hidden]``: ``[..., len(layers)]``.

        Example:
            >>> a = Axis("m", [0, 1], torch.tensor([[2.0, 0.0], [0.0, 3.0]]), 2, "x")
            >>> a.project(torch.tensor([[1.0, 5.0], [1.0, 5.0]]), [0, 1])
            tensor([1., 5.])
        """
        units = self.units_at(layers).to(device=states.device, dtype=states.dtype)
        return (states * units).sum(-1)

    def check_model(self, lm: ModelShape) -> None:
        """Refuse a model this axis was not built on (hidden size or layer count differ).

        An axis file that does not record its model's layer count must have one row per
        layer of the model (the reference layout is ``[n_layers, hidden]``).

        Example:
            >>> from types import SimpleNamespace as NS
            >>> lm = NS(model_id="m", adapter=NS(n_layers=30, hidden_size=2))
            >>> axis = Axis("m", list(range(7)), torch.ones(7, 2), None, "a.pt")
            >>> axis.check_model(lm)  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            personaspace.errors.PersonaspaceError: the axis (a.pt) was built on a model with 7 ...
        """
        if self.hidden_size != lm.adapter.hidden_size:
            raise PersonaspaceError(
                f"the axis ({self.source}) has hidden size {self.hidden_size} but "
                f"{lm.model_id} has {lm.adapter.hidden_size}",
                fix="use an axis built from this model",
            )
        n_model = lm.adapter.n_layers
        built_on = self.n_model_layers
        if built_on is None and self.layers == list(range(len(self.layers))):
            built_on = len(self.layers)  # a full [n_layers, hidden] tensor
        if (built_on is not None and built_on != n_model) or max(self.layers) >= n_model:
            raise PersonaspaceError(
                f"the axis ({self.source}) was built on a model with "
                f"{built_on or max(self.layers) + 1} layers but {lm.model_id} has {n_model}",
                fix="use an axis built from this model",
            )


def checked_vectors(vectors: torch.Tensor, source: str) -> torch.Tensor:
    """``vectors`` as float32 ``[n_layers, hidden]``, refusing NaN, infinities and zero rows.

    Example:
        >>> checked_vectors(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), "a.pt")
        Traceback (most recent call last):
        personaspace.errors.PersonaspaceError: a.pt has zero vectors at rows [1]: rebuild the axis
    """
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


def axis_from_tensors(
    tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], source: str
) -> Axis:
    """An axis from a vector file's tensors (``axis``, or its only tensor) and metadata.

    Example:
        >>> a = axis_from_tensors({"vector": torch.ones(3, 2)}, {}, "ref.pt")
        >>> a.layers, a.n_model_layers
        ([0, 1, 2], None)
    """
    if "axis" in tensors:
        vectors = tensors["axis"]
    elif len(tensors) == 1:
        vectors = next(iter(tensors.values()))
    else:
        raise PersonaspaceError(
            f"{source} holds {len(tensors)} tensors and none is named 'axis'",
            fix="pass an axis file",
        )
    vectors = checked_vectors(vectors, source)
    layers = [int(i) for i in meta.get("layers", range(vectors.shape[0]))]
    if len(layers) != vectors.shape[0]:
        raise PersonaspaceError(
            f"{source} names {len(layers)} layers for {vectors.shape[0]} vectors",
            fix="rebuild the axis",
        )
    n_model = meta.get("n_layers")
    return Axis(
        model_id=str(meta.get("model_id", "unknown")),
        layers=layers,
        vectors=vectors,
        n_model_layers=int(n_model) if n_model is not None else None,
        source=source,
    )


def read_axis_file(path: str | Path) -> Axis:
    """An axis from one file: ours (``.safetensors``) or a raw tensor in a ``.pt`` file.

    Example:
        >>> axis = read_axis_file("runs/axis-smollm2-135m-instruct-quick/axis.safetensors")
        ... # doctest: +SKIP
        >>> axis.vectors.shape  # doctest: +SKIP
        torch.Size([30, 576])
    """
    tensors, meta = load_vectors(path)
    return axis_from_tensors(tensors, meta, str(path))


def save_axis(path: str | Path, axis: torch.Tensor, meta: Mapping[str, Any], **extra: Any) -> Path:
    """Write an axis tensor ``[n_layers, hidden]`` as ``axis.safetensors`` with its metadata.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "axis.safetensors"
        >>> _ = save_axis(p, torch.ones(2, 3), {"model_id": "m", "layers": [0, 1], "n_layers": 2})
        >>> read_axis_file(p).n_model_layers
        2
    """
    return save_vectors(
        path,
        {"axis": axis},
        {**meta, "kind": "assistant_axis", "definition": AXIS_DEFINITION, **extra},
    )
