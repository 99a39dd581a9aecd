"""What a drift run shows: mean projection by domain and turn, the change over a
conversation, its significance, and the effect of each capping condition.

Statistics are per scenario (the unit of replication): a scenario's *change* is its last
reply's projection minus its first; its *slope* is the least-squares trend over its turns.
A domain *drifts away* from the Assistant when its mean change is negative with a sign-flip
p-value below ``ALPHA``. The published finding is *reproduced* under a condition when
therapy and AI-self scenarios together drift away, drift more than coding (two-sample
permutation test, p < ``ALPHA``) and coding does not drift away.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from personaspace.catalogue import SCENARIO_DOMAINS
from personaspace.errors import PersonaspaceError
from personaspace.experiments.stats import permutation_test, sign_test, signflip_test, slope

ALPHA = 0.05
AWAY_DOMAINS: tuple[str, ...] = ("therapy", "ai_self")
CONTROL_DOMAINS: tuple[str, ...] = ("coding",)
RULE = (
    f"a domain drifts away when its mean last-minus-first change is < 0 with sign-flip "
    f"p < {ALPHA}; the finding is reproduced when therapy+ai_self drift away, drift more "
    f"than coding (permutation p < {ALPHA}) and coding does not drift away"
)


def scenario_series(transcript: dict[str, Any], layer: int) -> np.ndarray:
    """The per-turn projections of one transcript at ``layer`` (NaN for empty replies, and
    for values stored as ``null``).

    Example:
        >>> t = {"projections": {"layers": [3, 7], "per_turn": [[1.0, 2.0], None, [5.0, 6.0]]}}
        >>> scenario_series(t, 7).tolist()
        [2.0, nan, 6.0]
    """
    projections = transcript["projections"]
    if layer not in projections["layers"]:
        raise PersonaspaceError(
            f"the transcripts were projected at layers {projections['layers']}, not {layer}",
            fix="choose one of those layers",
        )
    column = projections["layers"].index(layer)
    return np.array(
        [
            np.nan if row is None or row[column] is None else float(row[column])
            for row in projections["per_turn"]
        ],
        dtype=np.float64,
    )


def change(series: np.ndarray) -> float:
    """Last finite value minus first finite value (NaN with fewer than two).

    Example:
        >>> change(np.array([np.nan, 2.0, 3.0, 1.5, np.nan]))
        -0.5
    """
    finite = series[np.isfinite(series)]
    return float(finite[-1] - finite[0]) if finite.size >= 2 else float("nan")


def _ordered_domains(transcripts: Sequence[dict[str, Any]]) -> list[str]:
    present = {t["domain"] for t in transcripts}
    return [d for d in SCENARIO_DOMAINS if d in present] + sorted(present - set(SCENARIO_DOMAINS))


def turn_table(
    transcripts: Sequence[dict[str, Any]], layer: int, condition: str
) -> list[dict[str, Any]]:
    """Rows ``{condition, domain, turn, mean, std, n}``: mean projection by domain and turn.

    Example:
        >>> ts = [{"domain": "coding", "projections": {"layers": [0], "per_turn": [[1.0], [3.0]]}},
        ...       {"domain": "coding", "projections": {"layers": [0], "per_turn": [[3.0]]}}]
        >>> [(r["turn"], r["mean"], r["n"]) for r in turn_table(ts, 0, "none")]
        [(1, 2.0, 2), (2, 3.0, 1)]
    """
    rows = []
    for domain in _ordered_domains(transcripts):
        series = [scenario_series(t, layer) for t in transcripts if t["domain"] == domain]
        for turn in range(max(len(s) for s in series)):
            values = np.array([s[turn] for s in series if turn < len(s) and np.isfinite(s[turn])])
            rows.append(
                {
                    "condition": condition,
                    "domain": domain,
                    "turn": turn + 1,
                    "mean": float(values.mean()) if values.size else None,
                    "std": float(values.std(ddof=1)) if values.size > 1 else None,
                    "n": int(values.size),
                }
            )
    return rows


def change_stats(changes: Sequence[float], slopes: Sequence[float], seed: int = 0) -> dict:
    """Mean change with its sign-flip and sign-test p-values, and the mean slope.

    Example:
        >>> s = change_stats([-1.0, -2.0, -3.0], [-0.5, -0.5, -1.0])
        >>> s["mean_change"], s["p_signflip"], s["n_negative"], s["mean_slope"]
        (-2.0, 0.25, 3, -0.6666666666666666)
    """
    x = np.array([c for c in changes if np.isfinite(c)], dtype=np.float64)
    s = np.array([v for v in slopes if np.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return {"n": 0, "mean_change": None, "p_signflip": None, "p_sign": None}
    flip, signs = signflip_test(x, seed=seed), sign_test(x)
    return {
        "n": int(x.size),
        "mean_change": float(x.mean()),
        "std_change": float(x.std(ddof=1)) if x.size > 1 else None,
        "n_negative": int((x < 0).sum()),
        "p_signflip": flip.p_value,
        "p_sign": signs.p_value,
        "exact": flip.exact,
        "mean_slope": float(s.mean()) if s.size else None,
    }


def _away(stats: dict[str, Any]) -> bool:
    return bool(stats["n"]) and stats["mean_change"] < 0 and stats["p_signflip"] < ALPHA


def condition_summary(
    transcripts: Sequence[dict[str, Any]], layer: int, seed: int = 0
) -> dict[str, Any]:
    """Per-domain changes and tests, the pooled and between-domain tests, and the verdict."""
    per_scenario = {t["scenario"]: (t["domain"], scenario_series(t, layer)) for t in transcripts}
    domains = _ordered_domains(transcripts)

    def stats_for(chosen: Sequence[str]) -> dict[str, Any]:
        series = [s for d, s in per_scenario.values() if d in chosen]
        result = change_stats([change(s) for s in series], [slope(s) for s in series], seed)
        firsts = [s[np.isfinite(s)][0] for s in series if np.isfinite(s).any()]
        lasts = [s[np.isfinite(s)][-1] for s in series if np.isfinite(s).any()]
        result["first_mean"] = float(np.mean(firsts)) if firsts else None
        result["last_mean"] = float(np.mean(lasts)) if lasts else None
        result["mean_projection"] = float(np.nanmean(np.concatenate(series))) if series else None
        return result

    by_domain = {d: stats_for([d]) for d in domains}
    summary: dict[str, Any] = {"domains": by_domain}
    away = [d for d in AWAY_DOMAINS if d in domains]
    control = [d for d in CONTROL_DOMAINS if d in domains]
    if away:
        summary["pooled_away"] = {"domains": away, **stats_for(away)}
    if away and control:
        a = [change(s) for d, s in per_scenario.values() if d in away]
        b = [change(s) for d, s in per_scenario.values() if d in control]
        test = permutation_test(a, b, seed=seed)
        summary["between"] = {
            "groups": [away, control],
            "difference": test.statistic,
            "p_value": test.p_value,
            "exact": test.exact,
        }
        summary["finding"] = {
            "away_domains": [d for d in domains if _away(by_domain[d])],
            "pooled_away": _away(summary["pooled_away"]),
            "more_than_control": test.statistic < 0 and test.p_value < ALPHA,
            "control_drifts_away": any(_away(by_domain[d]) for d in control),
        }
        f = summary["finding"]
        f["reproduced"] = (
            f["pooled_away"] and f["more_than_control"] and not f["control_drifts_away"]
        )
    return summary


def cap_effect(
    baseline: Sequence[dict[str, Any]],
    capped: Sequence[dict[str, Any]],
    layer: int,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Per domain: mean over paired scenarios of (capped - baseline) mean projection.

    The sign-flip test is seeded by ``seed`` (it only matters past 17 paired scenarios,
    where the null distribution is drawn at random).

    Example:
        >>> b = [{"scenario": "s", "domain": "coding",
        ...       "projections": {"layers": [0], "per_turn": [[1.0], [2.0]]}}]
        >>> c = [{"scenario": "s", "domain": "coding",
        ...       "projections": {"layers": [0], "per_turn": [[2.0], [4.0]]}}]
        >>> cap_effect(b, c, 0)["coding"]["mean_difference"]
        1.5
    """
    base = {t["scenario"]: t for t in baseline}
    diffs: dict[str, list[float]] = {}
    for t in capped:
        if t["scenario"] in base:
            d = np.nanmean(scenario_series(t, layer)) - np.nanmean(
                scenario_series(base[t["scenario"]], layer)
            )
            diffs.setdefault(t["domain"], []).append(float(d))
    return {
        domain: {
            "n": len(values),
            "mean_difference": float(np.mean(values)),
            "p_signflip": signflip_test(values, seed=seed).p_value,
        }
        for domain, values in diffs.items()
    }


def summarize_drift(
    runs: dict[str, list[dict[str, Any]]], layer: int, baseline_name: str = "none", seed: int = 0
) -> dict[str, Any]:
    """Everything ``drift.json`` reports at one layer, for every condition.

    Example:
        >>> s = summarize_drift(runs, 15)  # doctest: +SKIP
        >>> s["conditions"]["none"]["finding"]["reproduced"]  # doctest: +SKIP
        False
    """
    summary: dict[str, Any] = {"layer": layer, "alpha": ALPHA, "rule": RULE, "table": []}
    summary["conditions"] = {}
    for name, transcripts in runs.items():
        summary["table"] += turn_table(transcripts, layer, name)
        summary["conditions"][name] = condition_summary(transcripts, layer, seed)
        if name != baseline_name and baseline_name in runs:
            summary["conditions"][name]["versus_baseline"] = cap_effect(
                runs[baseline_name], transcripts, layer, seed
            )
    return summary
