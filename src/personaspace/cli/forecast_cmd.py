"""``personaspace forecast``: forecast the next reply's axis position from the user's turn
(``fit``, ``eval``, ``show``), and compare no, always-on and forecast-triggered capping on
the drift scenarios (``compare``). See docs/forecast.md."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from personaspace.analysis.ridge import r_squared
from personaspace.catalogue import SCENARIO_DOMAINS, load_catalogue
from personaspace.cli.common import (
    add_model_options,
    check_model_options,
    load_axis_and_model,
    parse_names,
    print_rows,
)
from personaspace.errors import PersonaspaceError
from personaspace.fileformat import atomic_write, write_json
from personaspace.monitor.forecast import (
    FeatureKind,
    ForecastGate,
    load_forecaster,
    parse_feature_kinds,
    threshold_for,
)
from personaspace.monitor.forecast_fit import (
    FEATURE_SETS,
    evaluate_table,
    fit_forecaster,
    set_name,
    turn_table,
    user_turn_count,
)
from personaspace.monitor.transcripts import Transcript, read_transcripts
from personaspace.runfolder import load_axis

FIT_BATCH = 4
PAPER = "Assistant Axis paper: position R^2 0.53-0.77, change R^2 0.10 (MiniLM embedding, ridge)"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "forecast",
        help="forecast the next reply's axis position from the user's turn; cap pre-emptively",
        description="Ridge regression from the user's turn (MiniLM embedding of the message, "
        "the model's state at the last prompt token) to the next reply's projection, with "
        "cross-validation grouped by conversation and a shuffled-target null.",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    fit = verbs.add_parser("fit", help="fit a forecaster on transcripts and report its R^2")
    _inputs(fit)
    fit.add_argument(
        "--features",
        default="embedding,state",
        help="feature kinds of the saved forecaster: embedding, state, projection",
    )
    fit.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    fit.add_argument("--permutations", type=int, default=200, help="shuffled-target null")
    fit.add_argument("--bootstrap", type=int, default=1000, help="resamples of conversations")
    fit.add_argument(
        "--floor-percentile",
        type=float,
        default=25.0,
        help="the calibrated floor: this percentile of the fit data's reply projections",
    )
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument(
        "--out",
        default=None,
        help="forecaster file (default runs/forecast-<axis run>/forecaster.safetensors); "
        "the figures go beside it as fit.json and fit.csv",
    )
    fit.set_defaults(
        run=run_fit,
        param_flags={
            "n_folds": "--folds",
            "features": "--features",
            "floor_percentile": "--floor-percentile",
        },
    )

    ev = verbs.add_parser("eval", help="score a saved forecaster on other transcripts")
    ev.add_argument("forecaster", metavar="FILE")
    _inputs(ev)
    ev.set_defaults(run=run_eval)

    show = verbs.add_parser("show", help="print a forecaster's settings and figures")
    show.add_argument("forecaster", metavar="FILE")
    show.set_defaults(run=run_show)

    cmp = verbs.add_parser(
        "compare",
        help="drift scenarios under no, always-on and forecast-triggered capping",
        description="Play the drift scenarios with no cap and with --cap (resuming the "
        "transcripts of a drift run in --out), then with the cap triggered by the forecast; "
        "answer the capability items under each; write forecast_capping.json and .csv.",
    )
    cmp.add_argument("--axis", required=True, help="calibrated axis run folder")
    cmp.add_argument("--forecaster", required=True, metavar="FILE")
    cmp.add_argument("--cap", required=True, metavar="EXPERIMENT", help="e.g. layers_11:19-p25")
    cmp.add_argument(
        "--cap-when-forecast",
        default="floor",
        metavar="THRESHOLD",
        help="cap when the forecast is below this projection ('floor': the forecaster's)",
    )
    cmp.add_argument("--model", default=None, help="default: the axis's model")
    cmp.add_argument("--domains", default=",".join(SCENARIO_DOMAINS))
    cmp.add_argument("--scenarios", type=int, default=None, help="per domain (default: all)")
    cmp.add_argument("--capability-items", type=int, default=None, help="default: all")
    cmp.add_argument(
        "--max-new-tokens", type=int, default=None, help="per drift reply (default: drift's)"
    )
    cmp.add_argument("--catalogue", metavar="DIR", default=None)
    cmp.add_argument("--out", required=True, help="the drift folder (resumed or created)")
    add_model_options(cmp)
    cmp.set_defaults(
        run=run_compare,
        param_flags={"per_domain": "--scenarios", "threshold": "--cap-when-forecast"},
    )


def _inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "transcripts",
        nargs="+",
        metavar="TRANSCRIPTS",
        help="transcript files (.json/.jsonl), folders of them, or drift output folders",
    )
    parser.add_argument("--axis", required=True, help="axis run folder or axis file")
    parser.add_argument("--model", default=None, help="default: the axis's model")
    parser.add_argument("--layer", type=int, default=None, help="default: the axis's middle one")
    parser.add_argument(
        "--condition",
        default="none",
        help="in a drift folder, the condition whose transcripts to read (default none)",
    )
    add_model_options(parser)


def transcript_files(path: str | Path, condition: str = "none") -> list[Path]:
    """The transcript files of ``path``: itself; a drift folder's ``transcripts/<condition>``;
    or a folder's ``.json``/``.jsonl`` files.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "transcripts" / "none").mkdir(parents=True)
        >>> _ = (root / "transcripts" / "none" / "s1.json").write_text("{}")
        >>> [p.name for p in transcript_files(root)]
        ['s1.json']
    """
    source = Path(path)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise PersonaspaceError(f"no such transcript file or folder: {source}", fix="check it")
    from personaspace.experiments.conditions import file_stem

    folder = source / "transcripts" / file_stem(condition)
    if (source / "transcripts").is_dir():
        if not folder.is_dir():
            raise PersonaspaceError(
                f"{source} has no transcripts of condition {condition}",
                fix="pass --condition NAME (a folder under transcripts/)",
            )
        files = sorted(folder.glob("*.json"))
    else:
        files = sorted(p for p in source.iterdir() if p.suffix in {".json", ".jsonl"})
    if not files:
        raise PersonaspaceError(f"no transcripts in {source}", fix="give .json/.jsonl files")
    return files


def read_inputs(paths: list[str], condition: str) -> list[Transcript]:
    """Every transcript of ``paths``, refused when none has a user turn and a reply."""
    transcripts = [
        t for path in paths for f in transcript_files(path, condition) for t in read_transcripts(f)
    ]
    if user_turn_count(transcripts) == 0:
        raise PersonaspaceError(
            "the transcripts have no user turns followed by a reply",
            fix="give conversations with user messages and the assistant's replies",
        )
    return transcripts


def _default_out(axis: str) -> Path:
    path = Path(axis).resolve()
    name = (path.name if path.is_dir() or not path.suffix else path.stem).removeprefix("axis-")
    return Path("runs") / f"forecast-{name}" / "forecaster.safetensors"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _versus(found: dict | None) -> dict[str, float | None]:
    """The paired difference from the uncapped run as the table's columns."""
    keys = ("mean_difference", "low", "high", "p_signflip")
    names = ("vs_none", "vs_none_low", "vs_none_high", "vs_none_p")
    return {n: None if found is None else found[k] for n, k in zip(names, keys)}


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "-" if not np.isfinite(value) else f"{value:.3f}"
    return "-" if value is None else str(value)


def _table(fit: dict[str, Any]) -> list[str]:
    lines = [
        f"{'target':<9} {'features':<17} {'R^2':>7} {'95% interval':>17} {'null mean':>9} "
        f"{'null p95':>8} {'p':>7} {'rows':>5}"
    ]
    for target in ("position", "change"):
        for name, r in fit[target].items():
            lo, hi = r["interval_95"]
            lines.append(
                f"{target:<9} {name:<17} {_fmt(r['r2']):>7} "
                f"{'[' + _fmt(lo) + ', ' + _fmt(hi) + ']':>17} {_fmt(r['null_mean']):>9} "
                f"{_fmt(r['null_p95']):>8} {_fmt(r['p_value']):>7} {r['n_rows']:>5}"
            )
    persistence = fit.get("persistence")
    if persistence:
        lines.append(
            f"{'position':<9} {'previous reply':<17} {_fmt(persistence['r2']):>7} "
            f"{'(persistence baseline)':>17}"
        )
    return lines


def run_fit(args: argparse.Namespace) -> int:
    kinds = parse_feature_kinds(args.features)
    for name, value in (("--folds", args.folds), ("--permutations", args.permutations)):
        if value < (2 if name == "--folds" else 0):
            raise PersonaspaceError(f"{name} is {value}", fix="give a larger number")
    if not 0 <= args.floor_percentile <= 100:
        raise PersonaspaceError(
            f"--floor-percentile is {args.floor_percentile}", fix="give 0..100, e.g. 25"
        )
    check_model_options(args)
    transcripts = read_inputs(args.transcripts, args.condition)
    out = Path(args.out) if args.out else _default_out(args.axis)
    if out.exists() and out.is_dir():
        raise PersonaspaceError(f"--out {out} is a folder", fix="give a file name")
    axis, lm = load_axis_and_model(args.axis, args.model, args)
    with tqdm(total=len(transcripts), desc="teacher forcing", unit="conv", disable=None) as bar:
        table = turn_table(
            lm,
            axis,
            transcripts,
            layer=args.layer,
            batch_size=args.batch_size or FIT_BATCH,
            on_batch=bar.update,
        )
    sets: list[tuple[FeatureKind, ...]] = list(FEATURE_SETS)
    if tuple(kinds) not in sets:
        sets.append(tuple(kinds))
    fit = evaluate_table(
        table,
        sets,
        n_folds=args.folds,
        n_permutations=args.permutations,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
    )
    forecaster = fit_forecaster(
        lm, axis, table, kinds, n_folds=args.folds, floor_percentile=args.floor_percentile, fit=fit
    )
    # The out-of-fold predictions of the saved feature set, per row, for the figures.
    from personaspace.analysis.ridge import GroupedRidgeCV

    cv = GroupedRidgeCV(
        table.features.matrix(kinds),
        np.asarray(table.conversation, dtype=object),
        n_folds=args.folds,
    )
    predicted = cv.evaluate(table.target).predictions
    forecaster.save(out)
    report = {
        "forecaster": str(out),
        "model": lm.model_id,
        "axis": axis.source,
        "layer": table.layer,
        "features": list(kinds),
        "floor": forecaster.floor,
        "floor_rule": forecaster.floor_rule,
        "paper": PAPER,
        "transcripts": sorted({t.file for t in transcripts}),
        **fit.to_json(),
    }
    write_json(out.parent / "fit.json", report)
    with atomic_write(out.parent / "fit.csv") as handle:
        writer = csv.writer(handle)
        writer.writerow(["conversation", "turn", "domain", "target", "previous", "oof_forecast"])
        for i in range(len(table)):
            writer.writerow(
                [
                    table.conversation[i],
                    table.turn[i],
                    table.domain[i] or "",
                    repr(float(table.target[i])),
                    repr(float(table.previous[i])),
                    repr(float(predicted[i])),
                ]
            )
    print(f"model {lm.model_id}, axis {axis.source}, layer {table.layer}")
    print(f"{len(table)} user turns in {fit.n_conversations} conversations\n")
    print("\n".join(_table(fit.to_json())))
    print(f"\n{PAPER}")
    print(
        f"saved forecaster ({set_name(kinds)}): floor {forecaster.floor:.3f} "
        f"({forecaster.floor_rule})"
    )
    print(f"wrote {out.resolve()}, {(out.parent / 'fit.json').resolve()}, fit.csv")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    check_model_options(args)
    transcripts = read_inputs(args.transcripts, args.condition)
    forecaster = load_forecaster(args.forecaster)
    forecaster.check_axis(load_axis(args.axis))  # before loading the model
    axis, lm = load_axis_and_model(args.axis, args.model, args)
    forecaster.check(lm, axis)
    table = turn_table(
        lm,
        axis,
        transcripts,
        layer=forecaster.layer,
        embeddings="embedding" in forecaster.features,
        batch_size=args.batch_size or FIT_BATCH,
    )
    predicted = forecaster.predict(table.features)
    r2 = r_squared(table.target, predicted)
    r = float(np.corrcoef(predicted, table.target)[0, 1]) if len(table) > 2 else float("nan")
    below = predicted < forecaster.floor
    actual_below = table.target < forecaster.floor
    print_rows(
        [
            ("forecaster", args.forecaster),
            ("user turns", len(table)),
            ("R^2 (no refit)", _fmt(r2)),
            ("correlation", _fmt(r)),
            ("forecast below floor", f"{int(below.sum())} ({_fmt(float(below.mean()))})"),
            (
                "actually below floor",
                f"{int(actual_below.sum())} ({_fmt(float(actual_below.mean()))})",
            ),
            ("both", int((below & actual_below).sum())),
        ]
    )
    return 0


def run_show(args: argparse.Namespace) -> int:
    f = load_forecaster(args.forecaster)
    print_rows(
        [
            ("model", f.model_id),
            ("shape", f"hidden {f.hidden_size}, {f.n_layers} layers"),
            ("layer", f.layer),
            ("axis", f"{f.axis_source} ({f.axis_sha256})"),
            ("features", set_name(f.features)),
            ("alpha", f.alpha),
            ("floor", f"{f.floor:.4f}: {f.floor_rule}"),
        ]
    )
    if f.fit.get("position"):
        print()
        print("\n".join(_table(f.fit)))
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from personaspace.experiments.cap_eval import evenly_spaced
    from personaspace.experiments.conditions import (
        baseline,
        cap_condition,
        file_stem,
        load_run_capping,
    )
    from personaspace.experiments.drift import (
        DriftSettings,
        drift_work,
        pick_scenarios,
        run_drift,
        total_replies,
    )
    from personaspace.experiments.forecast_capping import (
        capability_accuracy,
        compare_conditions,
        forecast_condition,
        play_forecast_condition,
    )
    from personaspace.pipeline.replicas import ModelFacts

    check_model_options(args)
    catalogue = load_catalogue(args.catalogue)
    scenarios = pick_scenarios(catalogue.scenarios, parse_names(args.domains), args.scenarios)
    items = evenly_spaced(list(catalogue.capability.values()), args.capability_items)
    config = load_run_capping(args.axis)
    cap = cap_condition(config, args.cap)
    forecaster_path = Path(args.forecaster)
    forecaster = load_forecaster(forecaster_path)
    threshold = threshold_for(args.cap_when_forecast, forecaster)
    forecaster.check_axis(load_axis(args.axis))
    axis, lm = load_axis_and_model(args.axis, args.model, args)
    forecaster.check(lm, axis)
    gate = ForecastGate(forecaster, threshold)
    triggered = forecast_condition(cap, gate, _sha256(forecaster_path))
    settings = DriftSettings(batch_size=args.batch_size)
    if args.max_new_tokens is not None:
        sampling = dataclasses.replace(settings.sampling, max_new_tokens=args.max_new_tokens)
        settings = DriftSettings(sampling, batch_size=args.batch_size)
    layers = [forecaster.layer]
    out = Path(args.out)
    conditions = [baseline(), cap]
    with tqdm(total=total_replies(scenarios, 3), desc="drift", unit="reply", disable=None) as bar:
        runs: dict[str, Any] = dict(
            run_drift(lm, axis, scenarios, conditions, layers, settings, out, on_replies=bar.update)
        )
        folder = out / "transcripts" / file_stem(triggered.name)
        work = drift_work(ModelFacts.of(lm), axis, scenarios, triggered, layers, settings, folder)

        def saved(which: list[int]) -> None:
            for i in which:
                write_json(folder / f"{file_stem(work.scenarios[i].id)}.json", work.transcripts[i])
            bar.update(len(which))

        runs[triggered.name] = play_forecast_condition(lm, work, gate, on_turn=saved)
    capability = {
        c.name: capability_accuracy(
            lm, axis, items, c, gate=gate if c is triggered else None, batch_size=args.batch_size
        )
        for c in (baseline(), cap, triggered)
    }
    result = compare_conditions(
        runs,
        baseline=baseline().name,
        always=cap.name,
        triggered=triggered.name,
        layer=forecaster.layer,
        floor=forecaster.floor,
        capability=capability,
    )
    result.update(
        {
            "model": lm.model_id,
            "axis": axis.source,
            "forecaster": str(forecaster_path),
            "threshold": threshold,
            "cap": args.cap,
            "n_scenarios": len(scenarios),
            "n_capability_items": len(items),
            "settings": settings.to_json(),
        }
    )
    write_json(out / "forecast_capping.json", result)
    columns = [
        "policy",
        "mean_projection",
        "mean_last_turn",
        "share_below_floor",
        "share_turns_capped",
        "share_replies_changed",
        "accuracy",
        "forecast_seconds_per_turn",
        "generate_seconds_per_turn",
    ]
    columns[2:2] = ["vs_none", "vs_none_low", "vs_none_high", "vs_none_p"]
    rows = [
        {
            **{k: r.get(k) for k in columns},
            "accuracy": r["capability"]["accuracy"],
            **_versus(r.get("versus_baseline")),
        }
        for r in result["rows"]
    ]
    with atomic_write(out / "forecast_capping.csv") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nfloor {forecaster.floor:.3f}, threshold {threshold:.3f}, layer {forecaster.layer}")
    print(f"{'':<26}" + "".join(f"{r['policy']:>24}" for r in rows))
    for c in columns[1:]:
        print(f"{c:<26}" + "".join(f"{_fmt(r[c]):>24}" for r in rows))
    print(f"\nwrote {(out / 'forecast_capping.json').resolve()} and forecast_capping.csv")
    return 0
