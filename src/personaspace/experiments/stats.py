"""Small-sample tests for drift: per-scenario changes, sign-flip and permutation tests.

Pure numpy, no distribution tables: every p-value is a count over the null distribution,
enumerated exactly when it is small enough (``2**n`` sign patterns up to ``EXACT_LIMIT``,
or every split of two groups) and otherwise drawn at random with a fixed seed. All tests
are two-sided and count the observed arrangement itself, so ``p > 0`` always.

- ``signflip_test``: is the mean of paired differences (e.g. last-minus-first projection per
  scenario) zero? Under the null each difference is as likely positive as negative.
- ``sign_test``: the exact binomial test on the number of positive differences.
- ``permutation_test``: do two groups (e.g. therapy+AI-self vs coding changes) have the
  same mean? Under the null the group labels are exchangeable.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from personaspace.errors import PersonaspaceError

EXACT_LIMIT = 1 << 17  # enumerate the null exactly up to this many arrangements (131,072)
RANDOM_DRAWS = 20_000
_EPS = 1e-12  # ties with the observed statistic count as "at least as extreme"


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
    x = np.arange(len(y), dtype=np.float64)
    keep = np.isfinite(y)
    if keep.sum() < 2:
        return float("nan")
    x, y = x[keep], y[keep]
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())


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
    observed = abs(x.mean())
    n = x.size
    if 2**n <= EXACT_LIMIT:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        exact = True
    else:
        rng = np.random.default_rng(seed)
        signs = rng.choice((1.0, -1.0), size=(draws, n))
        exact = False
    means = np.abs(signs @ x) / n
    hits = int((means >= observed - _EPS).sum())
    p = hits / len(signs) if exact else (hits + 1) / (len(signs) + 1)
    return TestResult(float(x.mean()), float(p), n, exact)


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
    tail = min(k, n - k)
    p = 2 * sum(math.comb(n, i) for i in range(tail + 1)) / 2**n
    return TestResult(float(k), float(min(p, 1.0)), n, True)


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
    pooled = np.concatenate([x, y])
    n, k = pooled.size, x.size
    observed = x.mean() - y.mean()
    total = pooled.sum()
    if math.comb(n, k) <= EXACT_LIMIT:
        picks = np.array(list(itertools.combinations(range(n), k)), dtype=np.int64)
        exact = True
    else:
        rng = np.random.default_rng(seed)
        picks = np.argsort(rng.random((draws, n)), axis=1)[:, :k]
        exact = False
    sums = pooled[picks].sum(axis=1)
    diffs = sums / k - (total - sums) / (n - k)
    hits = int((np.abs(diffs) >= abs(observed) - _EPS).sum())
    p = hits / len(picks) if exact else (hits + 1) / (len(picks) + 1)
    return TestResult(float(observed), float(p), n, exact)
