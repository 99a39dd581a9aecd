"""The scipy-backed statistics against brute-force references on small inputs.

Every null distribution here is enumerated in exact rational arithmetic (``Fraction`` of
the decimal values), so theoretical ties are ties; the p-values must come out exactly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

import personaspace.experiments.stats as exp_stats
from personaspace.analysis.stats import average_ranks, rank_correlation, spearman
from personaspace.experiments.cap_eval import _mcnemar
from personaspace.experiments.stats import permutation_test, sign_test, signflip_test, slope

SIGNFLIP_CASES = [
    [1.0, 2.0, 3.0],
    [1.0, -2.0, -3.0, -4.0],
    [0.3, -0.1, -0.2, 0.5],  # 0.3 - 0.1 - 0.2 is not 0 in floats: a tie only in theory
    [12.38, -18.56, 23.67, -5.13, -12.36, 0.01],  # scipy's relative tolerance misses ties
    [0.5, 0.5, -0.5, 1.5, 2.0, -0.25, 0.75, 1.0],
    [2.5, -1.0],
]
SPLIT_CASES = [
    ([3.0, 4.0], [0.0, 1.0]),
    ([-3.0, -4.0, -5.0], [0.0, 1.0, 2.0]),
    ([0.1, 0.2, 0.3], [0.6, -0.1, 0.25, 0.0]),
    ([1.0, 1.0, 2.0], [1.0, 2.0, 2.0, 3.0, 1.0]),
    ([5.0], [1.0, 2.0, 3.0]),  # a group of one: outside scipy's two-per-group minimum
    ([1.0, 2.0, 3.0, 4.0], [0.5]),
    ([1.0], [2.0]),
]


def _exact(values: Sequence[float]) -> list[Fraction]:
    return [Fraction(str(v)) for v in values]


def _total(values: Iterable[Fraction]) -> Fraction:
    return sum(values, Fraction(0))


def _brute_signflip(values: Sequence[float]) -> float:
    x = _exact(values)
    observed = abs(_total(x))
    patterns = list(itertools.product((1, -1), repeat=len(x)))
    hits = sum(abs(_total(s * v for s, v in zip(signs, x))) >= observed for signs in patterns)
    return hits / len(patterns)


def _brute_split(a: Sequence[float], b: Sequence[float]) -> float:
    pooled = _exact([*a, *b])
    k, total = len(a), _total(pooled)

    def gap(group: Sequence[Fraction]) -> Fraction:
        return abs(_total(group) / k - (total - _total(group)) / (len(pooled) - k))

    observed = gap(pooled[:k])
    splits = list(itertools.combinations(pooled, k))
    return sum(gap(s) >= observed for s in splits) / len(splits)


def _brute_ranks(values: Sequence[float]) -> list[Fraction]:
    return [
        sum(1 for w in values if w < v) + Fraction(sum(1 for w in values if w == v) + 1, 2)
        for v in values
    ]


def _brute_rho_squared(ra: Sequence[Fraction], rb: Sequence[Fraction]) -> Fraction | None:
    ma, mb = _total(ra) / len(ra), _total(rb) / len(rb)
    sab = _total((p - ma) * (q - mb) for p, q in zip(ra, rb))
    saa, sbb = _total((p - ma) ** 2 for p in ra), _total((q - mb) ** 2 for q in rb)
    return sab * sab / (saa * sbb) if saa and sbb else None


def _squared(ra: Sequence[Fraction], rb: Sequence[Fraction]) -> Fraction:
    squared = _brute_rho_squared(ra, rb)
    assert squared is not None
    return squared


def _brute_rho(a: Sequence[float], b: Sequence[float]) -> float:
    ra, rb = _brute_ranks(a), _brute_ranks(b)
    squared = _squared(ra, rb)
    ma, mb = _total(ra) / len(ra), _total(rb) / len(rb)
    sign = 1 if _total((p - ma) * (q - mb) for p, q in zip(ra, rb)) >= 0 else -1
    return sign * math.sqrt(squared)


def _binomial_sum(k: int, n: int) -> float:
    tail = min(k, n - k)
    return min(2 * sum(math.comb(n, i) for i in range(tail + 1)) / 2**n, 1.0)


# experiments.stats ---------------------------------------------------------------------------


@pytest.mark.parametrize("values", SIGNFLIP_CASES)
def test_signflip_matches_every_sign_pattern(values: list[float]) -> None:
    result = signflip_test(values)
    assert result.exact and result.n == len(values)
    assert result.p_value == _brute_signflip(values)


def test_signflip_of_one_value_is_one() -> None:
    assert signflip_test([-2.0]) == exp_stats.TestResult(-2.0, 1.0, 1, True)


@pytest.mark.parametrize(("a", "b"), SPLIT_CASES)
def test_permutation_test_matches_every_split(a: list[float], b: list[float]) -> None:
    result = permutation_test(a, b)
    assert result.exact and result.n == len(a) + len(b)
    assert result.p_value == _brute_split(a, b)


def test_the_exact_random_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exp_stats, "EXACT_LIMIT", 16)
    values = [0.5, -1.0, 2.0, 1.5, 0.25]
    assert signflip_test(values[:4]).exact  # 2**4 = 16 patterns: still enumerated
    assert signflip_test(values, draws=32).exact  # as many draws as patterns: enumerated
    drawn = signflip_test(values, seed=3, draws=31)
    assert not drawn.exact
    null = stats.permutation_test(
        (np.array(values),),
        lambda x, axis: np.abs(np.mean(x, axis=axis)),
        permutation_type="samples",
        vectorized=True,
        n_resamples=31,
        alternative="greater",
        rng=np.random.default_rng(3),
    ).null_distribution
    hits = int((null >= abs(np.mean(values)) - 1e-12).sum())
    assert drawn.p_value == (hits + 1) / 32
    assert permutation_test([1.0, 2.0], [3.0, 4.0, 5.0]).exact  # C(5, 2) = 10 splits
    a, b = np.array([1.0, 2.0, 0.5]), np.array([3.0, 4.0, 5.0])
    split = permutation_test(a, b, seed=1, draws=19)  # C(6, 3) = 20 splits > 16 and > 19
    assert not split.exact
    null = stats.permutation_test(
        (a, b),
        lambda x, y, axis: np.abs(np.mean(x, axis=axis) - np.mean(y, axis=axis)),
        vectorized=True,
        n_resamples=19,
        alternative="greater",
        rng=np.random.default_rng(1),
    ).null_distribution
    hits = int((null >= abs(a.mean() - b.mean()) - 1e-12).sum())
    assert split.p_value == (hits + 1) / 20


def test_sign_test_and_mcnemar_match_the_binomial_sum() -> None:
    for n in range(1, 41):
        for k in range(n + 1):
            expected = _binomial_sum(k, n)
            p_sign = sign_test([1.0] * k + [-1.0] * (n - k) + [0.0]).p_value
            p_mcnemar = _mcnemar(k, n - k)
            if n <= 14:  # scipy's sum rounds like the integer one up to here
                assert p_sign == p_mcnemar == expected
            else:
                assert p_sign == p_mcnemar == pytest.approx(expected, rel=2e-15, abs=0)
    assert _mcnemar(0, 0) == 1.0 and sign_test([0.0, 0.0]).n == 0


def test_slope_matches_the_least_squares_formula() -> None:
    y = [0.3, -1.2, float("nan"), 2.5, 0.0, 1.75]
    keep = [(Fraction(i), Fraction(str(v))) for i, v in enumerate(y) if not math.isnan(v)]
    mx = sum(x for x, _ in keep) / len(keep)
    my = sum(v for _, v in keep) / len(keep)
    exact = sum((x - mx) * (v - my) for x, v in keep) / sum((x - mx) ** 2 for x, _ in keep)
    assert slope(y) == pytest.approx(float(exact), abs=1e-15)
    assert np.isnan(slope([float("nan"), 1.0]))


# analysis.stats ------------------------------------------------------------------------------

RANK_CASES = [
    ([3.0, 1.0, 2.0, 5.0, 4.0], [1.0, 2.0, 3.0, 4.0, 5.0]),
    ([1.0, 1.0, 2.0, 3.0, 3.0, 0.5], [2.0, 1.0, 1.0, 4.0, 0.0, 0.0]),
    ([0.2, 0.1, 0.4, 0.3], [10.0, 30.0, 20.0, 20.0]),
]


def test_ranks_and_spearman_match_pearson_of_brute_ranks() -> None:
    rng = np.random.default_rng(5)
    drawn = [(rng.integers(0, 6, 9).tolist(), rng.normal(size=9).tolist()) for _ in range(5)]
    for a, b in [*RANK_CASES, *drawn]:
        assert average_ranks(a).tolist() == [float(r) for r in _brute_ranks(a)]
        assert spearman(a, b) == pytest.approx(_brute_rho(a, b), abs=1e-14)
        assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-14)


def test_a_perfect_ordering_is_exactly_one() -> None:
    for n in range(2, 60):  # spearmanr itself misses by an ulp at n = 2, 5, 10, ...
        assert spearman(range(n), range(n)) == 1.0
        assert spearman(range(n), range(n, 0, -1)) == -1.0
    assert np.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


@pytest.mark.parametrize(("a", "b"), RANK_CASES)
def test_permutation_p_matches_every_order(a: list[float], b: list[float]) -> None:
    ra, rb = _brute_ranks(a), _brute_ranks(b)
    observed = _squared(ra, rb)
    orders = list(itertools.permutations(ra))
    hits = sum(_squared(order, rb) >= observed for order in orders)
    result = rank_correlation(a, b, n_permutations=1_000, n_bootstrap=10)
    assert result.n_permutations == len(orders) and result.p_permutation == hits / len(orders)


def test_random_permutation_p_counts_the_observed_order() -> None:
    r = rank_correlation(range(8), [0, 2, 1, 3, 5, 4, 7, 6], n_permutations=199, n_bootstrap=10)
    assert r.n_permutations == 199 and (r.p_permutation * 200).is_integer()
    assert r == rank_correlation(
        range(8), [0, 2, 1, 3, 5, 4, 7, 6], n_permutations=199, n_bootstrap=10
    )


@pytest.mark.filterwarnings("ignore::scipy.stats.DegenerateDataWarning")
def test_bootstrap_interval_skips_constant_resamples() -> None:
    a, b = [1.0, 1.0, 2.0, 3.0, 3.0], [2.0, 1.0, 1.0, 4.0, 0.0]
    # 5! = 120 <= 200 orders: the permutation test is exact and draws nothing from the seed
    r = rank_correlation(a, b, n_permutations=200, n_bootstrap=300, seed=4, ci_level=0.9)

    def brute(x: np.ndarray, y: np.ndarray) -> float:
        squared = _brute_rho_squared(_brute_ranks(list(x)), _brute_ranks(list(y)))
        return float("nan") if squared is None else _brute_rho(list(x), list(y))

    reference = stats.bootstrap(
        (np.array(a), np.array(b)),
        brute,
        paired=True,
        vectorized=False,
        n_resamples=300,
        method="percentile",
        rng=np.random.default_rng(4),
    ).bootstrap_distribution
    finite = reference[np.isfinite(reference)]
    assert 0 < r.n_bootstrap == finite.size < 300
    assert r.ci_low == pytest.approx(np.quantile(finite, 0.05), abs=1e-14)
    assert r.ci_high == pytest.approx(np.quantile(finite, 0.95), abs=1e-14)


def test_a_constant_side_gives_nan_and_p_one() -> None:
    r = rank_correlation([2.0, 2.0, 2.0], [1.0, 2.0, 3.0], n_permutations=50, n_bootstrap=20)
    assert np.isnan(r.rho) and r.p_permutation == 1.0 and r.n_bootstrap == 0
    assert np.isnan(r.ci_low) and np.isnan(r.ci_high)
