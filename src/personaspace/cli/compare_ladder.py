"""``personaspace compare --ladder RUN RUN RUN ...``: rungs of one architecture in training
order (random-init, base, checkpoints of the tuned model) against the final rung."""

from __future__ import annotations

import argparse
from pathlib import Path

from personaspace.analysis.ladder import Rung, RungKind, check_ladder, ladder, ladder_table
from personaspace.errors import PersonaspaceError
from personaspace.fileformat import atomic_path, atomic_write, write_json
from personaspace.report.ladder_report import ladder_figures
from personaspace.runfolder import RunFolder

# Library parameters and the options that set them (errors name the option).
LADDER_FLAGS = {"rungs": "--ladder", "progress": "--progress", "labels": "--labels"}
LADDER_FILES = ("ladder.json", "ladder.md", "ladder.png", "ladder_layers.png")


def add_ladder_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("a ladder of rungs (instead of RUN_A RUN_B)")
    group.add_argument(
        "--ladder",
        nargs="+",
        metavar="RUN",
        default=None,
        help="three or more axis runs of one architecture, in training order (random-init, "
        "base, checkpoints): each against the final (last trained) rung and the base",
    )
    group.add_argument("--labels", default=None, help="a,b,c: one per run (default: folder names)")
    group.add_argument(
        "--progress",
        default=None,
        help="p,p,...: training progress of each run as a fraction, - (or none) for a run "
        "outside training (random-init, base); write --progress=-,-,0,0.5,1 when the list "
        "starts with -; default: all -, the order gives the x position",
    )
    group.add_argument(
        "--base",
        default=None,
        help="which run is the base (default: the first one not marked random-init)",
    )
    group.add_argument("--random-init", default=None, help="which run is the random-init rung")


def _split(text: str, option: str, n: int) -> list[str]:
    values = [v.strip() for v in text.split(",")]
    if len(values) != n:
        raise PersonaspaceError(
            f"{option} has {len(values)} values for {n} runs",
            fix="give one per --ladder run, comma-separated, in the same order",
        )
    return values


def _fraction(text: str) -> float | None:
    if text in ("-", "none"):
        return None
    try:
        return float(text)
    except ValueError:
        raise PersonaspaceError(
            f"--progress value {text!r} is not a fraction",
            fix="give a number in [0, 1], or - (none) for a rung outside training",
        ) from None


def _which(option: str, given: str | None, runs: list[str]) -> int | None:
    if given is None:
        return None
    target = Path(given).resolve()
    for i, run in enumerate(runs):
        if Path(run).resolve() == target:
            return i
    raise PersonaspaceError(
        f"{option} {given} is not one of the --ladder runs",
        fix=f"pass one of the folders given to --ladder to {option}",
    )


def _labels(args: argparse.Namespace, runs: list[str]) -> list[str]:
    if args.labels is not None:
        return _split(args.labels, "--labels", len(runs))
    names = [Path(run).resolve().name for run in runs]
    return [f"{i + 1}:{n}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def _refuse_pair_options(args: argparse.Namespace) -> None:
    pair_only = [
        ("RUN_A RUN_B", args.run_a is not None),
        ("--steer-base", args.steer_base),
        ("--layer-a", args.layer_a is not None),
        ("--layer-b", args.layer_b is not None),
        ("--mode rank", args.mode == "rank"),
    ]
    for name, given in pair_only:
        if given:
            raise PersonaspaceError(
                f"{name} compares two runs and does not go with --ladder",
                fix="list every run after --ladder, or compare two runs without it",
            )


def ladder_spec(args: argparse.Namespace) -> tuple[list[str], list[float | None], list[RungKind]]:
    """The labels, progress and kinds the options give, checked before any run is read."""
    runs = list(args.ladder)
    n = len(runs)
    # the count first (a stand-in ladder of n rungs), then the lists the options give
    check_ladder([str(i) for i in range(n)], [None] * n, ["base"] + ["tuned"] * (n - 1))
    labels = _labels(args, runs)
    progress: list[float | None] = [None] * n
    if args.progress is not None:
        progress = [_fraction(v) for v in _split(args.progress, "--progress", n)]
    random_init = _which("--random-init", args.random_init, runs)
    base = _which("--base", args.base, runs)
    if base is None:
        base = next(i for i in range(n) if i != random_init)
    if base == random_init:
        raise PersonaspaceError(
            f"{runs[base]} is given as both --base and --random-init",
            fix="mark two different runs",
        )
    kinds: list[RungKind] = [
        "base" if i == base else "random_init" if i == random_init else "tuned" for i in range(n)
    ]
    check_ladder(labels, progress, kinds)
    return labels, progress, kinds


def run_ladder(args: argparse.Namespace) -> int:
    """Check every option, read the runs, compute, draw, and only then write the files."""
    from personaspace.cli.compare_cmd import _slug  # the command's own naming of folders

    _refuse_pair_options(args)
    labels, progress, kinds = ladder_spec(args)
    rungs = [
        Rung(RunFolder(path).compared(label=label), label, p, kind)
        for path, label, p, kind in zip(args.ladder, labels, progress, kinds)
    ]
    result = ladder(
        rungs,
        k=args.k,
        n_permutations=args.permutations,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
    )
    table = ladder_table(result)
    pngs = ladder_figures(result)
    out = Path(args.out or Path("runs") / f"ladder-{_slug(result['final'])}")
    caption = (
        f"Each rung against the final rung ({result['final']}) and the base "
        f"({result['base']}) at layer {result['layer']} of {result['n_layers']}, over the "
        f"{result['roles']['shared']} roles every rung kept. The last row is the "
        f"random-direction baseline: |cos| of the final axis with "
        f"{result['nulls']['random_direction']['n_directions']} random unit vectors of size "
        f"{result['hidden_size']} stays below it 95 % of the time."
    )
    write_json(out / "ladder.json", result)
    with atomic_write(out / "ladder.md") as handle:
        handle.write(f"# The ladder\n\n{caption}\n\n{table}\n")
    for name, png in pngs.items():
        with atomic_path(out / f"{name}.png") as tmp:
            tmp.write_bytes(png)
    print(table)
    print(f"wrote {out.resolve()}/ ({', '.join(LADDER_FILES)})")
    return 0
