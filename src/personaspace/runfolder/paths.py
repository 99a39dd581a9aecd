"""What commands are handed (``--axis PATH``): a run folder or a lone axis file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from personaspace.errors import PersonaspaceError
from personaspace.interop.reference import read_tensor
from personaspace.runfolder.folder import RunFolder
from personaspace.runfolder.records import RunVectors
from personaspace.vectors.axis import Axis, read_axis_file
from personaspace.vectors.calibration import Calibration
from personaspace.vectors.shape import ModelShape


def run_folder_for(path: str | Path, need: str) -> RunFolder:
    """The run folder an ``--axis`` names, refusing a lone axis file when ``need`` (capping,
    steering) must come from a calibrated run.

    Example:
        >>> run_folder_for("runs/axis-x/axis.safetensors", "capping")  # doctest: +SKIP
        Traceback (most recent call last):
        personaspace.errors.PersonaspaceError: runs/axis-x/axis.safetensors is an axis file, ...
    """
    folder = Path(path)
    if folder.is_file():
        raise PersonaspaceError(
            f"{folder} is an axis file, but {need} needs a calibrated axis run folder",
            fix="pass the folder `personaspace axis` wrote, calibrated by "
            "`personaspace calibrate RUN`",
        )
    return RunFolder(folder)


def run_vectors(path: str | Path) -> RunVectors:
    """The vectors of a run folder (ours or the reference layout), or of a lone axis file.

    Example:
        >>> run_vectors("runs/axis-smollm2-135m-instruct-quick").layers[:2]  # doctest: +SKIP
        [0, 1]
    """
    source = Path(path)
    if source.is_file():
        axis = read_tensor(source)
        return RunVectors("unknown", list(range(axis.shape[0])), axis, None, {}, {})
    return RunFolder(source).vectors()


def load_axis(path: str | Path, lm: ModelShape | None = None) -> Axis:
    """An axis from a run folder or a lone axis file; with ``lm``, checked against it.

    Example:
        >>> axis = load_axis("runs/axis-smollm2-135m-instruct-quick")  # doctest: +SKIP
        >>> axis.vectors.shape, axis.layers[:3]  # doctest: +SKIP
        (torch.Size([30, 576]), [0, 1, 2])
    """
    source = Path(path)
    if source.is_dir():
        return RunFolder(source).axis(lm)
    axis = read_axis_file(source)
    if lm is not None:
        axis.check_model(lm)
    return axis


def calibration_for(path: str | Path) -> Calibration | None:
    """The calibration beside an axis: the run folder's, or ``None`` (uncalibrated run, or a
    lone axis file)."""
    source = Path(path)
    return RunFolder(source).calibration_if_any() if source.is_dir() else None


@dataclass(frozen=True)
class NamedVector:
    """One direction of a run, per layer: the axis (``name == "axis"``) or a trait vector.

    ``vectors`` is ``[len(layers), hidden]``; ``layer`` is the run's analysis layer, if any;
    ``calibration`` the run's (for coefficients in residual-norm units), if calibrated.
    """

    run: str
    name: str
    model_id: str
    layers: list[int]
    vectors: torch.Tensor
    layer: int | None
    calibration: Calibration | None

    @property
    def label(self) -> str:
        return f"{Path(self.run).name}:{self.name}"

    def at(self, layer: int) -> torch.Tensor:
        """The vector at model layer ``layer`` (``[hidden]``), refusing a layer the run lacks."""
        if layer not in self.layers:
            raise PersonaspaceError(
                f"{self.label} has no vector at layer {layer} (it has {self.layers[0]}.."
                f"{self.layers[-1]})",
                fix="choose one of its layers",
                param="layer",
            )
        return self.vectors[self.layers.index(layer)]

    def check_model(self, shape: ModelShape) -> None:
        """Refuse a vector from a model of another hidden size or depth."""
        hidden, depth = int(self.vectors.shape[-1]), max(self.layers) + 1
        if hidden != shape.adapter.hidden_size or depth > shape.adapter.n_layers:
            raise PersonaspaceError(
                f"{self.label} comes from a model with hidden size {hidden} and >= {depth} "
                f"layers, but this model has {shape.adapter.hidden_size} and "
                f"{shape.adapter.n_layers}",
                fix="use vectors built from this model (personaspace axis --model ...)",
            )


def split_vector_spec(spec: str) -> tuple[str, str]:
    """``RUN[:NAME]`` as (run, name); the name defaults to ``axis``.

    Example:
        >>> split_vector_spec("runs/axis-x:evil"), split_vector_spec("runs/axis-x")
        (('runs/axis-x', 'evil'), ('runs/axis-x', 'axis'))
    """
    run, sep, name = spec.rpartition(":")
    if not sep or "/" in name or not name:
        return spec, "axis"
    return run, name


def read_named_vector(spec: str) -> NamedVector:
    """The axis or a trait vector of a run, from ``RUN`` / ``RUN:axis`` / ``RUN:TRAIT``.

    Example:
        >>> v = read_named_vector("runs/axis-smollm2-135m-instruct-quick:evil")  # doctest: +SKIP
        >>> v.name, v.vectors.shape  # doctest: +SKIP
        ('evil', torch.Size([30, 576]))
    """
    run, name = split_vector_spec(spec)
    if not Path(run).exists():
        raise PersonaspaceError(f"no such run folder: {run}", fix="check the path (RUN[:TRAIT])")
    vectors = run_vectors(run)
    if name == "axis":
        tensor = vectors.axis
    elif name in vectors.traits:
        tensor = vectors.traits[name]
    else:
        known = ", ".join(sorted(vectors.traits)) or "none"
        raise PersonaspaceError(
            f"{run} has no trait vector '{name}' (it has: {known})",
            fix="name one of its traits, or 'axis'; build others with personaspace axis --traits",
        )
    folder = Path(run)
    layer = RunFolder(folder).analysis_layer() if folder.is_dir() else None
    return NamedVector(
        run,
        name,
        vectors.model_id,
        list(vectors.layers),
        tensor.float(),
        layer,
        calibration_for(folder),
    )
