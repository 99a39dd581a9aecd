"""Options shared by ``drift`` and ``cap-eval``: the axis, its model, layers, capping config."""

from __future__ import annotations

import argparse
from pathlib import Path

from personaspace.cli.common import (
    add_model_options,
    load_model_as_asked,
    model_spec_for,
    parse_layers,
)
from personaspace.errors import PersonaspaceError
from personaspace.models import LoadedModel
from personaspace.models.device import check_batch_size, resolve_placement
from personaspace.monitor import resolve_layers
from personaspace.runfolder import load_axis
from personaspace.vectors.axis import Axis


def add_axis_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--axis", required=True, help="axis run folder (calibrated for caps)")
    parser.add_argument(
        "--model", default=None, help="model spec (default: the axis's model, else the default)"
    )
    parser.add_argument(
        "--layers", default=None, help="comma-separated layers to project at (default: middle)"
    )
    add_model_options(parser)
    parser.add_argument("--force", action="store_true", help="start over, discarding --out")


def load_axis_arg(args: argparse.Namespace) -> Axis:
    """Check ``--batch-size``, ``--device``, ``--dtype`` and ``--layers`` and read ``--axis``
    (no model loaded yet)."""
    check_batch_size(args.batch_size)
    resolve_placement(args.device, args.dtype)
    parse_layers(args.layers, "--layers")
    return load_axis(args.axis)


def model_for_axis(args: argparse.Namespace, axis: Axis) -> tuple[LoadedModel, list[int]]:
    """Load the model (``--model``, else the axis's own model when loadable, else the default),
    check the axis fits, resolve ``--layers``."""
    lm = load_model_as_asked(model_spec_for(axis, args.model), args)
    axis.check_model(lm)
    return lm, resolve_layers(axis, lm, parse_layers(args.layers, "--layers"))


def out_folder(args: argparse.Namespace, kind: str) -> Path:
    """``--out`` (default ``runs/<kind>-<axis run name>``), refused when it is a file.

    Example:
        >>> args = argparse.Namespace(out=None, axis="runs/axis-smollm2-135m-instruct-quick")
        >>> str(out_folder(args, "cap-eval"))
        'runs/cap-eval-smollm2-135m-instruct-quick'
    """
    out = Path(args.out) if args.out else default_out(kind, args.axis)
    if out.exists() and not out.is_dir():
        raise PersonaspaceError(f"--out {out} is a file", fix="give a folder")
    return out


def default_out(kind: str, axis_path: str) -> Path:
    """``runs/<kind>-<axis run name>``.

    Example:
        >>> str(default_out("drift", "runs/axis-smollm2-135m-instruct-quick"))
        'runs/drift-smollm2-135m-instruct-quick'
    """
    path = Path(axis_path).resolve()
    name = (path.name if path.is_dir() or not path.suffix else path.stem).removeprefix("axis-")
    return Path("runs") / f"{kind}-{name}"
