"""Means with bootstrap intervals, and the random-direction null of a projection.

A projection of a mean state (or a mean difference) on a persona vector means little alone:
random unit directions of the same space can project as far. ``random_direction_null``
gives the figure beside them, ``figure_null`` any figure beside the same figure for random
directions (with an empirical p-value, ``empirical_p``); ``mean_interval`` gives a mean its
percentile bootstrap interval (``scipy.stats.bootstrap``, seeded).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict

import numpy as np
import torch
from scipy import stats

from personaspace.errors import PersonaspaceError
from personaspace.vectors.shape import unit

N_BOOTSTRAP = 2_000
CI_LEVEL = 0.95


class IntervalJSON(TypedDict):
    mean: float | None
    low: float | None
    high: float | None
    n: int
    level: float


@dataclass(frozen=True)
class MeanInterval:
    """A mean with its percentile bootstrap interval (``None`` with fewer than 2 values)."""

    mean: float
    low: float | None
    high: float | None
    n: int
    level: float = CI_LEVEL

    def to_json(self) -> IntervalJSON:
        return {
            "mean": self.mean if math.isfinite(self.mean) else None,
            "low": self.low,
            "high": self.high,
            "n": self.n,
            "level": self.level,
        }

    def __str__(self) -> str:
        if self.low is None or self.high is None:
            return f"{self.mean:+.4g}"
        return f"{self.mean:+.4g} [{self.low:+.4g}, {self.high:+.4g}]"


def mean_interval(
    values: Sequence[float] | np.ndarray, *, seed: int = 0, n_resamples: int = N_BOOTSTRAP
) -> MeanInterval:
    """The mean of the finite ``values`` and its 95 % percentile bootstrap interval
    (``scipy.stats.bootstrap``, seeded).

    Example:
        >>> m = mean_interval([1.0, 2.0, 3.0, 4.0], seed=0)
        >>> m.mean, m.low <= 2.5 <= m.high, m.n
        (2.5, True, 4)
        >>> mean_interval([7.0]).low is None
        True
    """
    data = np.asarray(values, dtype=np.float64)
    data = data[np.isfinite(data)]
    if data.size == 0:
        return MeanInterval(float("nan"), None, None, 0)
    mean = float(data.mean())
    if data.size < 2:
        return MeanInterval(mean, None, None, 1)
    res = stats.bootstrap(
        (data,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=CI_LEVEL,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return MeanInterval(mean, low, high, int(data.size))


def random_units(n: int, hidden: int, seed: int) -> torch.Tensor:
    """``n`` random unit directions ``[n, hidden]`` (float64), the same for the same seed.

    Example:
        >>> r = random_units(3, 8, seed=1)
        >>> r.shape, bool(torch.allclose(r.norm(dim=-1), torch.ones(3, dtype=torch.float64)))
        (torch.Size([3, 8]), True)
        >>> bool(torch.equal(r, random_units(3, 8, seed=1)))
        True
    """
    if n < 1:
        raise PersonaspaceError(f"n_random is {n}", fix="use 1 or more", param="n_random")
    generator = torch.Generator().manual_seed(seed)
    return unit(torch.randn(n, hidden, generator=generator, dtype=torch.float64))


class NullJSON(TypedDict):
    observed: float
    n_directions: int
    seed: int
    percentile: float
    random_abs_p95: float
    random_low: float
    random_high: float


@dataclass(frozen=True)
class RandomNull:
    """A mean projection beside the same mean along random unit directions.

    A random direction has no sign, so ``percentile`` compares magnitudes: the share (%) of
    random directions whose ``|mean|`` is strictly smaller than the vector's. ``random_low``
    and ``random_high`` are the 2.5th and 97.5th percentiles of the signed random means;
    ``random_abs_p95`` the 95th percentile of their magnitudes.
    """

    observed: float
    n_directions: int
    seed: int
    percentile: float
    random_abs_p95: float
    random_low: float
    random_high: float

    def to_json(self) -> NullJSON:
        return {
            "observed": self.observed,
            "n_directions": self.n_directions,
            "seed": self.seed,
            "percentile": self.percentile,
            "random_abs_p95": self.random_abs_p95,
            "random_low": self.random_low,
            "random_high": self.random_high,
        }


def random_direction_null(
    mean_state: torch.Tensor, direction: torch.Tensor, *, n_random: int, seed: int
) -> RandomNull:
    """The projection of ``mean_state`` (a mean of per-sample states or differences,
    ``[hidden]``) on the unit ``direction``, and on ``n_random`` seeded random unit
    directions. A mean of projections is the projection of the mean, so one dot product
    per direction gives each direction's dataset-level figure.

    Example:
        >>> d = torch.zeros(16, dtype=torch.float64); d[0] = 1.0
        >>> null = random_direction_null(3 * d, d, n_random=100, seed=0)
        >>> null.observed, null.percentile
        (3.0, 100.0)
    """
    mean64 = mean_state.detach().to("cpu", torch.float64)
    observed = float(mean64 @ unit(direction.detach().to("cpu", torch.float64)))
    randoms = (random_units(n_random, int(mean64.shape[-1]), seed) @ mean64).numpy()
    magnitudes = np.abs(randoms)
    return RandomNull(
        observed=observed,
        n_directions=n_random,
        seed=seed,
        percentile=float(stats.percentileofscore(magnitudes, abs(observed), kind="strict")),
        random_abs_p95=float(np.quantile(magnitudes, 0.95)),
        random_low=float(np.quantile(randoms, 0.025)),
        random_high=float(np.quantile(randoms, 0.975)),
    )


Tail = Literal["greater", "less", "two-sided"]
NULL_ALPHA = 0.05
_TIE = 1e-12  # a null value within this of the observed one counts as at least as far


def empirical_p(observed: float, null: Sequence[float], *, tail: Tail = "greater") -> float:
    """The Monte Carlo p-value of ``observed`` among ``null`` (the same figure for random
    directions, say): ``(1 + #{null values at least as far}) / (1 + len(null))``.

    "At least as far" is ``>= observed`` for ``tail="greater"`` and ``<= observed`` for
    ``"less"`` (ties within 1e-12 count); ``"two-sided"`` doubles the smaller of the two,
    at most 1. The observed value counts as one of the draws, so ``p >= 1 / (1 + n)``.

    Example:
        >>> empirical_p(0.6, [0.2, 0.4, 0.6, 0.8])
        0.6
        >>> empirical_p(0.6, [0.2, 0.4, 0.6, 0.8], tail="less")
        0.8
        >>> empirical_p(0.9, [0.2, 0.4, 0.6, 0.8], tail="two-sided")
        0.4
    """
    if len(null) == 0:
        raise PersonaspaceError("the null has no values", fix="give it at least one random draw")
    values = np.asarray(null, dtype=np.float64)
    if tail == "two-sided":
        one_sided = min(empirical_p(observed, null), empirical_p(observed, null, tail="less"))
        return min(1.0, 2 * one_sided)
    far = values >= observed - _TIE if tail == "greater" else values <= observed + _TIE
    return float((1 + int(far.sum())) / (1 + values.size))


class FigureNullJSON(TypedDict):
    observed: float
    random_mean: float
    random_low: float
    random_high: float
    n_directions: int
    tail: str
    n_at_least_as_far: int
    percentile: float
    p: float
    separable: bool
    verdict: str


@dataclass(frozen=True)
class FigureNull:
    """A figure of a direction beside the same figure for random directions.

    ``random_low`` and ``random_high`` are the 2.5th and 97.5th percentiles of the random
    figures; ``percentile`` the share (%) of them strictly below ``observed``; ``p`` the
    empirical p-value in ``tail`` (``empirical_p``); ``n_at_least_as_far`` its count (for
    ``"two-sided"``, that of the nearer tail).
    """

    observed: float
    random_mean: float
    random_low: float
    random_high: float
    n_directions: int
    tail: Tail
    n_at_least_as_far: int
    percentile: float
    p: float
    alpha: float = NULL_ALPHA

    @property
    def separable(self) -> bool:
        """Whether ``p <= alpha``."""
        return self.p <= self.alpha

    @property
    def verdict(self) -> str:
        """``"separable from random directions (p = 0.05)"`` or ``"not separable ..."``,
        saying so when ``n_directions`` is too few for any p at or below ``alpha``."""
        if self.separable:
            return f"separable from random directions (p = {self.p:.2g})"
        floor = 1 / (1 + self.n_directions) * (2 if self.tail == "two-sided" else 1)
        plural = "s" if self.n_directions != 1 else ""
        short = (
            f"; {self.n_directions} direction{plural} cannot give p below {floor:.2g}"
            if floor > self.alpha
            else ""
        )
        return f"not separable from random directions (p = {self.p:.2g}{short})"

    def to_json(self) -> FigureNullJSON:
        return {
            "observed": self.observed,
            "random_mean": round(self.random_mean, 6),
            "random_low": round(self.random_low, 6),
            "random_high": round(self.random_high, 6),
            "n_directions": self.n_directions,
            "tail": self.tail,
            "n_at_least_as_far": self.n_at_least_as_far,
            "percentile": round(self.percentile, 4),
            "p": round(self.p, 6),
            "separable": self.separable,
            "verdict": self.verdict,
        }


def figure_null(
    observed: float, null: Sequence[float], *, tail: Tail, alpha: float = NULL_ALPHA
) -> FigureNull:
    """``observed`` beside the ``null`` figures: their mean, 95 % range, the observed
    figure's percentile and empirical p-value (``empirical_p``).

    Example:
        >>> f = figure_null(0.6, [0.2, 0.2, 0.4, 0.6], tail="greater")
        >>> f.random_mean, f.percentile, f.p, f.separable
        (0.35, 75.0, 0.4, False)
        >>> f.verdict
        'not separable from random directions (p = 0.4; 4 directions cannot give p below 0.2)'
    """
    values = np.asarray(null, dtype=np.float64)
    p = empirical_p(observed, null, tail=tail)
    greater = int((values >= observed - _TIE).sum())
    less = int((values <= observed + _TIE).sum())
    count = {"greater": greater, "less": less}.get(tail, min(greater, less))
    return FigureNull(
        observed=observed,
        random_mean=float(values.mean()),
        random_low=float(np.quantile(values, 0.025)),
        random_high=float(np.quantile(values, 0.975)),
        n_directions=int(values.size),
        tail=tail,
        n_at_least_as_far=count,
        percentile=float(stats.percentileofscore(values, observed, kind="strict")),
        p=p,
        alpha=alpha,
    )
