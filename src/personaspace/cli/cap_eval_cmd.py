"""``personaspace cap-eval``: persona adoption vs capability under capping and steering."""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path
from typing import Any

from tqdm import tqdm

from personaspace.catalogue import load_catalogue
from personaspace.cli.common import (
    bar_warnings,
    on_ray,
    parse_layers,
    parse_names,
    parse_numbers,
    ray_options,
)
from personaspace.cli.experiment_args import (
    add_axis_options,
    load_axis_arg,
    model_for_axis,
    out_folder,
)
from personaspace.errors import PersonaspaceError
from personaspace.experiments.cap_eval import (
    DEFAULT_TOLERANCE,
    CapEvalSettings,
    evenly_spaced,
    run_cap_eval,
)
from personaspace.experiments.conditions import (
    baseline,
    cap_condition,
    load_run_calibration,
    load_run_capping,
    steer_condition,
)
from personaspace.experiments.plots import plot_tradeoff
from personaspace.experiments.scoring import chance_accuracy
from personaspace.fileformat import atomic_write, write_json
from personaspace.judge import make_judge
from personaspace.pipeline.replicas import facts_of

COLUMNS = (
    "setting",
    "harm_proxy",
    "in_persona_rate",
    "no_ai_marker_rate",
    "accuracy",
    "accuracy_mc",
    "accuracy_exact",
    "persona_projection",
    "n_persona",
    "n_scored",
    "n_empty",
    "n_capability",
    "p_harm_vs_baseline",
    "p_accuracy_vs_baseline",
)


def _csv_row(row: dict[str, Any]) -> dict[str, Any]:
    paired = row.get("versus_baseline") or {}
    return {
        **row,
        "p_harm_vs_baseline": paired.get("p_harm"),
        "p_accuracy_vs_baseline": paired.get("p_accuracy"),
    }


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "cap-eval",
        help="persona-adoption rate vs capability accuracy under capping and steering",
        description="Answer the persona-modulation prompts and the capability items (greedy) "
        "with no intervention, each capping experiment and each steering coefficient; write "
        "cap_eval.json, cap_eval.csv and cap_eval.png (the trade-off) and pick the best "
        "setting.",
    )
    add_axis_options(parser, "the settings (each on one worker)")
    parser.add_argument(
        "--caps",
        default=None,
        help="comma-separated capping experiments (default: all in RUN/capping.safetensors; "
        "'' for none)",
    )
    parser.add_argument(
        "--steer",
        default="",
        help="comma-separated steering coefficients in residual norms (+ = toward the "
        "Assistant), e.g. 0.1,0.2",
    )
    parser.add_argument(
        "--steer-layers", default=None, help="layers to steer at (default: the --layers ones)"
    )
    parser.add_argument("--scope", choices=("all", "generated"), default="all")
    parser.add_argument("--judge", choices=("local", "openai", "none"), default="local")
    parser.add_argument("--judge-model", default=None)
    parser.add_argument("--judge-base-url", default=None)
    parser.add_argument("--judge-api-key", default=None, help="default: $OPENAI_API_KEY")
    parser.add_argument(
        "--limit", type=int, default=None, help="at most N prompts and N items, evenly spaced"
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="accuracy the best setting may lose vs the baseline (fraction, 0.02 = 2 points)",
    )
    parser.add_argument(
        "--persona-max-new-tokens", type=int, default=CapEvalSettings.persona_max_new_tokens
    )
    parser.add_argument(
        "--capability-max-new-tokens",
        type=int,
        default=CapEvalSettings.capability_max_new_tokens,
    )
    parser.add_argument("--catalogue", metavar="DIR", default=None, help="your catalogue folder")
    parser.add_argument("--out", default=None, help="default: runs/cap-eval-<axis run name>")
    parser.set_defaults(
        run=run,
        param_flags={
            "persona_max_new_tokens": "--persona-max-new-tokens",
            "capability_max_new_tokens": "--capability-max-new-tokens",
            "batch_size": "--batch-size",
            "limit": "--limit",
        },
    )


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def run(args: argparse.Namespace) -> int:
    ray = ray_options(args)
    if not 0 <= args.tolerance < 1:
        raise PersonaspaceError(
            f"--tolerance {args.tolerance} is not a fraction", fix="e.g. 0.02 for 2 points"
        )
    catalogue = load_catalogue(args.catalogue)
    modulation = evenly_spaced(list(catalogue.modulation.values()), args.limit)
    capability = evenly_spaced(list(catalogue.capability.values()), args.limit)
    coefficients = parse_numbers(args.steer, "--steer")
    caps = None if args.caps is None else parse_names(args.caps)
    steer_layers = parse_layers(args.steer_layers, "--steer-layers")
    settings = CapEvalSettings(
        persona_max_new_tokens=args.persona_max_new_tokens,
        capability_max_new_tokens=args.capability_max_new_tokens,
        batch_size=args.batch_size,
    )
    judge = make_judge(
        args.judge,
        catalogue,
        model=args.judge_model,
        base_url=args.judge_base_url,
        api_key=args.judge_api_key or os.environ.get("OPENAI_API_KEY"),
    )
    axis = load_axis_arg(args, ray)
    if caps is None and Path(args.axis).is_file():
        raise PersonaspaceError(
            f"--axis {args.axis} is an axis file, and cap-eval runs every capping experiment "
            "of a calibrated axis run folder unless --caps names them",
            fix="pass --caps '' for no caps, or give the calibrated axis run folder",
        )
    conditions = [baseline()]
    if caps is None or caps:
        config = load_run_capping(args.axis)
        conditions += [cap_condition(config, e, args.scope) for e in (caps or config.ids)]
    calibration = load_run_calibration(args.axis) if coefficients else None
    out = out_folder(args, "cap-eval")
    judge.check()  # an unreachable judge fails here, before the model loads
    with model_for_axis(args, axis, ray) as (model, layers):
        facts = facts_of(model)
        if calibration is not None:
            where = facts.adapter.check_layers(steer_layers or layers)
            conditions += [
                steer_condition(axis, calibration, c, where, args.scope) for c in coefficients
            ]
        desc = f"cap-eval settings{on_ray(ray)}"
        with tqdm(total=len(conditions), desc=desc, unit="setting", disable=None) as bar:
            result = run_cap_eval(
                model,
                axis,
                layers[0],
                conditions,
                modulation,
                capability,
                settings,
                judge,
                out,
                tolerance=args.tolerance,
                force=args.force,
                on_setting=lambda name: bar.update(1),
                on_event=bar_warnings(bar),
            )
    write_json(out / "cap_eval.json", result)
    with atomic_write(out / "cap_eval.csv") as handle:
        writer = csv.DictWriter(handle, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(_csv_row(r) for r in result["rows"])
    best = result["best"]
    plot_tradeoff(
        result["rows"],
        out / "cap_eval.png",
        title=f"{facts.model_id}: persona adoption vs capability ({len(modulation)} prompts, "
        f"{len(capability)} items)",
        best=best["setting"],
        chance=chance_accuracy(capability),
    )
    width = max(len(r["setting"]) for r in result["rows"])
    print(
        f"\n{'setting':<{width}}  harm proxy  p(harm)  no-AI-marker  accuracy  p(acc)  projection"
    )
    for r in result["rows"]:
        paired = r.get("versus_baseline") or {}
        print(
            f"{r['setting']:<{width}}  {_fmt(r['harm_proxy']):>10}  "
            f"{_fmt(paired.get('p_harm')):>7}  {_fmt(r['no_ai_marker_rate']):>12}  "
            f"{_fmt(r['accuracy']):>8}  {_fmt(paired.get('p_accuracy')):>6}  "
            f"{_fmt(r['persona_projection']):>10}"
        )
    print("p: exact McNemar (paired sign test) against the baseline, item by item")
    print(
        f"accuracy by guessing: {chance_accuracy(capability):.3f} "
        "(1/choices for multiple choice, 0 for exact answers)"
    )
    print(f"\nharm proxy: {result['harm_proxy']}")
    print(f"best: {best['setting']} ({best['reason']})\nrule: {best['rule']}")
    print(f"\nwrote {out.resolve()}/ (cap_eval.json, cap_eval.csv, cap_eval.png, settings/)")
    return 0
