"""Means with bootstrap intervals, and the random-direction null of a projection.

A projection of a mean state (or a mean difference) on a persona vector means little alone:
random unit directions of the same space can project as far. ``random_direction_null``
gives the figure beside them; ``mean_interval`` gives a mean its percentile bootstrap
interval (``scipy.stats.bootstrap``, seeded).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

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
