"""Options shared by ``drift`` and ``cap-eval``: the axis, its model, layers, capping config."""

from __future__ import annotations

import argparse
from pathlib import Path

from personaspace.errors import PersonaspaceError
from personaspace.models import BUNDLED_MODELS, DEFAULT_MODEL, LoadedModel, load_model
from personaspace.monitor import Axis, load_axis, resolve_layers


def add_axis_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--axis", required=True, help="axis run folder (calibrated for caps)")
    parser.add_argument(
        "--model", default=None, help="model spec (default: the axis's model if bundled)"
    )
    parser.add_argument(
        "--layers", default=None, help="comma-separated layers to project at (default: middle)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--force", action="store_true", help="start over, discarding --out")


def int_list(text: str | None, option: str) -> list[int] | None:
    """``"10,15"`` -> ``[10, 15]``; ``None`` stays ``None``.

    Example:
        >>> int_list("10, 15", "--layers"), int_list(None, "--layers")
        ([10, 15], None)
    """
    if text is None:
        return None
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise PersonaspaceError(
            f"{option} {text!r} is not a comma-separated list of integers",
            fix=f"e.g. {option} 10,15",
        ) from err
    if not values:
        raise PersonaspaceError(f"{option} is empty", fix=f"e.g. {option} 15")
    return values


def load_axis_arg(args: argparse.Namespace) -> Axis:
    """Check ``--batch-size`` and ``--layers`` and read ``--axis`` (no model loaded yet)."""
    if args.batch_size < 1:
        raise PersonaspaceError(f"--batch-size is {args.batch_size}", fix="give a positive size")
    int_list(args.layers, "--layers")
    return load_axis(args.axis)


def model_for_axis(args: argparse.Namespace, axis: Axis) -> tuple[LoadedModel, list[int]]:
    """Load the model (``--model`` or the axis's bundled model), check the axis fits, resolve
    ``--layers``."""
    spec = args.model or (axis.model_id if axis.model_id in BUNDLED_MODELS else DEFAULT_MODEL)
    lm = load_model(spec)
    axis.check_model(lm)
    return lm, resolve_layers(axis, lm, int_list(args.layers, "--layers"))


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
