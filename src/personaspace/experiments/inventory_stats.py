"""What an inventory administration says: scale scores per prompt, shifts and their nulls.

Definitions (docs/inventory.md):

- An answer's **value** is the expectation of the option values under the model's
  probabilities of the option tokens, renormalised over the options; its **mass** is the
  probability the options had before renormalising (how much the model answers at all).
- An item's **score** is its value, mirrored (``low + high - value``) when reverse-keyed;
  a prompt's **scale score** is the mean score of the scale's items under that prompt.
- A scale's score **under a condition** (default, pos, neg) is the mean over items of each
  item's mean over the condition's prompts; the **shift** is pos minus neg (and each minus
  default), with a 95 % bootstrap interval over items.
- The **permutation test** compares the scale scores of the pos and neg prompts (the labels
  exchanged among the prompts); the **baseline** is the pos-minus-neg shift of the same scale
  under unrelated traits' prompt pairs.
- **Cronbach's alpha** of a scale: its items' scores with the prompts under which they were
  asked as respondents (every default, pos, neg, baseline and role prompt of the scale).
- **Calibrated** answers divide each option's renormalised probability by its mean share in
  the answers to the content-free statements under the same prompt and option order, then
  renormalise (contextual calibration); an item's value is the mean over the option orders it
  was asked in, each read in that order's meaning.
- **Order agreement** (``reading_check``): Spearman's rho across items between the item's
  value asked in the forward order and in the reversed order (each averaged over the prompts
  that ask every item). A respondent that reads the statements agrees with itself (rho > 0);
  one that answers by position gives rho <= 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
import torch

from personaspace.analysis.intervals import IntervalJSON, MeanInterval, mean_interval
from personaspace.analysis.stats import RankCorrelation, rank_correlation
from personaspace.catalogue.inventory import Inventory
from personaspace.errors import PersonaspaceError
from personaspace.experiments.inventory import ORDERS, Administration, ItemAnswer
from personaspace.experiments.stats import TestResult as PermutationResult
from personaspace.experiments.stats import permutation_test


def expected_value(option_probs: Sequence[float], values: Sequence[float]) -> float:
    """The expected option value after renormalising the probabilities over the options.

    Example:
        >>> expected_value([0.25, 0.0, 0.25, 0.0, 0.5], [1, 2, 3, 4, 5])  # (0.25 + 0.75 + 2.5) / 1
        3.5
        >>> expected_value([0.125, 0.0, 0.125, 0.0, 0.25], [1, 2, 3, 4, 5])  # renormalised
        3.5
    """
    p = np.asarray(option_probs, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if p.shape != v.shape:
        raise ValueError("one probability per option")
    total = float(p.sum())
    if not total > 0:
        raise PersonaspaceError(
            "the model gives the answer options no probability",
            fix="use option labels the model can write (e.g. digits)",
        )
    return float((p * v).sum() / total)


def cronbach_alpha(scores: np.ndarray | Sequence[Sequence[float]]) -> float:
    """Cronbach's alpha of ``scores[respondent, item]``: ``k / (k - 1) * (1 - sum of the item
    variances / variance of the respondents' totals)`` (sample variances); NaN when the
    totals do not vary.

    Example:
        >>> round(cronbach_alpha([[1, 2], [2, 3], [3, 3]]), 4)  # 2 * (1 - (1 + 1/3) / (7/3))
        0.8571
    """
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2 or x.shape[0] < 2:
        raise ValueError("alpha needs at least 2 respondents and 2 items")
    k = x.shape[1]
    total = float(x.sum(axis=1).var(ddof=1))
    if total == 0:
        return float("nan")
    return float(k / (k - 1) * (1 - x.var(axis=0, ddof=1).sum() / total))


_FLOOR = 1e-6  # a content-free share below this is taken as this (no division by zero)


def calibrated_probs(
    option_probs: Sequence[float], reference: Sequence[float]
) -> tuple[float, ...]:
    """``option_probs`` renormalised, divided by the ``reference`` shares (the content-free
    answers' mean renormalised distribution) and renormalised again.

    Example:
        >>> [round(x, 3) for x in calibrated_probs([0.6, 0.2], [0.75, 0.25])]  # the bias alone
        [0.5, 0.5]
        >>> [round(x, 3) for x in calibrated_probs([0.5, 0.5], [0.75, 0.25])]
        [0.25, 0.75]
    """
    p = np.asarray(option_probs, dtype=np.float64)
    c = np.maximum(np.asarray(reference, dtype=np.float64), _FLOOR)
    if p.shape != c.shape or not p.sum() > 0:
        raise ValueError("one positive probability vector per option")
    q = (p / p.sum()) / c
    return tuple(float(x) for x in q / q.sum())


def calibration_references(adm: Administration) -> dict[tuple[str, str], list[float]]:
    """Per (prompt id, order), the mean renormalised distribution over the options of the
    content-free statements' answers: the prompt's bias over the options."""
    grouped: dict[tuple[str, str], list[ItemAnswer]] = {}
    for a in adm.calibration:
        grouped.setdefault((a.prompt_id, a.order), []).append(a)
    return {
        key: [float(x) for x in np.mean([np.asarray(a.option_probs) / a.mass for a in rows], 0)]
        for key, rows in grouped.items()
        if all(a.mass > 0 for a in rows)
    }


def _values(inventory: Inventory, order: str) -> list[float]:
    asked = inventory if order == inventory.order else inventory.reversed()
    return [o.value for o in asked.options]


def answer_value(
    answer: ItemAnswer,
    inventory: Inventory,
    references: Mapping[tuple[str, str], Sequence[float]] | None = None,
) -> float:
    """One answer's value in agreement units (its order's option meanings), calibrated
    against ``references`` when given (``calibration_references``)."""
    probs: Sequence[float] = answer.option_probs
    if references is not None:
        key = (answer.prompt_id, answer.order)
        if key not in references:
            raise PersonaspaceError(
                f"prompt {answer.prompt_id!r} has no content-free answers ({answer.order})",
                fix="administer with calibrate=True, or score uncalibrated",
            )
        if answer.mass > 0:
            probs = calibrated_probs(probs, references[key])
    return expected_value(probs, _values(inventory, answer.order))


def answer_values(
    adm: Administration, inventory: Inventory, *, calibrated: bool = False
) -> dict[tuple[str, str], float]:
    """Each (prompt id, item id)'s value in agreement units: the mean over the option orders
    it was asked in, calibrated when asked (see the module's definitions).

    Example:
        >>> from personaspace.catalogue.inventory import load_inventory
        >>> inv = load_inventory()
        >>> first = (1.0, 0.0, 0.0, 0.0, 0.0)  # always "1": disagree, then (reversed) agree
        >>> adm = Administration([], [ItemAnswer("p", "E01", first),
        ...                           ItemAnswer("p", "E01", first, "reversed")], None, None)
        >>> answer_values(adm, inv)
        {('p', 'E01'): 3.0}
    """
    references = calibration_references(adm) if calibrated else None
    grouped: dict[tuple[str, str], list[float]] = {}
    for a in adm.answers:
        grouped.setdefault((a.prompt_id, a.item_id), []).append(
            answer_value(a, inventory, references)
        )
    return {key: float(np.mean(v)) for key, v in grouped.items()}


def item_scores(
    adm: Administration, inventory: Inventory, *, calibrated: bool = False
) -> dict[tuple[str, str], float]:
    """Each (prompt id, item id)'s keyed score (``answer_values``, mirrored when reverse-keyed)."""
    keyed = {i.id: i.keyed for i in inventory.items}
    return {
        (prompt, item): inventory.keyed_value(value, keyed[item])
        for (prompt, item), value in answer_values(adm, inventory, calibrated=calibrated).items()
    }


@dataclass(frozen=True)
class ReadingCheck:
    """Does the respondent read the statements? ``agreement`` is Spearman's rho across items
    between their forward-order and reversed-order values (each the mean over ``prompts``,
    the prompts that ask every item), with a permutation p and a bootstrap interval."""

    calibrated: bool
    prompts: int
    agreement: RankCorrelation

    def to_json(self) -> dict[str, Any]:
        return {
            "calibrated": self.calibrated,
            "prompts": self.prompts,
            "order_agreement": self.agreement.to_json(),
        }


def reading_check(
    adm: Administration, inventory: Inventory, *, calibrated: bool = False, seed: int = 0
) -> ReadingCheck:
    """The order agreement of an administration asked in both option orders.

    Example:
        >>> check = reading_check(adm, load_inventory(), calibrated=True)  # doctest: +SKIP
        >>> check.agreement.rho > 0 and check.agreement.p_permutation < 0.05  # doctest: +SKIP
        True
    """
    if {a.order for a in adm.answers} != set(ORDERS):
        raise PersonaspaceError(
            "the reading check needs the statements asked in both option orders",
            fix="administer with orders=('forward', 'reversed')",
        )
    every = {i.trait for i in inventory.items}
    prompts = {p.id for p in adm.prompts if every <= set(p.scales)}
    if not prompts:
        raise PersonaspaceError(
            "no prompt asks every item", fix="administer under the default prompts"
        )
    references = calibration_references(adm) if calibrated else None
    sums: dict[tuple[str, str], list[float]] = {}
    for a in adm.answers:
        if a.prompt_id in prompts:
            sums.setdefault((a.item_id, a.order), []).append(answer_value(a, inventory, references))
    items = [i.id for i in inventory.items if (i.id, "forward") in sums]
    forward = [float(np.mean(sums[(i, "forward")])) for i in items]
    backward = [float(np.mean(sums[(i, "reversed")])) for i in items]
    return ReadingCheck(calibrated, len(prompts), rank_correlation(forward, backward, seed=seed))


def option_shares(adm: Administration, item_ids: Sequence[str] | None = None) -> list[float]:
    """The mean over answers (of ``item_ids``, default all) of the option probabilities
    renormalised over the options: which options the model favours whatever the statement
    (a content-blind model puts the same share on each item's options).

    Example:
        >>> from personaspace.experiments.inventory import ItemAnswer
        >>> answers = [ItemAnswer("p", "a", (0.2, 0.2)), ItemAnswer("p", "b", (0.3, 0.1))]
        >>> option_shares(Administration([], answers, None, None))
        [0.625, 0.375]
    """
    wanted = None if item_ids is None else set(item_ids)
    rows = [
        np.asarray(a.option_probs, dtype=np.float64) / a.mass
        for a in adm.answers
        if (wanted is None or a.item_id in wanted) and a.mass > 0
    ]
    if not rows:
        raise PersonaspaceError("no answers to average", fix="administer the inventory first")
    return [float(x) for x in np.mean(rows, axis=0)]


def prompt_projections(
    adm: Administration, scale_items: Sequence[str], unit: torch.Tensor
) -> dict[str, float]:
    """Per prompt, the mean over the scale's answers of the answer-position state projected
    on ``unit`` (``h . u``).

    Example:
        >>> from personaspace.experiments.inventory import ItemAnswer
        >>> answers = [ItemAnswer("p", "a", (1.0,)), ItemAnswer("p", "b", (1.0,))]
        >>> adm = Administration([], answers, 0, torch.tensor([[1.0, 0.0], [3.0, 1.0]]))
        >>> prompt_projections(adm, ["a", "b"], torch.tensor([1.0, 0.0]))
        {'p': 2.0}
    """
    if adm.states is None:
        raise PersonaspaceError("the administration kept no states", fix="administer with a layer")
    wanted = set(scale_items)
    sums: dict[str, list[float]] = {}
    projected = (adm.states.double() @ unit.double()).tolist()
    for answer, value in zip(adm.answers, projected):
        if answer.item_id in wanted:
            sums.setdefault(answer.prompt_id, []).append(value)
    return {p: float(np.mean(v)) for p, v in sums.items()}


class ScaleJSON(TypedDict):
    scale: str
    n_items: int
    default: IntervalJSON
    pos: IntervalJSON
    neg: IntervalJSON
    shift: IntervalJSON
    pos_minus_default: IntervalJSON
    neg_minus_default: IntervalJSON
    shift_keyed: float | None
    shift_reversed: float | None
    permutation: dict[str, Any]
    baseline_shifts: dict[str, float]
    baseline_p: float | None
    alpha: float | None
    alpha_respondents: int
    mass: dict[str, float]
    option_shares: list[float]
    direction: str | None
    correlation: dict[str, float | int] | None
    calibrated: bool


@dataclass(frozen=True)
class ScaleResult:
    """One scale's figures (see the module's definitions); ``correlation`` is Spearman's rho
    across prompts between the projection on ``direction`` and the scale score."""

    scale: str
    n_items: int
    default: MeanInterval
    pos: MeanInterval
    neg: MeanInterval
    shift: MeanInterval
    pos_minus_default: MeanInterval
    neg_minus_default: MeanInterval
    shift_keyed: float
    shift_reversed: float
    permutation: PermutationResult
    baseline_shifts: dict[str, float]
    baseline_p: float | None
    alpha: float
    alpha_respondents: int
    mass: dict[str, float]
    option_shares: list[float]
    direction: str | None = None
    correlation: RankCorrelation | None = None
    calibrated: bool = False

    def to_json(self) -> ScaleJSON:
        def finite(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            "scale": self.scale,
            "n_items": self.n_items,
            "default": self.default.to_json(),
            "pos": self.pos.to_json(),
            "neg": self.neg.to_json(),
            "shift": self.shift.to_json(),
            "pos_minus_default": self.pos_minus_default.to_json(),
            "neg_minus_default": self.neg_minus_default.to_json(),
            "shift_keyed": finite(self.shift_keyed),
            "shift_reversed": finite(self.shift_reversed),
            "permutation": {
                "statistic": self.permutation.statistic,
                "p": self.permutation.p_value,
                "n_prompts": self.permutation.n,
                "exact": self.permutation.exact,
            },
            "baseline_shifts": self.baseline_shifts,
            "baseline_p": self.baseline_p,
            "alpha": finite(self.alpha),
            "alpha_respondents": self.alpha_respondents,
            "mass": self.mass,
            "option_shares": self.option_shares,
            "direction": self.direction,
            "correlation": self.correlation.to_json() if self.correlation is not None else None,
            "calibrated": self.calibrated,
        }


def _mean_over(scores: Mapping[tuple[str, str], float], prompts: Sequence[str], item: str) -> float:
    return float(np.mean([scores[(p, item)] for p in prompts]))


def summarise_scale(
    adm: Administration,
    inventory: Inventory,
    scale: str,
    *,
    projections: Mapping[str, float] | None = None,
    direction: str | None = None,
    calibrated: bool = False,
    seed: int = 0,
) -> ScaleResult:
    """The figures of one scale from an administration (``inventory_prompts`` layout),
    from calibrated answers when ``calibrated`` (see the module's definitions).

    ``projections`` (prompt id -> projection, ``prompt_projections``) adds the rank
    correlation across prompts with the scale score.
    """
    items = inventory.items_of(scale)
    scores = item_scores(adm, inventory, calibrated=calibrated)
    asked = [p for p in adm.prompts if scale in p.scales]
    by_kind = {k: [p.id for p in asked if p.kind == k] for k in ("default", "pos", "neg")}
    for kind, ids in by_kind.items():
        if len(ids) < (1 if kind == "default" else 2):
            raise PersonaspaceError(
                f"{scale!r} has too few {kind} prompts ({len(ids)})",
                fix="administer it under the default prompt and 2 or more prompts per pole",
            )
    mean = {
        k: np.array([_mean_over(scores, ids, i.id) for i in items]) for k, ids in by_kind.items()
    }
    keyed = np.array([i.keyed for i in items])
    shift_items = mean["pos"] - mean["neg"]

    def scale_score(prompt: str) -> float:
        return float(np.mean([scores[(prompt, i.id)] for i in items]))

    permutation = permutation_test(
        [scale_score(p) for p in by_kind["pos"]],
        [scale_score(p) for p in by_kind["neg"]],
        seed=seed,
    )
    baseline: dict[str, float] = {}
    for p in asked:
        if p.kind == "baseline_pos":
            partner = p.id.replace("baseline_pos/", "baseline_neg/", 1)
            if any(q.id == partner for q in asked):
                baseline[p.name] = scale_score(p.id) - scale_score(partner)
    observed = float(shift_items.mean())
    baseline_p = (
        (1 + sum(abs(b) >= abs(observed) - 1e-12 for b in baseline.values())) / (1 + len(baseline))
        if baseline
        else None
    )
    matrix = np.array([[scores[(p.id, i.id)] for i in items] for p in asked])
    mass = {
        k: float(np.mean([a.mass for a in adm.answers if a.prompt_id in set(ids)]))
        for k, ids in by_kind.items()
    }
    correlation = None
    if projections is not None:
        shared = [p.id for p in asked if p.id in projections]
        if len(shared) >= 3:
            correlation = rank_correlation(
                [projections[p] for p in shared], [scale_score(p) for p in shared], seed=seed
            )
    return ScaleResult(
        scale=scale,
        n_items=len(items),
        default=mean_interval(mean["default"], seed=seed),
        pos=mean_interval(mean["pos"], seed=seed),
        neg=mean_interval(mean["neg"], seed=seed),
        shift=mean_interval(shift_items, seed=seed),
        pos_minus_default=mean_interval(mean["pos"] - mean["default"], seed=seed),
        neg_minus_default=mean_interval(mean["neg"] - mean["default"], seed=seed),
        shift_keyed=float(shift_items[keyed > 0].mean()) if (keyed > 0).any() else math.nan,
        shift_reversed=float(shift_items[keyed < 0].mean()) if (keyed < 0).any() else math.nan,
        permutation=permutation,
        baseline_shifts=baseline,
        baseline_p=baseline_p,
        alpha=cronbach_alpha(matrix) if len(asked) >= 2 else math.nan,
        alpha_respondents=len(asked),
        mass=mass,
        option_shares=option_shares(adm, [i.id for i in items]),
        direction=direction,
        correlation=correlation,
        calibrated=calibrated,
    )


def _fmt(x: float | None, spec: str = "+.2f") -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, spec)


def _interval(m: MeanInterval) -> str:
    return f"{_fmt(m.mean)} [{_fmt(m.low)}, {_fmt(m.high)}]"


def scale_table(results: Sequence[ScaleResult]) -> str:
    """The results as an aligned text table (one row per scale).

    Scores are on the inventory's scale (1..5 for the built-in one); ``pos-neg`` carries
    its 95 % interval over items, ``perm p`` the permutation test of pos vs neg prompts,
    ``base max|d|`` the largest shift under unrelated prompt pairs and ``base p`` the share
    of them at least as large as the observed shift (with the observed one counted).
    """
    header = (
        "trait",
        "default",
        "pos",
        "neg",
        "pos-neg [95% CI]",
        "perm p",
        "base max|d|",
        "base p",
        "alpha (n)",
        "mass",
        "rho proj~score [95% CI] p",
    )
    rows = [header]
    for r in results:
        base = max((abs(b) for b in r.baseline_shifts.values()), default=None)
        rho = "n/a"
        if r.correlation is not None:
            c = r.correlation
            rho = f"{_fmt(c.rho)} [{_fmt(c.ci_low)}, {_fmt(c.ci_high)}] {c.p_permutation:.3g}"
        rows.append(
            (
                r.scale,
                _fmt(r.default.mean, ".2f"),
                _fmt(r.pos.mean, ".2f"),
                _fmt(r.neg.mean, ".2f"),
                _interval(r.shift),
                f"{r.permutation.p_value:.3g}",
                _fmt(base, ".2f"),
                "n/a" if r.baseline_p is None else f"{r.baseline_p:.2f}",
                f"{_fmt(r.alpha, '.2f')} ({r.alpha_respondents})",
                _fmt(float(np.mean(list(r.mass.values()))), ".2f"),
                rho,
            )
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows
    )
