"""What several commands share: parsing list options, and the axis with the model it fits."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from personaspace.errors import PersonaspaceError
from personaspace.models import BUNDLED_MODELS, DEFAULT_MODEL, LoadedModel, load_model
from personaspace.models.device import (
    DTYPE_CHOICES,
    check_batch_size,
    resolve_placement,
    slow_bf16_warning,
)
from personaspace.models.loading import HUB_ID
from personaspace.pipeline.distributed import RayOptions, import_ray
from personaspace.runfolder import load_axis
from personaspace.vectors.axis import Axis


def parse_layers(text: str | None, option: str = "--layers") -> list[int] | None:
    """``"10,15,20"`` -> ``[10, 15, 20]``; ``None`` stays ``None`` (the default layer).

    Example:
        >>> parse_layers("10, 15"), parse_layers(None)
        ([10, 15], None)
    """
    if text is None:
        return None
    try:
        layers = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise PersonaspaceError(
            f"{option} {text!r} is not a comma-separated list of integers",
            fix=f"e.g. {option} 10,15,20",
        ) from err
    if not layers:
        raise PersonaspaceError(f"{option} is empty", fix=f"e.g. {option} 15")
    return layers


def parse_names(text: str | None) -> list[str]:
    """Comma-separated names, blanks dropped.

    Example:
        >>> parse_names(" a, b,,c ")
        ['a', 'b', 'c']
    """
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def parse_numbers(text: str, what: str) -> list[float]:
    """``"0.1, 0.25"`` -> ``[0.1, 0.25]``, with a one-line error for anything else.

    Example:
        >>> parse_numbers("0.1,-0.25", "--steer")
        [0.1, -0.25]
    """
    values = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError as err:
            raise PersonaspaceError(
                f"{what}: '{part}' is not a number",
                fix="give comma-separated numbers, e.g. 0.1,0.2",
            ) from err
        if not math.isfinite(value):
            raise PersonaspaceError(f"{what}: '{part}' is not finite", fix="give finite numbers")
        values.append(value)
    return values


def parse_coefs(text: str, option: str = "--coefs") -> tuple[float, ...]:
    """``"0,0.1,0.2"`` -> ``(0.0, 0.1, 0.2)``: a non-empty list of finite numbers.

    Example:
        >>> parse_coefs("0, 0.2,-0.4")
        (0.0, 0.2, -0.4)
    """
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as err:
        raise PersonaspaceError(
            f"{option} {text!r} is not a comma-separated list of numbers", fix="e.g. 0,0.2,0.4"
        ) from err
    if not values:
        raise PersonaspaceError(f"{option} is empty", fix="e.g. 0,0.2,0.4")
    if not all(math.isfinite(v) for v in values):
        raise PersonaspaceError(f"{option} {text!r} holds a non-finite value", fix="e.g. 0,0.2,0.4")
    return values


def print_rows(rows: Sequence[tuple[str, object]]) -> None:
    """Print (name, value) rows as two aligned columns.

    Example:
        >>> print_rows([("model", "m"), ("roles kept", 3)])
        model       m
        roles kept  3
    """
    width = max((len(k) for k, _ in rows), default=0)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def add_model_options(parser: argparse.ArgumentParser, *, batch_size: bool = True) -> None:
    """``--device``, ``--dtype`` and (unless the command runs one conversation at a time)
    ``--batch-size``, all automatic by default."""
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps"
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPE_CHOICES,
        help="auto: bfloat16 on GPUs and on CPUs with fast bf16 matmuls, else float32",
    )
    if batch_size:
        parser.add_argument(
            "--batch-size", type=int, default=None, help="prompts per batch (default: auto)"
        )


def add_ray_options(parser: argparse.ArgumentParser, work: str) -> None:
    """``--ray [ADDRESS]``, ``--workers N`` and ``--threads N``: compute ``work`` (the
    command's independent items) on Ray workers, one model replica each (docs/scale.md).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_ray_options(parser, "the conditions")
        >>> args = parser.parse_args(["--ray", "--workers", "2"])
        >>> args.ray, args.workers
        ('local', 2)
    """
    parser.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help=f"compute {work} on Ray workers, one model replica each: alone, a local Ray "
        "instance; auto, the cluster running here; HOST:PORT or ray://HOST:PORT, that "
        "cluster (pip install 'personaspace[ray]'; docs/scale.md)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="with --ray: model replicas (default: one per GPU, or 1 CPU worker of 1 thread)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of each model replica: this process's (default: all cores) or, with "
        "--ray, each worker's (default 1). Float sums depend on it: a Ray run writes byte for "
        "byte what one process writes at the same --threads",
    )


def ray_options(args: argparse.Namespace) -> RayOptions | None:
    """``--ray``/``--workers``/``--threads`` checked (Ray installed, counts of 1 or more)
    before anything is loaded or written; ``None`` without ``--ray``, this process then
    computing on ``--threads`` threads when given.

    Example:
        >>> ray_options(argparse.Namespace(ray=None, workers=None, threads=None)) is None
        True
    """
    threads = args.threads
    if threads is not None and threads < 1:
        raise PersonaspaceError(f"--threads is {threads}", fix="use 1 or more")
    if args.ray is None:
        if args.workers is not None:
            raise PersonaspaceError("--workers is given without --ray", fix="add --ray")
        if threads is not None:
            torch.set_num_threads(threads)
        return None
    options = RayOptions(address=args.ray, workers=args.workers, threads_per_worker=threads or 1)
    import_ray()
    return options


def on_ray(options: RayOptions | None) -> str:
    """What a progress bar's title adds for a run on Ray workers.

    Example:
        >>> on_ray(None), on_ray(RayOptions(address="auto"))
        ('', ' (Ray auto)')
    """
    return "" if options is None else f" (Ray {options.address})"


def bar_warnings(bar: tqdm) -> Callable[[str], None]:
    """An ``on_event`` for the library: each line a warning on stderr, above the progress
    bar ``bar``.

    Example:
        >>> warn = bar_warnings(tqdm(disable=True))
        >>> warn("worker 0 died")  # stderr: personaspace: warning: worker 0 died
    """

    def warn(line: str) -> None:
        bar.write(f"personaspace: warning: {line}", file=sys.stderr)

    return warn


def check_model_options(args: argparse.Namespace) -> None:
    """Refuse a bad ``--device``, ``--dtype`` or ``--batch-size`` before any work."""
    resolve_placement(args.device, args.dtype)
    check_batch_size(getattr(args, "batch_size", None))


def load_model_as_asked(spec: str, args: argparse.Namespace) -> LoadedModel:
    """``load_model`` on ``--device``/``--dtype`` (checked before anything loads), warning on
    stderr when bf16 was asked for on a CPU that emulates it."""
    placement = resolve_placement(args.device, args.dtype)
    warning = slow_bf16_warning(placement)
    if warning is not None:
        print(f"personaspace: warning: {warning}", file=sys.stderr)
    return load_model(spec, dtype=placement.dtype, device=placement.device)


def model_spec_for(axis: Axis, spec: str | None) -> str:
    """``--model`` if given, else the axis's model when it names one we can load."""
    if spec:
        return spec
    model_id = axis.model_id
    if model_id in BUNDLED_MODELS or Path(model_id).exists() or HUB_ID.match(model_id):
        return model_id
    return DEFAULT_MODEL


def load_axis_and_model(
    axis_path: str | Path, spec: str | None, args: argparse.Namespace
) -> tuple[Axis, LoadedModel]:
    """The axis (checked) and the model it is read with (checked against it)."""
    axis = load_axis(axis_path)
    lm = load_model_as_asked(model_spec_for(axis, spec), args)
    axis.check_model(lm)
    return axis, lm
