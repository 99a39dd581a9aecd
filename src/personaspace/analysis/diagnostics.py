"""How trustworthy an axis is: split-half reliability, bootstrap intervals, held-out separation.

All from the run's own replies (their captured means), with the replies the aggregation
kept; pure tensor code, seeded.

- **Split-half reliability**: the axis built from two disjoint halves of the questions
  (even and odd positions in question order), and of the prompts (even and odd prompt
  indices), and the cosine of the two, per layer. An axis that is mostly noise gives low
  cosines.
- **Bootstrap over questions**: questions drawn with replacement, every reply weighted by
  how often its question was drawn; cos(axis, PC1) and the default's rank on PC1 recomputed
  each time; percentile intervals.
- **Held-out separation**: the axis built from one half of the questions, and the AUC with
  which it tells the other half's default replies from its role replies (and the other way
  round, averaged), per layer. ``--layer auto`` takes the layer where it is highest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import mannwhitneyu

from personaspace.analysis.persona_space import pca
from personaspace.errors import PersonaspaceError
from personaspace.vectors.shape import cosine, unit


@dataclass(frozen=True)
class ReplySet:
    """The replies an axis is built from: vectors ``[n, layers, hidden]`` and, per reply,
    its kind (``default``/``role``), role name, question and prompt, and whether the
    aggregation kept it (default replies with content are always kept)."""

    vectors: torch.Tensor
    kinds: list[str]
    names: list[str]
    questions: list[str]
    prompts: list[int]
    kept: list[bool]

    def __post_init__(self) -> None:
        n = self.vectors.shape[0]
        if not all(len(x) == n for x in (self.kinds, self.names, self.questions, self.prompts)):
            raise PersonaspaceError("a reply set's columns differ in length", fix="report this")

    @property
    def question_order(self) -> list[str]:
        return sorted(set(self.questions))


def build_axis(
    replies: ReplySet, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor] | None:
    """Default vector, role vectors and axis from the kept replies, each reply weighted
    (``weights`` [n], 0 leaves it out). ``None`` when fewer than two roles or no default
    reply have weight.

    Example:
        >>> v = torch.tensor([[[2.0, 0.0]], [[0.0, 1.0]], [[0.0, 3.0]]])
        >>> rs = ReplySet(v, ["default", "role", "role"], ["d", "a", "b"], ["q", "q", "q"],
        ...               [0, 0, 0], [True, True, True])
        >>> default, roles, axis = build_axis(rs)
        >>> axis.tolist()
        [[2.0, -2.0]]
    """
    w = torch.ones(len(replies.kinds)) if weights is None else weights.float()
    keep = torch.tensor(replies.kept, dtype=torch.bool) & (w > 0)
    vectors = replies.vectors.float()

    def mean(index: list[int]) -> torch.Tensor | None:
        if not index:
            return None
        weight = w[index]
        return (vectors[index] * weight[:, None, None]).sum(0) / weight.sum()

    defaults = [i for i, k in enumerate(replies.kinds) if k == "default" and keep[i]]
    default = mean(defaults)
    roles: dict[str, torch.Tensor] = {}
    for name in sorted({n for n, k in zip(replies.names, replies.kinds) if k == "role"}):
        index = [
            i
            for i, (k, n) in enumerate(zip(replies.kinds, replies.names))
            if k == "role" and n == name and keep[i]
        ]
        vector = mean(index)
        if vector is not None:
            roles[name] = vector
    if default is None or len(roles) < 2:
        return None
    axis = default - torch.stack(list(roles.values())).mean(0)
    return default, roles, axis


def _halves(replies: ReplySet, by: str) -> tuple[torch.Tensor, torch.Tensor]:
    if by == "question":
        position = {q: i for i, q in enumerate(replies.question_order)}
        side = torch.tensor([position[q] % 2 for q in replies.questions])
    elif by == "prompt":
        side = torch.tensor([p % 2 for p in replies.prompts])
    else:
        raise PersonaspaceError(f"unknown split {by!r}", fix="use question or prompt")
    return (side == 0).float(), (side == 1).float()


def split_half(replies: ReplySet, by: str = "question") -> list[float] | None:
    """Per layer, the cosine between the axes of the two halves (``None`` if a half has
    too few roles).

    Example:
        >>> v = torch.randn(8, 2, 4)
        >>> rs = ReplySet(v, ["default", "role", "role", "role"] * 2, ["d", "a", "b", "c"] * 2,
        ...               ["q1"] * 4 + ["q2"] * 4, [0] * 8, [True] * 8)
        >>> len(split_half(rs))
        2
    """
    first, second = _halves(replies, by)
    a, b = build_axis(replies, first), build_axis(replies, second)
    if a is None or b is None:
        return None
    return [cosine(a[2][i], b[2][i]) for i in range(replies.vectors.shape[1])]


def space_figures(
    default: torch.Tensor, roles: dict[str, torch.Tensor], axis: torch.Tensor, row: int
) -> tuple[float, int]:
    """cos(axis, PC1) and the default's rank on PC1 (1 = beyond every role) at ``row``."""
    names = sorted(roles)
    space = pca(torch.stack([roles[n][row] for n in names])).toward(default[row])
    default_score = space.score(default[row])
    rank = 1 + int((space.scores[:, 0] > default_score).sum())
    return float(unit(axis[row]) @ space.components[0].contiguous()), rank


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval: the estimate on all data, the bounds, the draws."""

    estimate: float
    low: float
    high: float
    level: float
    n: int

    def to_json(self) -> dict[str, float | int]:
        return {
            "estimate": round(self.estimate, 4),
            "low": round(self.low, 4),
            "high": round(self.high, 4),
            "level": self.level,
            "n": self.n,
        }


def bootstrap_over_questions(
    replies: ReplySet, row: int, *, draws: int = 200, level: float = 0.95, seed: int = 0
) -> tuple[Interval, Interval] | None:
    """Percentile intervals for cos(axis, PC1) and the default's PC1 rank at vector row
    ``row``, questions resampled with replacement (``None`` without an axis)."""
    full = build_axis(replies)
    if full is None:
        return None
    cos0, rank0 = space_figures(*full, row)
    questions = replies.question_order
    index = {q: i for i, q in enumerate(questions)}
    of_reply = torch.tensor([index[q] for q in replies.questions])
    rng = np.random.default_rng(seed)
    cosines, ranks = [], []
    for _ in range(draws):
        counts = np.bincount(
            rng.integers(0, len(questions), len(questions)), minlength=len(questions)
        )
        built = build_axis(replies, torch.from_numpy(counts).float()[of_reply])
        if built is None or len(built[1]) < 3:
            continue
        c, r = space_figures(*built, row)
        cosines.append(c)
        ranks.append(r)
    if not cosines:
        return None
    tail = (1 - level) / 2
    cos_low, cos_high = np.quantile(cosines, [tail, 1 - tail]).tolist()
    rank_low, rank_high = np.quantile(ranks, [tail, 1 - tail]).tolist()
    cos_ci = Interval(cos0, cos_low, cos_high, level, len(cosines))
    rank_ci = Interval(float(rank0), rank_low, rank_high, level, len(ranks))
    return cos_ci, rank_ci


def held_out_auc(replies: ReplySet) -> list[float] | None:
    """Per layer: AUC of held-out default vs role replies projected on an axis built from the
    other half of the questions (both directions averaged; 1 = every default reply sits
    further toward the Assistant than every role reply, 0.5 = chance)."""
    first, second = _halves(replies, "question")
    n_layers = replies.vectors.shape[1]
    totals = np.zeros(n_layers)
    for train, test in ((first, second), (second, first)):
        built = build_axis(replies, train)
        if built is None:
            return None
        axis = unit(built[2])  # [L, H]
        defaults = [
            i for i, k in enumerate(replies.kinds) if k == "default" and test[i] and replies.kept[i]
        ]
        roles = [
            i for i, k in enumerate(replies.kinds) if k == "role" and test[i] and replies.kept[i]
        ]
        if not defaults or not roles:
            return None
        on_axis = (replies.vectors.float() * axis).sum(-1)  # [n, L]
        for layer in range(n_layers):
            d, r = on_axis[defaults, layer].numpy(), on_axis[roles, layer].numpy()
            totals[layer] += mannwhitneyu(d, r).statistic / (len(d) * len(r))
    return (totals / 2).tolist()


def best_layer(aucs: Sequence[float], layers: Sequence[int]) -> int:
    """The layer with the highest held-out AUC (the earliest of ties).

    Example:
        >>> best_layer([0.6, 0.9, 0.9], [4, 5, 6])
        5
    """
    best = max(range(len(aucs)), key=lambda i: (aucs[i], -i))
    return int(layers[best])
