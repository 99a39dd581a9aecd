"""What commands are handed (``--axis PATH``): a run folder or a lone axis file."""

from __future__ import annotations

from pathlib import Path

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
