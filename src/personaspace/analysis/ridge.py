"""Ridge regression with cross-validation grouped by conversation, its shuffled-target null
and a bootstrap interval over conversations (numpy only).

Features are standardised on each training fold (mean 0, standard deviation 1; constant
columns keep scale 1) and the target is centred there, so the penalty ``alpha`` treats
every feature alike and the intercept is the training mean. The fit is the closed form
through a thin SVD of the standardised training matrix: ``w = V diag(s / (s^2 + alpha))
U^T y``. Nothing of the SVD depends on the target, so ``GroupedRidgeCV`` factors every fold
once and then scores any number of targets (the permutations of the null) at the cost of a
few matrix products each.

Folds never split a group: ``group_folds`` deals whole groups (conversations) to folds,
largest first, each to the fold with the fewest rows so far (the greedy rule of
scikit-learn's ``GroupKFold``). The penalty is chosen inside each outer training set by a
second grouped cross-validation over ``alphas``, so the out-of-fold predictions never see
their own rows, not even through the choice of ``alpha``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from personaspace.errors import PersonaspaceError

Array = NDArray[np.float64]
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 5, 15))
Groups = Sequence[object] | NDArray[np.generic]


def group_folds(groups: Groups, n_folds: int) -> list[NDArray[np.intp]]:
    """The test rows of each fold; every group's rows fall in exactly one fold.

    Groups are dealt largest first (ties by first appearance) to the fold with the fewest
    rows so far (ties to the lowest fold).

    Example:
        >>> [f.tolist() for f in group_folds(["a", "a", "b", "c", "c", "c"], 2)]
        [[3, 4, 5], [0, 1, 2]]
    """
    labels = list(np.asarray(groups, dtype=object))
    order = list(dict.fromkeys(labels))
    if n_folds < 2:
        raise PersonaspaceError(f"n_folds is {n_folds}", fix="use 2 or more", param="n_folds")
    if len(order) < n_folds:
        raise PersonaspaceError(
            f"{len(order)} conversations cannot fill {n_folds} folds",
            fix="give more conversations or fewer folds",
            param="n_folds",
        )
    rows: dict[object, list[int]] = {g: [] for g in order}
    for i, g in enumerate(labels):
        rows[g].append(i)
    sizes = [0] * n_folds
    members: list[list[int]] = [[] for _ in range(n_folds)]
    for g in sorted(order, key=lambda g: -len(rows[g])):  # stable: ties keep first appearance
        target = sizes.index(min(sizes))
        members[target] += rows[g]
        sizes[target] += len(rows[g])
    return [np.array(sorted(m), dtype=np.intp) for m in members]


@dataclass(frozen=True)
class RidgeFit:
    """A fitted ridge: ``predict(x) = ((x - mean) / scale) @ coef + intercept``."""

    coef: Array
    intercept: float
    mean: Array
    scale: Array
    alpha: float

    def predict(self, x: Array) -> Array:
        """Predictions for rows ``x`` ``[n, p]``.

        Example:
            >>> fit = fit_ridge(np.array([[0.0], [1.0], [2.0]]), np.array([1.0, 3.0, 5.0]), 1e-9)
            >>> np.round(fit.predict(np.array([[3.0]])), 6).tolist()
            [7.0]
        """
        return np.asarray(((x - self.mean) / self.scale) @ self.coef + self.intercept)


def _standardise(x: Array) -> tuple[Array, Array, Array]:
    mean = x.mean(0)
    scale = x.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    return (x - mean) / scale, mean, scale


def _check(x: Array, y: Array) -> None:
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise PersonaspaceError(
            f"features {x.shape} and target {y.shape} do not match",
            fix="give one feature row per target value",
        )
    if len(y) < 3:
        raise PersonaspaceError(f"only {len(y)} rows to fit", fix="give more turns")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise PersonaspaceError("the features or targets hold NaN or infinity", fix="drop them")


def fit_ridge(x: Array, y: Array, alpha: float) -> RidgeFit:
    """Ridge on standardised features with penalty ``alpha`` (the intercept is not penalised).

    Example:
        >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
        >>> fit = fit_ridge(x, x @ np.array([2.0, -1.0]) + 0.5, 1e-9)
        >>> bool(np.allclose(fit.predict(x), x @ np.array([2.0, -1.0]) + 0.5, atol=1e-6))
        True
    """
    _check(x, y)
    if not alpha > 0:
        raise PersonaspaceError(f"alpha is {alpha}", fix="give a positive penalty", param="alpha")
    xs, mean, scale = _standardise(x)
    u, s, vt = np.linalg.svd(xs, full_matrices=False)
    centre = float(y.mean())
    coef = vt.T @ ((s / (s**2 + alpha)) * (u.T @ (y - centre)))
    return RidgeFit(coef, centre, mean, scale, float(alpha))


@dataclass(frozen=True)
class _Split:
    """One training/test split, factored: scores any target at every alpha."""

    train: NDArray[np.intp]
    test: NDArray[np.intp]
    u: Array  # [n_train, k]
    s: Array  # [k]
    test_v: Array  # standardised test rows times V: [n_test, k]

    @staticmethod
    def of(x: Array, train: NDArray[np.intp], test: NDArray[np.intp]) -> _Split:
        xs, mean, scale = _standardise(x[train])
        u, s, vt = np.linalg.svd(xs, full_matrices=False)
        return _Split(train, test, u, s, ((x[test] - mean) / scale) @ vt.T)

    def predictions(self, y: Array, alphas: Array) -> Array:
        """Test predictions ``[len(alphas), n_test]`` for target ``y`` (all rows)."""
        train_y = y[self.train]
        centre = train_y.mean()
        projected = self.u.T @ (train_y - centre)  # [k]
        shrink = self.s / (self.s**2 + alphas[:, None])  # [A, k]
        return np.asarray((shrink * projected) @ self.test_v.T + centre)


@dataclass(frozen=True)
class CVResult:
    """Out-of-fold predictions and their R^2 (``1 - SSE / SST``, SST about the mean of all
    rows), with the penalty each outer fold chose."""

    r2: float
    predictions: Array
    alphas: list[float]


def r_squared(y: Array, predicted: Array) -> float:
    """``1 - sum((y - p)^2) / sum((y - mean(y))^2)``: 1 is perfect, 0 is the mean, < 0 worse.

    Example:
        >>> r_squared(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0]))
        1.0
        >>> r_squared(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0]))
        0.0
    """
    total = float(((y - y.mean()) ** 2).sum())
    if total == 0:
        return float("nan")
    return 1.0 - float(((y - predicted) ** 2).sum()) / total


class GroupedRidgeCV:
    """Grouped cross-validation of a ridge over ``alphas`` for one feature matrix; the folds'
    SVDs are computed once, so ``evaluate`` may be called for many targets.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(60, 3))
        >>> cv = GroupedRidgeCV(x, np.repeat(np.arange(12), 5), n_folds=4)
        >>> round(cv.evaluate(x @ np.array([1.0, 2.0, 0.0])).r2, 3)
        1.0
    """

    def __init__(
        self,
        x: Array,
        groups: Groups,
        *,
        n_folds: int = 5,
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        inner_folds: int | None = None,
    ) -> None:
        x = np.asarray(x, dtype=np.float64)
        labels = np.asarray(groups, dtype=object)
        _check(x, np.zeros(len(x)))
        if len(labels) != len(x):
            raise PersonaspaceError(
                f"{len(labels)} group labels for {len(x)} rows", fix="label every row"
            )
        if not alphas or min(alphas) <= 0:
            raise PersonaspaceError("alphas must be positive", fix="e.g. 0.1,1,10", param="alphas")
        self.alphas = np.asarray(alphas, dtype=np.float64)
        self.n = len(x)
        self.folds = group_folds(labels, n_folds)
        inner = inner_folds or n_folds
        self.outer: list[_Split] = []
        self.inner: list[list[_Split]] = []
        everything = np.arange(self.n)
        for test in self.folds:
            train = np.setdiff1d(everything, test)
            self.outer.append(_Split.of(x, train, test))
            n_groups = len(set(labels[train].tolist()))
            k = min(inner, n_groups)
            splits = []
            if len(self.alphas) > 1 and k >= 2:
                for inner_test in group_folds(labels[train], k):
                    inner_train = np.setdiff1d(np.arange(len(train)), inner_test)
                    splits.append(_Split.of(x, train[inner_train], train[inner_test]))
            self.inner.append(splits)

    def _alpha_for(self, fold: int, y: Array) -> int:
        splits = self.inner[fold]
        if not splits:
            return 0
        errors = np.zeros(len(self.alphas))
        for split in splits:
            errors += ((split.predictions(y, self.alphas) - y[split.test]) ** 2).sum(1)
        return int(np.argmin(errors))  # ties: the smallest penalty

    def evaluate(self, y: Array) -> CVResult:
        """Out-of-fold predictions of ``y`` (each fold's alpha chosen on its training rows)."""
        y = np.asarray(y, dtype=np.float64)
        if y.shape != (self.n,) or not np.isfinite(y).all():
            raise PersonaspaceError(
                f"the target has shape {y.shape} (or non-finite values); want ({self.n},)",
                fix="give one finite value per row",
            )
        predicted = np.zeros(self.n)
        chosen = []
        for fold, split in enumerate(self.outer):
            a = self._alpha_for(fold, y)
            predicted[split.test] = split.predictions(y, self.alphas[a : a + 1])[0]
            chosen.append(float(self.alphas[a]))
        return CVResult(r_squared(y, predicted), predicted, chosen)

    def best_alpha(self, y: Array) -> float:
        """The penalty with the lowest out-of-fold squared error over the outer folds (for
        the final fit on all rows)."""
        y = np.asarray(y, dtype=np.float64)
        errors = np.zeros(len(self.alphas))
        for split in self.outer:
            errors += ((split.predictions(y, self.alphas) - y[split.test]) ** 2).sum(1)
        return float(self.alphas[int(np.argmin(errors))])


@dataclass(frozen=True)
class R2Report:
    """Out-of-fold R^2 with its shuffled-target null and a bootstrap interval.

    ``null``: R^2 of each permutation (targets shuffled across all rows, the whole grouped
    cross-validation rerun, alpha choice included); ``p_value``: ``(1 + #null >= r2) /
    (1 + n_permutations)``. ``interval``: the 2.5 and 97.5 percentiles of R^2 over
    conversations resampled with replacement (the out-of-fold predictions kept).
    """

    r2: float
    n_rows: int
    n_groups: int
    n_folds: int
    alphas: list[float]
    null: list[float]
    p_value: float
    interval: tuple[float, float]
    n_bootstrap: int

    @property
    def null_mean(self) -> float:
        return float(np.mean(self.null)) if self.null else float("nan")

    @property
    def null_p95(self) -> float:
        return float(np.percentile(self.null, 95)) if self.null else float("nan")

    def to_json(self) -> dict[str, object]:
        """A JSON-ready summary (the null as mean, 95th percentile and p, not every value)."""
        return {
            "r2": self.r2,
            "interval_95": list(self.interval),
            "null_mean": self.null_mean,
            "null_p95": self.null_p95,
            "p_value": self.p_value,
            "n_permutations": len(self.null),
            "n_bootstrap": self.n_bootstrap,
            "n_rows": self.n_rows,
            "n_conversations": self.n_groups,
            "n_folds": self.n_folds,
            "alphas": self.alphas,
        }


def bootstrap_r2(
    y: Array,
    predicted: Array,
    groups: Groups,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """The 95 % interval of R^2 over groups resampled with replacement.

    Example:
        >>> y = np.arange(20.0)
        >>> lo, hi = bootstrap_r2(y, y + 0.1, np.repeat(np.arange(10), 2), n_bootstrap=50)
        >>> lo > 0.99 and hi <= 1.0
        True
    """
    labels = np.asarray(groups, dtype=object)
    order = list(dict.fromkeys(labels.tolist()))
    rows = [np.flatnonzero(labels == g) for g in order]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_bootstrap):
        pick = np.concatenate([rows[i] for i in rng.integers(0, len(rows), len(rows))])
        value = r_squared(y[pick], predicted[pick])
        if np.isfinite(value):
            values.append(value)
    if not values:
        return (float("nan"), float("nan"))
    return (float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5)))


def grouped_r2(
    x: Array,
    y: Array,
    groups: Groups,
    *,
    n_folds: int = 5,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    n_permutations: int = 200,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> tuple[R2Report, CVResult, GroupedRidgeCV]:
    """Grouped cross-validated R^2 of a ridge from ``x`` to ``y``, its null and interval.

    Example:
        >>> rng = np.random.default_rng(1)
        >>> x = rng.normal(size=(80, 4))
        >>> y = x[:, 0] + 0.1 * rng.normal(size=80)
        >>> report, _, _ = grouped_r2(x, y, np.repeat(np.arange(16), 5), n_permutations=20)
        >>> report.r2 > 0.9, report.null_p95 < 0.2, report.p_value < 0.1
        (True, True, True)
    """
    y = np.asarray(y, dtype=np.float64)
    cv = GroupedRidgeCV(x, groups, n_folds=n_folds, alphas=alphas)
    observed = cv.evaluate(y)
    rng = np.random.default_rng(seed)
    null = [cv.evaluate(rng.permutation(y)).r2 for _ in range(n_permutations)]
    p = (1 + sum(v >= observed.r2 for v in null)) / (1 + n_permutations)
    interval = bootstrap_r2(y, observed.predictions, groups, n_bootstrap=n_bootstrap, seed=seed)
    report = R2Report(
        r2=observed.r2,
        n_rows=len(y),
        n_groups=len(set(np.asarray(groups, dtype=object).tolist())),
        n_folds=len(cv.folds),
        alphas=observed.alphas,
        null=null,
        p_value=float(p),
        interval=interval,
        n_bootstrap=n_bootstrap,
    )
    return report, observed, cv
