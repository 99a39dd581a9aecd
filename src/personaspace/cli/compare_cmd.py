"""``personaspace compare``: two persona spaces side by side (and, optionally, base steering)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from personaspace.analysis.compare import MODES, check_settings, compare_runs
from personaspace.cli.common import add_model_options, check_model_options, print_rows
from personaspace.cli.compare_ladder import LADDER_FLAGS, add_ladder_arguments, run_ladder
from personaspace.errors import PersonaspaceError
from personaspace.fileformat import write_json
from personaspace.report.compare_report import compare_figures, headline_rows, write_compare_report
from personaspace.runfolder import RunFolder

# Library parameters and the options that set them (errors name the option).
COMPARE_FLAGS = {
    "top": "--top",
    "k": "--k",
    "n_permutations": "--permutations",
    "n_bootstrap": "--bootstrap",
}
STEERING_FLAGS = {"samples_per_prompt": "--samples", "max_new_tokens": "--steer-tokens"}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "compare",
        help="compare two axis runs: base vs instruct (same architecture) or any two models; "
        "or a ladder of rungs of one architecture (--ladder)",
    )
    parser.add_argument(
        "run_a", metavar="RUN_A", nargs="?", help="an axis run folder (e.g. the base model)"
    )
    parser.add_argument(
        "run_b", metavar="RUN_B", nargs="?", help="another run (e.g. the instruct model)"
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="auto",
        help="same: demand same-architecture figures; rank: rank-based only; auto: same "
        "when hidden size and layer count match",
    )
    parser.add_argument("--out", default=None, help="output folder (default: runs/compare-A-vs-B)")
    parser.add_argument("--k", type=int, default=3, help="principal components to compare")
    parser.add_argument("--top", type=int, default=10, help="size of the top/bottom role lists")
    parser.add_argument("--layer-a", type=int, default=None, help="default: RUN_A's analysis layer")
    parser.add_argument("--layer-b", type=int, default=None, help="default: RUN_B's analysis layer")
    parser.add_argument("--permutations", type=int, default=10_000)
    parser.add_argument("--bootstrap", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--steer-base",
        action="store_true",
        help="also steer RUN_A's model with RUN_B's axis (same hidden size) and judge the "
        "completions (see `personaspace steer-base`)",
    )
    add_steering_arguments(parser)
    add_ladder_arguments(parser)
    parser.set_defaults(run=run, param_flags={**COMPARE_FLAGS, **STEERING_FLAGS, **LADDER_FLAGS})


def add_steering_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``compare --steer-base`` and ``steer-base``."""
    parser.add_argument(
        "--coefs",
        default=None,
        help="steering coefficients in units of the mean residual norm (default 0,0.1,0.2,0.4,0.8)",
    )
    parser.add_argument("--steer-layer", type=int, default=None, help="default: analysis layer")
    parser.add_argument("--samples", type=int, default=2, help="completions per open prompt")
    parser.add_argument("--steer-tokens", type=int, default=40, help="new tokens per completion")
    add_model_options(parser, batch_size=False)
    parser.add_argument(
        "--no-judge-evidence",
        action="store_true",
        help="skip the sentence-embedding comparison with role descriptions",
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60] or "run"


def _headline(result: dict[str, Any]) -> None:
    rows = headline_rows(result)
    print_rows(rows)
    for note in result["notes"]:
        print(f"note: {note}")


def _refuse_ladder_options(args: argparse.Namespace) -> None:
    if args.run_a is None or args.run_b is None:
        raise PersonaspaceError(
            "compare needs two runs, RUN_A and RUN_B",
            fix="pass two axis run folders, or --ladder RUN RUN RUN ... for three or more",
        )
    for option in ("labels", "progress", "base", "random_init"):
        if getattr(args, option) is not None:
            flag = "--" + option.replace("_", "-")
            raise PersonaspaceError(
                f"{flag} describes the runs of a ladder",
                fix=f"give the runs with --ladder or drop {flag}",
            )


def run(args: argparse.Namespace) -> int:
    check_settings(
        k=args.k, top=args.top, n_permutations=args.permutations, n_bootstrap=args.bootstrap
    )
    if args.ladder is not None:
        return run_ladder(args)
    _refuse_ladder_options(args)
    if args.steer_base:
        from personaspace.cli.steer_base_cmd import steering_settings

        steering_settings(args)  # bad --coefs or --samples fail before any work
        check_model_options(args)
    a = RunFolder(args.run_a).compared(layer=args.layer_a)
    b = RunFolder(args.run_b).compared(layer=args.layer_b)
    if a.label == b.label:
        a = RunFolder(args.run_a).compared(label="A:" + a.label, layer=args.layer_a)
        b = RunFolder(args.run_b).compared(label="B:" + b.label, layer=args.layer_b)
    if args.steer_base and a.hidden_size != b.hidden_size:
        raise PersonaspaceError(
            f"--steer-base adds RUN_B's axis to RUN_A's model, but their hidden sizes differ "
            f"({a.hidden_size} vs {b.hidden_size})",
            fix="steer a base model with the axis of its own instruct model (same family), "
            "or with its own axis: `personaspace steer-base RUN_A`",
        )
    result = compare_runs(
        a,
        b,
        mode=args.mode,
        k=args.k,
        top=args.top,
        n_permutations=args.permutations,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
    )
    if args.steer_base:
        from personaspace.cli.steer_base_cmd import run_steering

        result["steering"] = run_steering(args, Path(args.run_a), Path(args.run_b))
    out = Path(args.out or Path("runs") / f"compare-{_slug(a.label)}-vs-{_slug(b.label)}")
    write_json(out / "compare.json", result)
    write_compare_report(out, result, compare_figures(result))
    _headline(result)
    print(f"wrote {out.resolve()}/ (compare.json, compare.html, compare_*.png)")
    return 0
