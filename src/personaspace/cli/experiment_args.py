"""Options shared by ``drift`` and ``cap-eval``: the axis, its model (here or on Ray
workers), layers, capping config."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from personaspace.cli.common import (
    add_model_options,
    add_ray_options,
    load_model_as_asked,
    model_spec_for,
    parse_layers,
)
from personaspace.errors import PersonaspaceError
from personaspace.models.device import check_batch_size, resolve_placement
from personaspace.monitor import resolve_layers
from personaspace.pipeline.distributed import RayOptions, check_placement_names
from personaspace.pipeline.replicas import ModelOrPool, model_replicas
from personaspace.runfolder import load_axis
from personaspace.vectors.axis import Axis


def add_axis_options(parser: argparse.ArgumentParser, work: str) -> None:
    """``--axis``, ``--model``, ``--layers``, the model's options, ``--force``, and ``--ray``
    and ``--workers`` to compute ``work`` on Ray workers."""
    parser.add_argument("--axis", required=True, help="axis run folder (calibrated for caps)")
    parser.add_argument(
        "--model", default=None, help="model spec (default: the axis's model, else the default)"
    )
    parser.add_argument(
        "--layers", default=None, help="comma-separated layers to project at (default: middle)"
    )
    add_model_options(parser)
    parser.add_argument("--force", action="store_true", help="start over, discarding --out")
    add_ray_options(parser, work)


def load_axis_arg(args: argparse.Namespace, ray: RayOptions | None = None) -> Axis:
    """Check ``--batch-size``, ``--device``, ``--dtype`` (as names only with ``--ray``: the
    workers' nodes resolve them) and ``--layers`` and read ``--axis`` (no model loaded yet)."""
    check_batch_size(args.batch_size)
    if ray is None:
        resolve_placement(args.device, args.dtype)
    else:
        check_placement_names(args.device, args.dtype)
    parse_layers(args.layers, "--layers")
    return load_axis(args.axis)


@contextmanager
def model_for_axis(
    args: argparse.Namespace, axis: Axis, ray: RayOptions | None = None
) -> Iterator[tuple[ModelOrPool, list[int]]]:
    """The model (``--model``, else the axis's own model when loadable, else the default)
    loaded here, or (``ray``) on Ray workers, stopped when the block ends; the axis checked
    against it and ``--layers`` resolved.

    Example:
        >>> with model_for_axis(args, axis, RayOptions(workers=2)) as (model, layers):
        ...     runs = run_drift(model, axis, scenarios, conditions, layers, settings, out)
        ... # doctest: +SKIP
    """
    spec = model_spec_for(axis, args.model)
    layers = parse_layers(args.layers, "--layers")
    if ray is None:
        lm = load_model_as_asked(spec, args)
        axis.check_model(lm)
        yield lm, resolve_layers(axis, lm, layers)
        return
    with model_replicas(spec, args.device, args.dtype, ray) as pool:
        axis.check_model(pool.facts)
        yield pool, resolve_layers(axis, pool.facts, layers)


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
