"""A fitted role judge, measured against the marker rule by ``bench/judge_agreement.py``.

Not shipped: on the 536 hand labels it agrees less with them (role-grouped cross-validated
quadratic kappa 0.56) than the rule ``--judge local`` uses (0.60); see BENCHMARKS.md. It is
kept here so the comparison can be rerun and improved on.

The marker-and-similarity rule (``judge.local``) asks one question: is the reply close to
its role's description? Many generic replies are, a little. This judge asks instead how
much the reply points at *its* role rather than at any other: the reply's sentence
embedding (all-MiniLM-L6-v2) is compared with every role of the reference set (the
built-in catalogue's roles, plus the reply's own role when it is not among them), and the
features are

* ``sim``: cosine with its own role's description and in-role text;
* ``z``: that cosine as a z-score among the cosines with every reference role;
* ``rank``: how many reference roles the reply is closer to than to its own (log1p);
* ``title_sim``, ``title_z``: the same with the role's name alone;
* ``sentence_max``: the best cosine of any one sentence of the reply with its own role;
* ``ai``, ``refusal``: the AI-identity and refusal markers of ``judge.local``.

A multinomial logistic regression on the standardised features gives P(score = k); the
judge answers the class whose cumulative probability first reaches one half from the top
(``P(score >= k) >= 1/2`` for the highest such k, an ordinal reading of the classes).
``bench/judge_agreement.py`` fits it on the hand labels with scikit-learn.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch

from personaspace.catalogue import Role, load_catalogue
from personaspace.errors import PersonaspaceError
from personaspace.judge.base import RoleItem
from personaspace.judge.embeddings import embed
from personaspace.judge.local import AI_MARKERS, REFUSAL_MARKERS

FEATURES = ("sim", "z", "rank", "title_sim", "title_z", "sentence_max", "ai", "refusal")
SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass(frozen=True)
class RoleModel:
    """Standardisation and multinomial logistic coefficients over ``FEATURES``."""

    classes: tuple[int, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[tuple[float, ...], ...]  # [classes][features]
    intercept: tuple[float, ...]
    fitted_on: str = ""

    def probabilities(self, features: list[float]) -> list[float]:
        """P(class) for one feature row.

        Example:
            >>> m = RoleModel((0, 1), (0.0,) * 8, (1.0,) * 8, ((0.0,) * 8, (1.0,) + (0.0,) * 7),
            ...               (0.0, 0.0))
            >>> [round(p, 3) for p in m.probabilities([0.0] * 8)]
            [0.5, 0.5]
        """
        x = [(v - m) / s for v, m, s in zip(features, self.mean, self.scale)]
        logits = [
            b + sum(w * v for w, v in zip(row, x)) for row, b in zip(self.coef, self.intercept)
        ]
        top = max(logits)
        exp = [math.exp(v - top) for v in logits]
        total = sum(exp)
        return [e / total for e in exp]

    def score(self, features: list[float]) -> int:
        """The highest class k with P(score >= k) >= 1/2."""
        p = self.probabilities(features)
        tail = 0.0
        for k in range(len(p) - 1, -1, -1):
            tail += p[k]
            if tail >= 0.5:
                return self.classes[k]
        return self.classes[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "features": list(FEATURES),
            "classes": list(self.classes),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": [list(r) for r in self.coef],
            "intercept": list(self.intercept),
            "fitted_on": self.fitted_on,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoleModel:
        if list(data.get("features", [])) != list(FEATURES):
            raise PersonaspaceError(
                "the role judge's coefficients were fitted on other features",
                fix="refit them with bench/judge_agreement.py --write",
            )
        return cls(
            tuple(int(c) for c in data["classes"]),
            tuple(float(v) for v in data["mean"]),
            tuple(float(v) for v in data["scale"]),
            tuple(tuple(float(v) for v in row) for row in data["coef"]),
            tuple(float(v) for v in data["intercept"]),
            str(data.get("fitted_on", "")),
        )


def _role_text(role: Role) -> str:
    return f"{role.description} {role.in_role}"


@cache
def _reference() -> tuple[tuple[str, ...], torch.Tensor, torch.Tensor]:
    roles = sorted(load_catalogue().roles.values(), key=lambda r: r.name)
    names = tuple(r.name for r in roles)
    return names, embed([_role_text(r) for r in roles]), embed([_title(r) for r in roles])


def _title(role: Role) -> str:
    return role.name.replace("_", " ")


def _z(values: torch.Tensor, own: int) -> float:
    others = torch.cat([values[:own], values[own + 1 :]])
    return float((values[own] - others.mean()) / others.std().clamp_min(1e-6))


def role_features(items: list[RoleItem]) -> list[list[float]]:
    """The ``FEATURES`` row of each item (see the module docstring)."""
    if not items:
        return []
    names, texts, titles = _reference()
    extra = {it.role.name: it.role for it in items if it.role.name not in names}
    if extra:
        names = names + tuple(extra)
        texts = torch.cat([texts, embed([_role_text(r) for r in extra.values()])])
        titles = torch.cat([titles, embed([_title(r) for r in extra.values()])])
    answers = embed([it.answer or " " for it in items])
    sentences = [[s for s in SENTENCE.split(it.answer) if s.strip()] or [" "] for it in items]
    flat = embed([s for group in sentences for s in group])
    rows, start = [], 0
    for k, it in enumerate(items):
        own = names.index(it.role.name)
        by_role, by_title = texts @ answers[k], titles @ answers[k]
        sentence_max = float((flat[start : start + len(sentences[k])] @ texts[own]).max())
        start += len(sentences[k])
        rows.append(
            [
                float(by_role[own]),
                _z(by_role, own),
                math.log1p(float((by_role > by_role[own]).sum())),
                float(by_title[own]),
                _z(by_title, own),
                sentence_max,
                float(bool(AI_MARKERS.search(it.answer))),
                float(bool(REFUSAL_MARKERS.search(it.answer))),
            ]
        )
    return rows
