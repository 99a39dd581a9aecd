"""Small-sample tests for drift: per-scenario changes, sign-flip and permutation tests.

The null distributions come from ``scipy.stats.permutation_test``: enumerated exactly when
they are small enough (``2**n`` sign patterns, or every split of two groups, up to
``EXACT_LIMIT``) and otherwise drawn at random with a fixed seed. All tests are two-sided
and count the observed arrangement itself, so ``p > 0`` always; a null value within
``1e-12`` of the observed one counts as at least as extreme (scipy's own tie tolerance is
relative, ``100 * eps * |observed|``, too tight for a mean near 0 of values near 1, so the
p-value is counted here from scipy's ``null_distribution``).

- ``signflip_test``: is the mean of paired differences (e.g. last-minus-first projection per
  scenario) zero? Under the null each difference is as likely positive as negative.
- ``sign_test``: the exact binomial test on the number of positive differences
  (``scipy.stats.binomtest``).
- ``permutation_test``: do two groups (e.g. therapy+AI-self vs coding changes) have the
  same mean? Under the null the group labels are exchangeable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from personaspace.errors import PersonaspaceError

EXACT_LIMIT = 1 << 17  # enumerate the null exactly up to this many arrangements (131,072)
RANDOM_DRAWS = 20_000
_EPS = 1e-12  # ties with the observed statistic count as "at least as extreme"
_BATCH = 4096  # arrangements per vectorised call, to bound memory


@dataclass(frozen=True)
class TestResult:
    """A statistic and its two-sided p-value; ``exact`` says the null was fully enumerated."""

    statistic: float
    p_value: float
    n: int
    exact: bool


def _finite(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise PersonaspaceError(f"{what} has no finite values", fix="give at least one value")
    return x


def slope(values: Sequence[float] | np.ndarray) -> float:
    """Least-squares slope of ``values`` against their index (NaNs skipped).

    Example:
        >>> slope([1.0, 3.0, 5.0]), slope([2.0, float("nan"), 0.0])
        (2.0, -1.0)
    """
    y = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(y)
    if keep.sum() < 2:
        return float("nan")
    return float(stats.linregress(np.flatnonzero(keep).astype(np.float64), y[keep]).slope)


# scipy enumerates every arrangement when asked for at least as many resamples as exist.
ALL_ARRANGEMENTS = 2**62


def _null(
    data: tuple[np.ndarray, ...],
    statistic: Callable[..., np.ndarray],
    kind: Literal["samples", "independent"],
    exact: bool,
    seed: int,
    draws: int,
) -> np.ndarray:
    """scipy's null distribution of ``statistic``: every arrangement, or ``draws`` of them."""
    res = stats.permutation_test(
        data,
        statistic,
        permutation_type=kind,
        vectorized=True,
        n_resamples=ALL_ARRANGEMENTS if exact else draws,
        batch=_BATCH,
        alternative="greater",
        rng=np.random.default_rng(seed),
    )
    return np.asarray(res.null_distribution, dtype=np.float64)


def _p_value(null: np.ndarray, observed: float, exact: bool) -> float:
    """Share of ``null`` at least ``observed`` (less ``_EPS``); drawn nulls add the observed."""
    hits = int(np.count_nonzero(null >= observed - _EPS))
    return hits / null.size if exact else (hits + 1) / (null.size + 1)


def _abs_mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.abs(np.mean(x, axis=axis))


def _abs_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.abs(np.mean(x, axis=axis) - np.mean(y, axis=axis))


def signflip_test(
    differences: Sequence[float] | np.ndarray, *, seed: int = 0, draws: int = RANDOM_DRAWS
) -> TestResult:
    """Sign-flip permutation test that the mean difference is zero (two-sided).

    Example:
        >>> r = signflip_test([1.0, 2.0, 3.0])
        >>> r.statistic, r.p_value, r.exact  # only (+,+,+) and (-,-,-) reach |mean| = 2
        (2.0, 0.25, True)
    """
    x = _finite(differences, "the differences")
    n = int(x.size)
    if n == 1:  # both signs give the same |mean| (and scipy wants two values)
        return TestResult(float(x[0]), 1.0, 1, True)
    exact = 2**n <= max(EXACT_LIMIT, draws)
    null = _null((x,), _abs_mean, "samples", exact, seed, draws)
    return TestResult(float(x.mean()), _p_value(null, abs(x.mean()), exact), n, exact)


def sign_test(differences: Sequence[float] | np.ndarray) -> TestResult:
    """Exact two-sided binomial test on the signs (zeros dropped); statistic = positives.

    Example:
        >>> r = sign_test([0.5, 1.0, 2.0, 0.1, 3.0, 0.0])
        >>> r.statistic, r.n, round(r.p_value, 4)  # 5 of 5 positive: 2 * 0.5**5
        (5.0, 5, 0.0625)
    """
    x = _finite(differences, "the differences")
    x = x[x != 0]
    n = int(x.size)
    if n == 0:
        return TestResult(0.0, 1.0, 0, True)
    k = int((x > 0).sum())
    return TestResult(float(k), float(stats.binomtest(k, n, 0.5).pvalue), n, True)


def _singleton_null(pooled: np.ndarray) -> np.ndarray:
    """|one value - mean of the rest| for each value: every split when a group has one value.

    scipy's permutation test wants two values per group; with one, the splits are just the
    choice of that value.
    """
    rest = (pooled.sum() - pooled) / (pooled.size - 1)
    return np.abs(pooled - rest)


def permutation_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    seed: int = 0,
    draws: int = RANDOM_DRAWS,
) -> TestResult:
    """Two-sample permutation test of ``mean(a) - mean(b)`` (two-sided).

    Example:
        >>> r = permutation_test([3.0, 4.0], [0.0, 1.0])
        >>> r.statistic, r.p_value  # of the 6 splits, only the observed one and its mirror
        (3.0, 0.3333333333333333)
    """
    x, y = _finite(a, "the first group"), _finite(b, "the second group")
    observed = float(x.mean() - y.mean())
    n = int(x.size + y.size)
    if min(x.size, y.size) == 1:
        null, exact = _singleton_null(np.concatenate([x, y])), True
    else:
        exact = math.comb(n, x.size) <= max(EXACT_LIMIT, draws)
        null = _null((x, y), _abs_difference, "independent", exact, seed, draws)
    return TestResult(observed, _p_value(null, abs(observed), exact), n, exact)
