"""``personaspace monitor``: where each assistant turn of some transcripts sits on the axis."""

from __future__ import annotations

import argparse
from pathlib import Path

from personaspace.errors import PersonaspaceError
from personaspace.fileformat import atomic_write, write_json
from personaspace.interventions.calibration import Calibration, load_calibration
from personaspace.models import BUNDLED_MODELS, DEFAULT_MODEL, LoadedModel, load_model
from personaspace.models.loading import HUB_ID
from personaspace.monitor.axis import CALIBRATION_FILE, Axis, load_axis
from personaspace.monitor.plot import COLOR_BY, trajectory_png
from personaspace.monitor.report import monitor_transcripts
from personaspace.monitor.transcripts import read_transcripts


def parse_layers(text: str | None, option: str = "--layers") -> list[int] | None:
    """``"10,15,20"`` -> ``[10, 15, 20]``; ``None`` stays ``None`` (the default layer)."""
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


def model_spec_for(axis: Axis, spec: str | None) -> str:
    """``--model`` if given, else the axis's model when it names one we can load."""
    if spec:
        return spec
    model_id = axis.model_id
    if model_id in BUNDLED_MODELS or Path(model_id).exists() or HUB_ID.match(model_id):
        return model_id
    return DEFAULT_MODEL


def load_axis_and_model(axis_path: str, spec: str | None) -> tuple[Axis, LoadedModel]:
    """The axis (checked) and the model it is read with (checked against it)."""
    axis = load_axis(axis_path)
    lm = load_model(model_spec_for(axis, spec))
    axis.check_model(lm)
    return axis, lm


def run_calibration_if_any(axis_path: str) -> Calibration | None:
    """The run folder's calibration, or ``None`` for an uncalibrated run or a lone file."""
    folder = Path(axis_path)
    if folder.is_dir() and (folder / CALIBRATION_FILE).is_file():
        return load_calibration(folder)
    return None


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "monitor",
        help="project each assistant turn of transcripts on the Assistant Axis",
        description="Project every assistant turn (mean over its content tokens) on the axis; "
        "print a table and write monitor.json, monitor.csv and monitor.png.",
    )
    parser.add_argument("transcripts", nargs="+", metavar="TRANSCRIPT", help=".json / .jsonl")
    parser.add_argument("--axis", required=True, help="axis run folder or axis file")
    parser.add_argument(
        "--model", default=None, help="model spec (default: the axis's model, else the default)"
    )
    parser.add_argument(
        "--layers", default=None, help="comma-separated layers (default: the axis's middle one)"
    )
    parser.add_argument("--per-token", action="store_true", help="also project every token")
    parser.add_argument(
        "--out", default=None, help="output folder (default: ./monitor-<first transcript stem>)"
    )
    parser.add_argument("--color-by", choices=COLOR_BY, default="file", help="plot colouring")
    parser.add_argument(
        "--percentile", type=float, default=25.0, help="calibrated floor to show (default 25)"
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.set_defaults(run=run_monitor)


def run_monitor(args: argparse.Namespace) -> int:
    # Everything is read and checked before anything is written.
    transcripts = [t for path in args.transcripts for t in read_transcripts(path)]
    layers = parse_layers(args.layers)
    if not 0 <= args.percentile <= 100:
        raise PersonaspaceError(f"--percentile is {args.percentile}", fix="use 0..100, e.g. 25")
    if args.batch_size < 1:
        raise PersonaspaceError(f"--batch-size is {args.batch_size}", fix="use 1 or more")
    calibration = run_calibration_if_any(args.axis)
    axis, lm = load_axis_and_model(args.axis, args.model)
    report = monitor_transcripts(
        lm,
        axis,
        transcripts,
        layers=layers,
        per_token=args.per_token,
        calibration=calibration,
        percentile=args.percentile,
        batch_size=args.batch_size,
    )
    data = report.to_json()
    csv_text = report.csv_text()
    png = trajectory_png(report, args.color_by)
    out = Path(args.out) if args.out else Path(f"monitor-{Path(args.transcripts[0]).stem}")
    write_json(out / "monitor.json", data)
    with atomic_write(out / "monitor.csv") as handle:
        handle.write(csv_text)
    with atomic_write(out / "monitor.png", "wb") as handle:
        handle.write(png)
    print(f"model {lm.model_id}, axis {axis.source}")
    print(report.table())
    if not report.thresholds:
        run = args.axis if Path(args.axis).is_dir() else "RUN"
        print(f"(no calibration: `personaspace calibrate {run}` adds the capping floors)")
    print(f"wrote {out.resolve()}/: monitor.json, monitor.csv, monitor.png")
    return 0
