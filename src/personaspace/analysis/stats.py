"""Rank statistics for comparing two orderings of the same roles. Pure numpy.

Spearman's rho is Pearson's correlation of average ranks (ties share the mean of the ranks
they span). Its uncertainty comes two ways: a permutation test (shuffle one ranking, count
how often a shuffled rho is at least as far from 0 as the observed one) and a percentile
bootstrap interval (resample the role pairs with replacement). Both are seeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from personaspace.errors import PersonaspaceError


def average_ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given the mean of the ranks they span.

    Example:
        >>> average_ranks([10.0, 30.0, 20.0, 30.0]).tolist()
        [1.0, 3.5, 2.0, 3.5]
    """
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(1, len(x) + 1, dtype=np.float64)
    uniques, inverse = np.unique(x, return_inverse=True)
    if len(uniques) < len(x):  # average the ranks within each tie group
        sums = np.bincount(inverse, weights=ranks)
        counts = np.bincount(inverse)
        ranks = (sums / counts)[inverse]
    return ranks


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation of two equally long sequences (NaN if one is constant).

    Example:
        >>> spearman([1, 2, 3, 4], [10, 20, 30, 40]), spearman([1, 2, 3, 4], [4, 3, 2, 1])
        (1.0, -1.0)
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise PersonaspaceError(
            f"rank correlation of lengths {len(x)} and {len(y)}", fix="pair every value"
        )
    return _pearson(average_ranks(x), average_ranks(y))


@dataclass(frozen=True)
class RankCorrelation:
    """Spearman's rho with a two-sided permutation p-value and a bootstrap interval."""

    rho: float
    n: int
    p_permutation: float
    n_permutations: int
    ci_low: float
    ci_high: float
    ci_level: float
    n_bootstrap: int

    def to_json(self) -> dict[str, float | int]:
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

    The p-value is ``(1 + #{|rho_perm| >= |rho|}) / (1 + n_permutations)``, so it is never 0.
    Bootstrap resamples whose ranks are constant (possible with ties) are skipped.

    Example:
        >>> r = rank_correlation(range(12), range(12), n_permutations=999, n_bootstrap=200)
        >>> r.rho, r.p_permutation, r.ci_low
        (1.0, 0.001, 1.0)
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rho = spearman(x, y)
    n = len(x)
    rng = np.random.default_rng(seed)
    ra, rb = average_ranks(x), average_ranks(y)
    ra_c = ra - ra.mean()
    perms = np.argsort(rng.random((n_permutations, n)), axis=1)
    shuffled = rb[perms]
    shuffled = shuffled - shuffled.mean(axis=1, keepdims=True)
    denom = np.sqrt((ra_c * ra_c).sum() * (shuffled * shuffled).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        null = (shuffled @ ra_c) / denom
    extreme = int((np.abs(null) >= abs(rho) - 1e-12).sum()) if np.isfinite(rho) else n_permutations
    boot = []
    for _ in range(n_bootstrap):
        pick = rng.integers(0, n, n)
        value = spearman(x[pick], y[pick])
        if np.isfinite(value):
            boot.append(value)
    tail = (1 - ci_level) / 2
    low, high = (
        (float(np.quantile(boot, tail)), float(np.quantile(boot, 1 - tail)))
        if boot
        else (float("nan"), float("nan"))
    )
    return RankCorrelation(
        rho=rho,
        n=n,
        p_permutation=(1 + extreme) / (1 + n_permutations),
        n_permutations=n_permutations,
        ci_low=low,
        ci_high=high,
        ci_level=ci_level,
        n_bootstrap=len(boot),
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
