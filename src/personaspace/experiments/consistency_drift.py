"""Does capping keep the Assistant consistent? Consistency of a drift run, per condition.

A drift run (``personaspace drift --out DIR``) plays the same scenarios under every
condition, with the same seeds: its transcripts ``DIR/transcripts/<condition>/*.json``
are paired by scenario. Each conversation gets the prompt-to-line and line-to-line
measures (``experiments.consistency``; the Q&A measure would need the answers generated
under each condition's intervention, so it is not computed here). Per condition: the mean
over scenarios, per domain and overall; and against the baseline condition (``none``),
the per-scenario differences (condition minus baseline) with two paired tests: the exact
Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, zero differences dropped) and the
sign-flip test of their mean (``experiments.stats.signflip_test``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from personaspace.errors import PersonaspaceError
from personaspace.experiments.conditions import BASELINE
from personaspace.experiments.consistency import (
    ConsistencyReport,
    ConversationScore,
    score_consistency,
)
from personaspace.experiments.stats import signflip_test
from personaspace.judge.consistency import ConsistencyJudge
from personaspace.judge.personas import Persona
from personaspace.monitor.transcripts import Transcript, parse_transcript, read_transcripts

DRIFT_MEASURES: tuple[str, ...] = ("prompt_to_line", "line_to_line")


@dataclass(frozen=True)
class PairedTest:
    """Paired differences (condition minus baseline) over scenarios and their two tests."""

    n: int
    mean_difference: float | None
    n_better: int
    n_worse: int
    p_wilcoxon: float | None
    p_signflip: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "mean_difference": self.mean_difference,
            "n_better": self.n_better,
            "n_worse": self.n_worse,
            "p_wilcoxon": self.p_wilcoxon,
            "p_signflip": self.p_signflip,
        }


def paired_test(differences: Sequence[float], seed: int = 0) -> PairedTest:
    """Wilcoxon signed-rank (exact where scipy can) and sign-flip p-values, two-sided.

    All-zero differences give p = 1 (nothing to rank); none give ``None``.

    Example:
        >>> t = paired_test([4.0, -1.0, 2.0, 3.0])
        >>> t.mean_difference, t.p_wilcoxon, t.p_signflip  # 4 of 16 sign patterns each
        (2.0, 0.25, 0.25)
    """
    x = np.asarray([d for d in differences if np.isfinite(d)], dtype=np.float64)
    if x.size == 0:
        return PairedTest(0, None, 0, 0, None, None)
    better, worse = int((x > 0).sum()), int((x < 0).sum())
    if better + worse == 0:
        return PairedTest(int(x.size), 0.0, 0, 0, 1.0, 1.0)
    p_wilcoxon = float(stats.wilcoxon(x, zero_method="wilcox").pvalue)
    p_signflip = signflip_test(x, seed=seed).p_value
    return PairedTest(int(x.size), float(x.mean()), better, worse, p_wilcoxon, p_signflip)


def read_drift_transcripts(folder: str | Path) -> dict[str, list[Transcript]]:
    """``{condition: [transcript, ...]}`` from a drift run's ``transcripts/`` folder, the
    baseline first, then the others by name; each condition's transcripts by scenario.

    Example:
        >>> runs = read_drift_transcripts("runs/drift-smollm2")  # doctest: +SKIP
        >>> sorted(runs)  # doctest: +SKIP
        ['layers_11:19-p25', 'none']
    """
    root = Path(folder) / "transcripts"
    files = sorted(root.glob("*/*.json")) if root.is_dir() else []
    if not files:
        raise PersonaspaceError(
            f"{folder} holds no drift transcripts (transcripts/<condition>/*.json)",
            fix="give the --out folder of `personaspace drift`",
        )
    runs: dict[str, list[Transcript]] = {}
    for path in files:
        for t in read_transcripts(path):
            condition = str(t.meta.get("condition") or path.parent.name)
            runs.setdefault(condition, []).append(t)
    for transcripts in runs.values():
        transcripts.sort(key=lambda t: str(t.meta.get("scenario") or t.name))
    order = sorted(runs, key=lambda name: (name != BASELINE, name))
    return {name: runs[name] for name in order}


def _scenario(c: ConversationScore) -> str:
    return str(c.meta.get("scenario") or c.name)


def _means(
    conversations: Sequence[ConversationScore], measure: str
) -> tuple[float | None, dict[str, float | None]]:
    def mean(values: list[float | None]) -> float | None:
        finite = [v for v in values if v is not None]
        return float(np.mean(finite)) if finite else None

    domains = sorted({c.domain or "" for c in conversations})
    by_domain = {
        d: mean([c.mean(measure) for c in conversations if (c.domain or "") == d]) for d in domains
    }
    return mean([c.mean(measure) for c in conversations]), by_domain


def versus_baseline(
    baseline: Sequence[ConversationScore],
    other: Sequence[ConversationScore],
    measure: str,
    seed: int = 0,
) -> dict[str, PairedTest]:
    """Per domain and ``all``: the paired test of ``other - baseline`` over shared scenarios.

    Example:
        >>> from personaspace.experiments.consistency import TurnScore
        >>> def conv(s, v):
        ...     t = TurnScore(1, "", None, v, 0, 0, None, None)
        ...     return ConversationScore(s, s, "coding", {"scenario": s}, (t,))
        >>> base = [conv("a", 0.0), conv("b", 0.0), conv("c", 1.0)]
        >>> capped = [conv("a", 1.0), conv("b", 1.0), conv("c", 1.0)]
        >>> versus_baseline(base, capped, "prompt_to_line")["all"].p_wilcoxon  # 2 of 4 patterns
        0.5
    """
    base = {_scenario(c): c for c in baseline}
    diffs: dict[str, list[float]] = {"all": []}
    for c in other:
        b = base.get(_scenario(c))
        if b is None:
            continue
        x, y = c.mean(measure), b.mean(measure)
        if x is None or y is None:
            continue
        diffs["all"].append(x - y)
        diffs.setdefault(c.domain or "", []).append(x - y)
    return {key: paired_test(values, seed) for key, values in diffs.items()}


@dataclass
class DriftConsistency:
    """Per condition: the consistency report, its means, and its tests against the baseline."""

    baseline: str
    reports: dict[str, ConsistencyReport]
    seed: int = 0

    def summary(self) -> dict[str, Any]:
        """``{condition: {measure: {mean, by_domain, versus_baseline}}}`` as JSON values."""
        result: dict[str, Any] = {}
        base = self.reports.get(self.baseline)
        for name, report in self.reports.items():
            entry: dict[str, Any] = {"n": len(report.conversations)}
            for measure in DRIFT_MEASURES:
                mean, by_domain = _means(report.conversations, measure)
                block: dict[str, Any] = {"mean": mean, "by_domain": by_domain}
                if base is not None and name != self.baseline:
                    tests = versus_baseline(
                        base.conversations, report.conversations, measure, self.seed
                    )
                    block["versus_baseline"] = {k: v.to_json() for k, v in tests.items()}
                entry[measure] = block
            result[name] = entry
        return result

    def to_json(self) -> dict[str, Any]:
        """What ``consistency.json`` of a drift folder holds (the per-turn scores too)."""
        any_report = next(iter(self.reports.values()))
        return {
            "persona": any_report.persona.name,
            "judge": any_report.judge,
            "baseline": self.baseline,
            "measures": list(DRIFT_MEASURES),
            "tests": "per-scenario differences (condition - baseline): exact Wilcoxon "
            "signed-rank (zeros dropped) and sign-flip test of the mean, two-sided",
            "conditions": self.summary(),
            "per_condition": {k: r.to_json() for k, r in self.reports.items()},
        }

    def csv_text(self) -> str:
        """One row per (condition, domain, measure): mean, and the paired test's figures."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(
            [
                "condition",
                "domain",
                "measure",
                "mean",
                "n_paired",
                "mean_difference",
                "p_wilcoxon",
                "p_signflip",
            ]
        )
        for name, entry in self.summary().items():
            for measure in DRIFT_MEASURES:
                block = entry[measure]
                tests = block.get("versus_baseline", {})
                domains = {"all": block["mean"], **block["by_domain"]}
                for domain, mean in domains.items():
                    t = tests.get(domain, {})
                    row = [name, domain, measure, mean, t.get("n"), t.get("mean_difference")]
                    row += [t.get("p_wilcoxon"), t.get("p_signflip")]
                    writer.writerow(["" if v is None else v for v in row])
        return buffer.getvalue()

    def draw(self, fig: Figure) -> None:
        """Bars: each condition's mean per domain, one panel per measure."""
        summary = self.summary()
        names = list(summary)
        for k, measure in enumerate(DRIFT_MEASURES):
            ax = fig.add_subplot(1, len(DRIFT_MEASURES), k + 1)
            domains = sorted({d for e in summary.values() for d in e[measure]["by_domain"]})
            width = 0.8 / max(len(names), 1)
            for j, name in enumerate(names):
                values = [summary[name][measure]["by_domain"].get(d) for d in domains]
                xs = np.arange(len(domains)) + j * width
                ax.bar(xs, [np.nan if v is None else v for v in values], width, label=name)
            ax.set_xticks(np.arange(len(domains)) + 0.4 - width / 2, domains, fontsize=8)
            ax.set_ylim(0, 1.05)
            ax.set_ylabel("mean consistency")
            ax.set_title(measure.replace("_", "-"))
            if k == 0:
                ax.legend(fontsize=7, loc="lower left")


def consistency_by_condition(
    folder: str | Path,
    persona: Persona,
    judge: ConsistencyJudge,
    *,
    baseline: str = BASELINE,
    seed: int = 0,
) -> DriftConsistency:
    """Prompt-to-line and line-to-line consistency of every condition of a drift run, with
    paired tests against ``baseline`` (see the module docstring).

    Example:
        >>> from personaspace.judge.consistency import make_consistency_judge
        >>> from personaspace.judge.personas import assistant_persona
        >>> result = consistency_by_condition("runs/drift-smollm2", assistant_persona(),
        ...                                   make_consistency_judge("local"))  # doctest: +SKIP
        >>> result.summary()["none"]["prompt_to_line"]["mean"]  # doctest: +SKIP
        0.93
    """
    runs = read_drift_transcripts(folder)
    reports = {name: score_consistency(ts, persona, judge) for name, ts in runs.items()}
    return DriftConsistency(baseline, reports, seed)


def consistency_of_runs(
    runs: dict[str, list[dict[str, Any]]],
    persona: Persona,
    judge: ConsistencyJudge,
    *,
    baseline: str = BASELINE,
    seed: int = 0,
) -> DriftConsistency:
    """The same from the transcripts ``run_drift`` returns (``{condition: [transcript
    dict, ...]}``), for the drift report to call without reading the folder again.

    Example:
        >>> from personaspace.judge.consistency_local import LocalConsistencyJudge
        >>> from personaspace.judge.personas import assistant_persona
        >>> t = {"scenario": "s", "domain": "coding", "messages": [
        ...     {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
        >>> r = consistency_of_runs({"none": [t]}, assistant_persona(),
        ...                         LocalConsistencyJudge(negation=False))
        >>> r.summary()["none"]["prompt_to_line"]["mean"]
        1.0
    """
    reports = {}
    for name, records in runs.items():
        transcripts = [
            parse_transcript(r, f"{name}/{r.get('scenario', i)}", str(r.get("scenario", i)))
            for i, r in enumerate(records)
        ]
        reports[name] = score_consistency(transcripts, persona, judge)
    return DriftConsistency(baseline, reports, seed)
