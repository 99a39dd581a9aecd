"""Pre-emptive capping on the drift scenarios: no capping, always-on capping and capping
triggered by the forecast (``personaspace.monitor.forecast``), compared.

The forecast-triggered condition plays the scenarios exactly as ``experiments.drift`` does
(the same prompts, the same seed per (scenario, turn), the same decoding, the same
transcript format in ``out/transcripts/<condition>/``), except that at every turn the
unfinished conversations are first forecast (one prompt-only forward pass each, no
interventions, plus the MiniLM embedding of the user message) and then generated in two
groups: those forecast below the threshold under the cap, the others without it. Each
transcript records every turn's forecast, decision and the seconds it took, and the
generation's seconds per reply, so the extra cost is measured, not estimated.

The comparison (``compare_conditions``) reads the three conditions' transcripts: the
projection held (mean over all replies, over the last turns, and the share of replies
below the floor), the share of turns capped, the share of replies whose text differs from
the uncapped run's at the same (scenario, turn), and, from ``capability_accuracy``, the
capability items answered under each condition.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from personaspace.analysis.intervals import mean_interval
from personaspace.capture import SamplingConfig, generate
from personaspace.catalogue import CapabilityItem
from personaspace.conversation.prompts import default_system, format_prompt
from personaspace.errors import PersonaspaceError
from personaspace.experiments.conditions import Condition
from personaspace.experiments.drift import DriftWork, append_turn
from personaspace.experiments.scoring import capability_prompt, is_correct
from personaspace.experiments.stats import signflip_test
from personaspace.interventions import intervene
from personaspace.models.loading import LoadedModel
from personaspace.monitor.forecast import ForecastDecision, ForecastGate
from personaspace.pipeline.work import item_seed
from personaspace.vectors.axis import Axis

CAPABILITY_SAMPLING = SamplingConfig(max_new_tokens=12)


def forecast_condition(cap: Condition, gate: ForecastGate, forecaster_sha256: str) -> Condition:
    """``cap``'s interventions, applied only to replies forecast below ``gate.threshold``.

    Example:
        >>> import numpy as np, torch
        >>> from personaspace.monitor.forecast import Forecaster
        >>> from personaspace.vectors.intervention import cap as cap_item
        >>> f = Forecaster("m", 2, 1, 0, "a", "x", ("projection",), np.ones(1), 0.0,
        ...                np.zeros(1), np.ones(1), 1.0, 0.0, "given")
        >>> c = Condition("layers_0:1-p25", "cap", (cap_item(0, torch.ones(2), 1.0),))
        >>> forecast_condition(c, ForecastGate(f, 2.5), "abc").name
        'layers_0:1-p25@forecast<2.5'
    """
    if cap.kind != "cap" or not cap.interventions:
        raise PersonaspaceError(
            f"condition {cap.name} has no caps to trigger", fix="give a capping experiment"
        )
    f = gate.forecaster
    return Condition(
        f"{cap.name}@forecast<{gate.threshold:.4g}",
        "cap",
        cap.interventions,
        {
            **cap.steering_config,
            "trigger": "cap the reply only when the forecast projection is below threshold",
            "threshold": gate.threshold,
            "floor": f.floor,
            "forecaster_sha256": forecaster_sha256,
            "forecaster_features": list(f.features),
            "forecaster_layer": f.layer,
        },
    )


def _next_turn(record: dict[str, Any], turns: Sequence[str]) -> str | None:
    done = int(record["turns"])
    return turns[done] if done < len(turns) else None


def _generate_groups(
    lm: LoadedModel,
    work: DriftWork,
    prompts: list[Any],
    seeds: list[int],
    capped: list[bool],
    config: SamplingConfig,
) -> tuple[list[Any], float]:
    """Generate the capped and the uncapped prompts, each group under its interventions."""
    replies: list[Any] = [None] * len(prompts)
    start = time.perf_counter()
    for flag in (True, False):
        rows = [i for i, c in enumerate(capped) if c == flag]
        if not rows:
            continue
        with intervene(lm, work.condition.interventions if flag else ()):
            out = generate(
                lm,
                [prompts[i] for i in rows],
                config,
                layers=list(work.layers),
                reductions=("response_mean",),
                batch_size=work.settings.batch_size,
                seeds=[seeds[i] for i in rows],
            )
        for i, reply in zip(rows, out):
            replies[i] = reply
    return replies, time.perf_counter() - start


def play_forecast_condition(
    lm: LoadedModel,
    work: DriftWork,
    gate: ForecastGate,
    on_turn: Callable[[list[int]], object] | None = None,
) -> list[dict[str, Any]]:
    """Play ``work``'s conversations with the caps triggered by ``gate`` (see the module
    docstring); transcripts as ``play_condition`` writes them, plus ``forecast`` (one
    decision per turn) and ``generate_seconds`` (per reply).

    Example:
        >>> work = drift_work(ModelFacts.of(lm), axis, scenarios, condition, [15],
        ...                   DriftSettings(), folder)  # doctest: +SKIP
        >>> play_forecast_condition(lm, work, gate)[0]["forecast"][0]["capped"]  # doctest: +SKIP
        False
    """
    records, axis = list(work.transcripts), work.axis
    seed, chosen = work.settings.sampling.seed, list(work.layers)
    config = work.settings.sampling.for_model(lm.chat_tuned)
    for record in records:
        record.setdefault("forecast", [])
        record.setdefault("generate_seconds", [])
    while True:
        active = [
            (i, turn)
            for i, (record, scenario) in enumerate(zip(records, work.scenarios))
            if (turn := _next_turn(record, scenario.user_turns)) is not None
        ]
        if not active:
            break
        prompts = [format_prompt(lm, turn, history=records[i]["messages"]) for i, turn in active]
        seeds = [
            item_seed(seed, f"drift/{work.scenarios[i].id}/{records[i]['turns']}")
            for i, _ in active
        ]
        decisions = gate.decide_many(lm, axis, prompts, [t for _, t in active])
        replies, seconds = _generate_groups(
            lm, work, prompts, seeds, [d.capped for d in decisions], config
        )
        for (i, turn), reply, decision in zip(active, replies, decisions):
            record = records[i]
            values = axis.project(reply.response_mean, chosen).tolist() if reply.token_ids else None
            append_turn(record, turn, reply.text, reply.finish_reason, values)
            record["forecast"].append(decision.to_json())
            record["generate_seconds"].append(seconds / len(active))
            record["complete"] = record["turns"] == len(work.scenarios[i].user_turns)
        if on_turn is not None:
            on_turn([i for i, _ in active])
    return records


@dataclass(frozen=True)
class CapabilityResult:
    """Capability items answered under one condition: accuracy, the share of items whose
    reply was capped, and the seconds per item (forecast and generation apart)."""

    accuracy: float
    n_items: int
    share_capped: float
    forecast_seconds: float
    generate_seconds: float
    replies: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "n_items": self.n_items,
            "share_capped": self.share_capped,
            "forecast_seconds_per_item": self.forecast_seconds,
            "generate_seconds_per_item": self.generate_seconds,
        }


def capability_accuracy(
    lm: LoadedModel,
    axis: Axis,
    items: Sequence[CapabilityItem],
    condition: Condition,
    *,
    gate: ForecastGate | None = None,
    batch_size: int | None = None,
) -> CapabilityResult:
    """Answer ``items`` (greedy, 12 new tokens, the default system prompt) under
    ``condition``: all of them capped, or, with ``gate``, those forecast below its threshold.

    Example:
        >>> capability_accuracy(lm, axis, items, baseline()).accuracy  # doctest: +SKIP
        0.55
    """
    if not items:
        raise PersonaspaceError("no capability items", fix="give some items")
    system = default_system(lm.chat_tuned)
    texts = [capability_prompt(item) for item in items]
    prompts = [format_prompt(lm, text, system) for text in texts]
    decisions: list[ForecastDecision] = []
    if gate is not None:
        decisions = gate.decide_many(lm, axis, prompts, texts)
        capped = [d.capped for d in decisions]
    else:
        capped = [bool(condition.interventions)] * len(items)
    config = CAPABILITY_SAMPLING.for_model(lm.chat_tuned)
    replies: list[str] = [""] * len(items)
    start = time.perf_counter()
    for flag in (True, False):
        rows = [i for i, c in enumerate(capped) if c == flag]
        if not rows:
            continue
        with intervene(lm, condition.interventions if flag else ()):
            out = generate(
                lm, [prompts[i] for i in rows], config, reductions=(), batch_size=batch_size
            )
        for i, g in zip(rows, out):
            replies[i] = g.text
    seconds = (time.perf_counter() - start) / len(items)
    correct = [is_correct(item, reply) for item, reply in zip(items, replies)]
    return CapabilityResult(
        accuracy=float(np.mean(correct)),
        n_items=len(items),
        share_capped=float(np.mean(capped)),
        forecast_seconds=float(np.mean([d.seconds for d in decisions])) if decisions else 0.0,
        generate_seconds=seconds,
        replies=replies,
    )


def _projections(transcripts: Sequence[dict[str, Any]], index: int) -> dict[tuple[str, int], float]:
    values = {}
    for t in transcripts:
        for turn, row in enumerate(t["projections"]["per_turn"]):
            if row is not None and row[index] is not None:
                values[(str(t["scenario"]), turn)] = float(row[index])
    return values


def _replies(transcripts: Sequence[dict[str, Any]]) -> dict[tuple[str, int], str]:
    out = {}
    for t in transcripts:
        replies = [m["content"] for m in t["messages"] if m["role"] == "assistant"]
        for turn, text in enumerate(replies):
            out[(str(t["scenario"]), turn)] = str(text)
    return out


def _scenario_means(transcripts: Sequence[dict[str, Any]], index: int) -> dict[str, float]:
    """Each scenario's mean reply projection (the unit the intervals and tests resample)."""
    out: dict[str, list[float]] = {}
    for (scenario, _), value in _projections(transcripts, index).items():
        out.setdefault(scenario, []).append(value)
    return {scenario: float(np.mean(values)) for scenario, values in out.items()}


def versus_baseline(
    mine: dict[str, float], base: dict[str, float], *, seed: int = 0
) -> dict[str, Any]:
    """This condition's mean projection minus the baseline's, paired by scenario: the mean
    difference, its bootstrap interval over scenarios and the sign-flip p.

    Example:
        >>> r = versus_baseline({"a": 2.0, "b": 3.0, "c": 5.0}, {"a": 1.0, "b": 1.0, "c": 2.0})
        >>> r["mean_difference"], r["n"], r["p_signflip"]
        (2.0, 3, 0.25)
    """
    shared = sorted(k for k in mine if k in base)
    if not shared:
        raise PersonaspaceError("no scenario in both conditions", fix="play both conditions")
    differences = [mine[k] - base[k] for k in shared]
    interval = mean_interval(differences, seed=seed)
    return {
        "mean_difference": interval.mean,
        "low": interval.low,
        "high": interval.high,
        "n": len(shared),
        "p_signflip": signflip_test(differences, seed=seed).p_value,
    }


def condition_summary(
    transcripts: Sequence[dict[str, Any]],
    baseline: Sequence[dict[str, Any]],
    *,
    layer: int,
    floor: float,
    always_capped: bool,
) -> dict[str, Any]:
    """One row of the comparison: projection held, turns capped, replies changed, cost.

    Example:
        >>> t = {"scenario": "s", "projections": {"layers": [3], "per_turn": [[1.0], [3.0]]},
        ...      "messages": [{"role": "assistant", "content": "a"},
        ...                   {"role": "assistant", "content": "b"}]}
        >>> row = condition_summary([t], [t], layer=3, floor=2.0, always_capped=False)
        >>> row["mean_projection"], row["share_below_floor"], row["share_replies_changed"]
        (2.0, 0.5, 0.0)
    """
    if not transcripts:
        raise PersonaspaceError("no transcripts to summarise", fix="play the condition first")
    layers = list(transcripts[0]["projections"]["layers"])
    if layer not in layers:
        raise PersonaspaceError(
            f"the transcripts were projected at layers {layers}, not at {layer}",
            fix="run drift at the forecaster's layer (--layers)",
        )
    index = layers.index(layer)
    values = _projections(transcripts, index)
    last = [
        float(final[index])
        for t in transcripts
        if t["projections"]["per_turn"] and (final := t["projections"]["per_turn"][-1]) is not None
    ]
    mine, base = _replies(transcripts), _replies(baseline)
    shared = [k for k in mine if k in base]
    decisions = [d for t in transcripts for d in t.get("forecast", [])]
    generate_s = [s for t in transcripts for s in t.get("generate_seconds", [])]
    forecast_s = [float(d["seconds"]) for d in decisions]
    pairs = [
        (float(d["forecast"]), values.get((str(t["scenario"]), k)))
        for t in transcripts
        for k, d in enumerate(t.get("forecast", []))
        if not d["capped"]
    ]
    pairs_ok = [(f, v) for f, v in pairs if v is not None]
    scenario_means = _scenario_means(transcripts, index)
    row: dict[str, Any] = {
        "n_replies": len(values),
        "mean_projection": float(np.mean(list(values.values()))) if values else None,
        "scenario_mean_projection": mean_interval(list(scenario_means.values())).to_json(),
        "mean_last_turn": float(np.mean(last)) if last else None,
        "share_below_floor": float(np.mean([v < floor for v in values.values()]))
        if values
        else None,
        "share_turns_capped": (
            float(np.mean([bool(d["capped"]) for d in decisions]))
            if decisions
            else (1.0 if always_capped else 0.0)
        ),
        "share_replies_changed": float(np.mean([mine[k] != base[k] for k in shared]))
        if shared
        else None,
        "forecast_seconds_per_turn": float(np.mean(forecast_s)) if forecast_s else None,
        "generate_seconds_per_turn": float(np.mean(generate_s)) if generate_s else None,
    }
    if len(pairs_ok) >= 3:
        f, v = np.array(pairs_ok).T
        row["forecast_vs_actual_r_uncapped"] = float(np.corrcoef(f, v)[0, 1])
        row["n_uncapped"] = len(pairs_ok)
    return row


def compare_conditions(
    runs: dict[str, Sequence[dict[str, Any]]],
    *,
    baseline: str,
    always: str,
    triggered: str,
    layer: int,
    floor: float,
    capability: dict[str, CapabilityResult] | None = None,
) -> dict[str, Any]:
    """The comparison table: one row per condition (``condition_summary``), with its
    capability accuracy when measured.

    Example:
        >>> compare_conditions(runs, baseline="none", always="layers_11:19-p25",
        ...                    triggered="layers_11:19-p25@forecast<3.4", layer=15,
        ...                    floor=3.4)["rows"][0]["condition"]  # doctest: +SKIP
        'none'
    """
    rows = []
    for name, kind in (
        (baseline, "no capping"),
        (always, "always-on cap"),
        (triggered, "forecast-triggered cap"),
    ):
        row = condition_summary(
            runs[name], runs[baseline], layer=layer, floor=floor, always_capped=name == always
        )
        if name != baseline:
            index = list(runs[name][0]["projections"]["layers"]).index(layer)
            row["versus_baseline"] = versus_baseline(
                _scenario_means(runs[name], index), _scenario_means(runs[baseline], index)
            )
        if capability is not None and name in capability:
            row["capability"] = capability[name].to_json()
        rows.append({"condition": name, "policy": kind, **row})
    return {"layer": layer, "floor": floor, "rows": rows}
