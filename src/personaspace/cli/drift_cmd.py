"""``personaspace drift``: do scripted conversations drift away from the Assistant?"""

from __future__ import annotations

import argparse
import csv

from tqdm import tqdm

from personaspace.capture.sampling import SamplingConfig
from personaspace.catalogue import SCENARIO_DOMAINS, load_catalogue
from personaspace.cli.common import bar_warnings, on_ray, parse_names, ray_options
from personaspace.cli.consistency_cmd import print_drift_consistency, write_drift_consistency
from personaspace.cli.experiment_args import (
    add_axis_options,
    load_axis_arg,
    model_for_axis,
    out_folder,
)
from personaspace.experiments.conditions import baseline, cap_condition, load_run_capping
from personaspace.experiments.consistency_drift import consistency_of_runs
from personaspace.experiments.drift import (
    DRIFT_SAMPLING,
    DriftSettings,
    pick_scenarios,
    run_drift,
    total_replies,
)
from personaspace.experiments.drift_report import summarize_drift
from personaspace.experiments.plots import plot_drift
from personaspace.fileformat import atomic_write, write_json
from personaspace.judge.consistency import make_consistency_judge
from personaspace.judge.personas import assistant_persona
from personaspace.pipeline.replicas import facts_of


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "drift",
        help="play scripted multi-turn scenarios and track each reply on the Assistant Axis",
        description="Play the catalogue's scenarios (coding, writing, therapy, ai_self) turn "
        "by turn, with and without capping; write transcripts, drift.json, drift.csv and "
        "drift.png, and test whether therapy/AI-self conversations drift away from the "
        "Assistant while coding ones do not.",
    )
    add_axis_options(parser, "the conditions (each on one worker)")
    parser.add_argument(
        "--domains", default=",".join(SCENARIO_DOMAINS), help="comma-separated domains"
    )
    parser.add_argument(
        "--scenarios", type=int, default=None, help="scenarios per domain (default: all)"
    )
    parser.add_argument(
        "--cap",
        action="append",
        default=[],
        metavar="EXPERIMENT",
        help="capping experiment of RUN/capping.safetensors (repeatable or comma-separated)",
    )
    parser.add_argument("--cap-scope", choices=("all", "generated"), default="all")
    parser.add_argument("--max-new-tokens", type=int, default=DRIFT_SAMPLING.max_new_tokens)
    parser.add_argument("--temperature", type=float, default=DRIFT_SAMPLING.temperature)
    parser.add_argument("--top-p", type=float, default=DRIFT_SAMPLING.top_p)
    parser.add_argument("--seed", type=int, default=DRIFT_SAMPLING.seed)
    parser.add_argument("--catalogue", metavar="DIR", default=None, help="your catalogue folder")
    parser.add_argument("--out", default=None, help="default: runs/drift-<axis run name>")
    parser.set_defaults(
        run=run, param_flags={"batch_size": "--batch-size", "per_domain": "--scenarios"}
    )


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def run(args: argparse.Namespace) -> int:
    ray = ray_options(args)
    catalogue = load_catalogue(args.catalogue)
    scenarios = pick_scenarios(catalogue.scenarios, parse_names(args.domains), args.scenarios)
    settings = DriftSettings(
        SamplingConfig(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
        ),
        batch_size=args.batch_size,
    )
    axis = load_axis_arg(args, ray)
    conditions = [baseline()]
    experiments = [e for text in args.cap for e in parse_names(text)]
    if experiments:
        config = load_run_capping(args.axis)
        conditions += [cap_condition(config, e, args.cap_scope) for e in experiments]
    out = out_folder(args, "drift")
    with model_for_axis(args, axis, ray) as (model, layers):
        model_id = facts_of(model).model_id
        total = total_replies(scenarios, len(conditions))
        desc = f"drift on {model_id}{on_ray(ray)}"
        with tqdm(total=total, desc=desc, unit="reply", disable=None) as bar:
            runs = run_drift(
                model,
                axis,
                scenarios,
                conditions,
                layers,
                settings,
                out,
                force=args.force,
                on_replies=bar.update,
                on_event=bar_warnings(bar),
            )
    layer = layers[0]
    summary = summarize_drift(runs, layer, seed=args.seed)
    consistency = consistency_of_runs(
        runs, assistant_persona(), make_consistency_judge("local"), seed=args.seed
    )
    write_drift_consistency(out, consistency)
    write_json(
        out / "drift.json",
        {
            "model": model_id,
            "axis": axis.source,
            "axis_sha256": axis.fingerprint(),
            "layers": layers,
            "settings": settings.to_json(),
            "conditions": {c.name: c.steering_config for c in conditions},
            "scenarios": {name: [t["scenario"] for t in ts] for name, ts in runs.items()},
            "summary": summary,
            "consistency": consistency.summary(),
            "projections": {
                name: {t["scenario"]: t["projections"]["per_turn"] for t in ts}
                for name, ts in runs.items()
            },
        },
    )
    with atomic_write(out / "drift.csv") as handle:
        writer = csv.DictWriter(handle, ["condition", "domain", "turn", "mean", "std", "n"])
        writer.writeheader()
        writer.writerows(summary["table"])
    plot_drift(
        summary["table"],
        out / "drift.png",
        title=f"{model_id}: projection per turn by domain (mean +- 1 sd over scenarios)",
        layer=layer,
    )
    _print_summary(summary)
    print("\nconsistency with the Assistant's identity (local judge; 1 = no contradiction):")
    print_drift_consistency(consistency)
    print(
        f"\nwrote {out.resolve()}/ (drift.json, drift.csv, drift.png, consistency.json, "
        "consistency.csv, consistency.png, transcripts/)"
    )
    return 0


def _print_summary(summary: dict) -> None:
    print(f"\nprojection on the axis at layer {summary['layer']} (higher = nearer the Assistant)")
    for name, result in summary["conditions"].items():
        print(f"\n[{name}]")
        print(
            f"{'domain':<9} {'n':>3} {'first':>8} {'last':>8} {'change':>8} {'p(flip)':>8} "
            f"{'p(sign)':>8} {'slope':>8}"
        )
        for domain, s in result["domains"].items():
            print(
                f"{domain:<9} {s['n']:>3} {_fmt(s['first_mean']):>8} {_fmt(s['last_mean']):>8} "
                f"{_fmt(s['mean_change']):>8} {_fmt(s['p_signflip']):>8} "
                f"{_fmt(s['p_sign']):>8} {_fmt(s.get('mean_slope')):>8}"
            )
        if "between" in result:
            b, f = result["between"], result["finding"]
            print(
                f"therapy+ai_self minus coding change: {b['difference']:+.3f} "
                f"(permutation p = {b['p_value']:.3f}); published finding reproduced: "
                f"{'yes' if f['reproduced'] else 'no'}"
            )
        for domain, effect in result.get("versus_baseline", {}).items():
            print(
                f"  vs none, {domain}: mean projection {effect['mean_difference']:+.3f} "
                f"(p = {effect['p_signflip']:.3f})"
            )
    print(f"\nrule: {summary['rule']}")
