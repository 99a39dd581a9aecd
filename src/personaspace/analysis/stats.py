"""Rank statistics for comparing two orderings of the same roles, on top of ``scipy.stats``.

Spearman's rho is Pearson's correlation of average ranks (``scipy.stats.rankdata``: ties
share the mean of the ranks they span). Its uncertainty comes two ways: a permutation test
(``scipy.stats.permutation_test``: shuffle one ranking, count how often a shuffled rho is at
least as far from 0 as the observed one) and a percentile bootstrap interval
(``scipy.stats.bootstrap``: resample the role pairs with replacement). Both are seeded.

The correlation of the ranks is written out, ``sum(ab) / sqrt(sum(aa) * sum(bb))`` on
centred ranks, rather than taken from ``scipy.stats.spearmanr`` or ``pearsonr``: those
normalise each vector before the dot product, so a perfect ordering can come out one or two
ulps short of 1 (``spearmanr(range(10), range(10, 0, -1))`` is ``-0.9999999999999999``); the
written-out form is exactly +-1 there, and the rest agrees with scipy to about 1e-15.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from personaspace.errors import PersonaspaceError

_NAN = float("nan")


def average_ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given the mean of the ranks they span (``scipy.stats.rankdata``).

    Example:
        >>> average_ranks([10.0, 30.0, 20.0, 30.0]).tolist()
        [1.0, 3.5, 2.0, 3.5]
    """
    return np.asarray(stats.rankdata(np.asarray(values, dtype=np.float64)), dtype=np.float64)


def _correlation(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pearson's r along ``axis`` (broadcasting), NaN where either side is constant."""
    a = a - a.mean(axis=axis, keepdims=True)
    b = b - b.mean(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(
            (a * b).sum(axis=axis) / np.sqrt((a * a).sum(axis=axis) * (b * b).sum(axis=axis))
        )


def _rank_correlation_along(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho along ``axis``: the vectorised statistic the bootstrap resamples."""
    return _correlation(stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis), axis)


def _pair(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> np.ndarray:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise PersonaspaceError(
            f"rank correlation of lengths {len(x)} and {len(y)}", fix="pair every value"
        )
    return np.stack([x, y])


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation of two equally long sequences (NaN if one is constant).

    Example:
        >>> spearman([1, 2, 3, 4], [10, 20, 30, 40]), spearman([1, 2, 3, 4], [4, 3, 2, 1])
        (1.0, -1.0)
    """
    x, y = _pair(a, b)
    return float(_rank_correlation_along(x, y))


@dataclass(frozen=True)
class RankCorrelation:
    """Spearman's rho with a two-sided permutation p-value and a bootstrap interval.

    ``n_permutations`` is how many arrangements the p-value counts over (all ``n!`` when
    that is no more than were asked for); ``n_bootstrap`` how many resamples had a finite rho.
    """

    rho: float
    n: int
    p_permutation: float
    n_permutations: int
    ci_low: float
    ci_high: float
    ci_level: float
    n_bootstrap: int

    def to_json(self) -> dict[str, float | int]:
        """The figures rounded for a report.

        Example:
            >>> RankCorrelation(0.123456, 5, 0.5, 99, 0.0, 1.0, 0.95, 10).to_json()["rho"]
            0.1235
        """
        return {
            "rho": round(self.rho, 4),
            "n": self.n,
            "p_permutation": round(self.p_permutation, 5),
            "n_permutations": self.n_permutations,
            "ci_low": round(self.ci_low, 4),
            "ci_high": round(self.ci_high, 4),
            "ci_level": self.ci_level,
            "n_bootstrap": self.n_bootstrap,
        }


def _permutation_p(
    ranks_a: np.ndarray, ranks_b: np.ndarray, n_permutations: int, rng: np.random.Generator
) -> tuple[float, int]:
    """Two-sided p of |rho| over shuffles of ``ranks_a``, and how many arrangements it counts.

    scipy enumerates all ``n!`` orders when ``n! <= n_permutations`` (p = hits / n!), and
    otherwise draws ``n_permutations`` of them (p = (1 + hits) / (1 + n_permutations)).
    """

    def statistic(shuffled: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.abs(_correlation(shuffled, ranks_b, axis))

    res = stats.permutation_test(
        (ranks_a,),
        statistic,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=n_permutations,
        alternative="greater",
        rng=rng,
    )
    return float(res.pvalue), int(np.size(res.null_distribution))


def _bootstrap_interval(
    pairs: np.ndarray, n_bootstrap: int, ci_level: float, rng: np.random.Generator
) -> tuple[float, float, int]:
    """Percentile interval of rho over resampled pairs (NaN resamples skipped), and how many."""
    with warnings.catch_warnings():  # scipy warns of the NaN resamples this skips
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap(
            (pairs[0], pairs[1]),
            _rank_correlation_along,
            paired=True,
            vectorized=True,
            n_resamples=n_bootstrap,
            confidence_level=ci_level,
            method="percentile",
            rng=rng,
        )
    boot = np.asarray(res.bootstrap_distribution, dtype=np.float64)
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return _NAN, _NAN, 0
    tail = (1 - ci_level) / 2
    return float(np.quantile(boot, tail)), float(np.quantile(boot, 1 - tail)), int(boot.size)


def rank_correlation(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    n_permutations: int = 10_000,
    n_bootstrap: int = 2_000,
    ci_level: float = 0.95,
    seed: int = 0,
) -> RankCorrelation:
    """Spearman's rho of ``a`` and ``b``, a permutation test and a bootstrap interval.

    The p-value is ``(1 + #{|rho_perm| >= |rho|}) / (1 + n_permutations)`` over random
    shuffles, so it is never 0; when ``n!`` is no more than ``n_permutations`` every order is
    counted instead. A constant input (rho NaN) gets p = 1 and no interval. Bootstrap
    resamples whose ranks are constant (possible with ties) are skipped.

    Example:
        >>> r = rank_correlation(range(12), range(12), n_permutations=999, n_bootstrap=200)
        >>> r.rho, r.p_permutation, r.ci_low
        (1.0, 0.001, 1.0)
    """
    pairs = _pair(a, b)
    rho, n = float(_rank_correlation_along(pairs[0], pairs[1])), pairs.shape[1]
    if not np.isfinite(rho):  # a constant side: every shuffle and resample is constant too
        return RankCorrelation(rho, n, 1.0, n_permutations, _NAN, _NAN, ci_level, 0)
    rng = np.random.default_rng(seed)
    ranks = stats.rankdata(pairs, axis=-1)
    p, counted = _permutation_p(ranks[0], ranks[1], n_permutations, rng)
    low, high, kept = _bootstrap_interval(pairs, n_bootstrap, ci_level, rng)
    return RankCorrelation(
        rho=rho,
        n=n,
        p_permutation=p,
        n_permutations=counted,
        ci_low=low,
        ci_high=high,
        ci_level=ci_level,
        n_bootstrap=kept,
    )


def end_overlap(
    a: dict[str, float], b: dict[str, float], top: int
) -> dict[str, int | float | list[str]]:
    """How many of the ``top`` highest (and lowest) names of ``a`` are among those of ``b``.

    ``chance`` is the expected overlap of two random ``top``-subsets of the shared names:
    ``top**2 / n``.

    Example:
        >>> a = {"x": 3.0, "y": 2.0, "z": 1.0, "w": 0.0}
        >>> end_overlap(a, {"x": 0.0, "y": 3.0, "z": 2.0, "w": 1.0}, 2)["top_overlap"]
        1
    """
    names = sorted(set(a) & set(b))
    by_a = sorted(names, key=lambda n: (-a[n], n))
    by_b = sorted(names, key=lambda n: (-b[n], n))
    top_a, top_b = set(by_a[:top]), set(by_b[:top])
    bottom_a, bottom_b = set(by_a[-top:]), set(by_b[-top:])
    return {
        "top": top,
        "n": len(names),
        "top_overlap": len(top_a & top_b),
        "bottom_overlap": len(bottom_a & bottom_b),
        "chance": round(top * top / len(names), 3) if names else 0.0,
        "top_shared": sorted(top_a & top_b),
        "bottom_shared": sorted(bottom_a & bottom_b),
    }
