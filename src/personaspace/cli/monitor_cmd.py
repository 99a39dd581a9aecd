"""``personaspace monitor``: where each assistant turn of some transcripts sits on the axis."""

from __future__ import annotations

import argparse
from pathlib import Path

from personaspace.cli.common import (
    add_model_options,
    check_model_options,
    load_axis_and_model,
    parse_layers,
)
from personaspace.errors import PersonaspaceError
from personaspace.fileformat import atomic_write, write_json
from personaspace.monitor.plot import COLOR_BY, trajectory_png
from personaspace.monitor.report import monitor_transcripts
from personaspace.monitor.transcripts import read_transcripts
from personaspace.runfolder import calibration_for

MONITOR_BATCH = 4  # transcripts are long: a few per forward pass


def register(sub: argparse._SubParsersAction) -> None:
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
    add_model_options(parser)
    parser.set_defaults(run=run_monitor)


def run_monitor(args: argparse.Namespace) -> int:
    # Everything is read and checked before anything is written.
    transcripts = [t for path in args.transcripts for t in read_transcripts(path)]
    layers = parse_layers(args.layers)
    if not 0 <= args.percentile <= 100:
        raise PersonaspaceError(f"--percentile is {args.percentile}", fix="use 0..100, e.g. 25")
    check_model_options(args)
    calibration = calibration_for(args.axis)
    axis, lm = load_axis_and_model(args.axis, args.model, args)
    report = monitor_transcripts(
        lm,
        axis,
        transcripts,
        layers=layers,
        per_token=args.per_token,
        calibration=calibration,
        percentile=args.percentile,
        batch_size=args.batch_size or MONITOR_BATCH,
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
