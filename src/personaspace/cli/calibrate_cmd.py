"""``personaspace calibrate``: steering units and capping thresholds for a run's axis."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from personaspace.cli.common import add_model_options, check_model_options, load_model_as_asked
from personaspace.conversation import format_conversation
from personaspace.errors import PersonaspaceError
from personaspace.monitor.transcripts import read_transcripts
from personaspace.pipeline.calibrate import DEFAULT_LIMIT, DEFAULT_PERCENTILES, calibrate_run
from personaspace.runfolder import CALIBRATION_FILE, CAPPING_FILE, RunFolder
from personaspace.vectors.capping import parse_layer_range


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "calibrate",
        help="measure residual norms and axis projections; write capping experiments",
        description="Calibrate a run's axis: per layer, the mean residual norm (the unit of "
        "steering coefficients) and percentiles of per-token projections (capping "
        "thresholds). Writes calibration.safetensors and capping.safetensors into RUN.",
    )
    parser.add_argument("run_dir", metavar="RUN", help="a finished axis run folder")
    parser.add_argument("--model", default=None, help="default: the run's model")
    parser.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        help="replies of the run to use, evenly spaced (0: all)",
    )
    parser.add_argument(
        "--kinds", default="default,role", help="which replies: default, role, trait_pos, ..."
    )
    parser.add_argument(
        "--conversations",
        nargs="+",
        metavar="PATH",
        default=None,
        help="transcript files or folders to calibrate on instead of the run's replies",
    )
    parser.add_argument(
        "--ranges", default=None, help="layer ranges START:STOP, comma-separated (e.g. 11:19)"
    )
    parser.add_argument(
        "--percentiles",
        default=",".join(f"{p:g}" for p in DEFAULT_PERCENTILES),
        help="capping thresholds to offer, comma-separated",
    )
    add_model_options(parser)
    parser.set_defaults(run=run)


def _numbers(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise PersonaspaceError(
            f"'{text}' is not a list of numbers", fix="write e.g. --percentiles 10,25,50"
        ) from err


def _transcript_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in {".json", ".jsonl"}))
        else:
            files.append(path)
    if not files:
        raise PersonaspaceError(
            f"no .json or .jsonl transcripts in {', '.join(paths)}", fix="point at transcripts"
        )
    return files


def run(args: argparse.Namespace) -> int:
    check_model_options(args)
    run = RunFolder(args.run_dir)
    run.require_axis()
    folder = run.path
    model = args.model or run.model_spec()
    if not model:
        raise PersonaspaceError(f"{folder} does not name its model", fix="pass --model")
    ranges = [parse_layer_range(r) for r in args.ranges.split(",")] if args.ranges else None
    percentiles = _numbers(args.percentiles)
    lm = load_model_as_asked(model, args)
    conversations = source = None
    if args.conversations:
        files = _transcript_files(args.conversations)
        transcripts = [t for f in files for t in read_transcripts(f)]
        conversations = [
            format_conversation(lm.tokenizer, t.messages, use_chat_template=lm.chat_tuned)
            for t in transcripts
        ]
        source = f"{len(conversations)} conversations from {len(files)} file(s)"
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    with tqdm(desc="calibrating", unit="conv", leave=False) as bar:
        calibration, capping = calibrate_run(
            lm,
            folder,
            limit=args.limit or None,
            kinds=kinds,
            ranges=ranges,
            percentiles=percentiles,
            conversations=conversations,
            source=source,
            on_batch=bar.update,
            batch_size=args.batch_size,
        )
    print(f"calibrated on {calibration.source}: {calibration.n_tokens} assistant tokens")
    print(
        f"{'layer':>5}  {'mean norm':>10}  "
        + "  ".join(f"{'p' + f'{p:g}':>8}" for p in percentiles)
    )
    for layer in sorted({s.layer for e in capping.experiments for s in e.steps}):
        taus = "  ".join(f"{calibration.tau(layer, p):8.2f}" for p in percentiles)
        print(f"{layer:>5}  {calibration.norm(layer):10.2f}  {taus}")
    print(f"capping experiments: {', '.join(capping.ids)}")
    print(f"wrote {(folder / CALIBRATION_FILE).resolve()}")
    print(f"wrote {(folder / CAPPING_FILE).resolve()}")
    return 0
