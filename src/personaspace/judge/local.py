"""The offline judge: lexical markers of "I am an AI" plus sentence-embedding similarity.

Role adherence (0-3). Two kinds of evidence:

* **AI identity / refusal markers**: phrases by which a reply presents itself as an AI,
  a language model or an assistant, or declines ("as an AI", "I don't have personal
  feelings", "I can't help with that").
* **Role similarity**: the cosine between the reply's sentence embedding
  (all-MiniLM-L6-v2) and the role's description plus what an in-role answer looks like.

Rule: without markers, similarity >= ``in_role`` is 3, >= ``some_role`` is 2, else 1 (an
answer that shows nothing of the role); with markers, similarity >= ``in_role`` is 2
(an AI that still plays along), else 0. The thresholds were fit on 176 hand-labelled
replies of the bundled models (``tests/data/judge_labels.jsonl``);
``bench/judge_agreement.py`` refits them and reports cross-validated accuracy and Cohen's
kappa. On that set the judge agrees with the labels moderately (quadratic kappa about
0.5; see BENCHMARKS.md): good enough to rank and filter, not to replace an LLM judge.

Trait expression (0-100) compares the reply's similarity to the trait's positive and
negative instructions: ``50 + 50 * tanh(k * (sim_pos - sim_neg))``. It is not calibrated
against labels; treat it as a rough filter and prefer an LLM judge for trait studies.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from personaspace.judge.base import RoleItem, TraitItem
from personaspace.judge.embeddings import embed

AI_MARKERS = re.compile(
    r"\b(as an? (ai|artificial|language model|digital assistant|virtual assistant|assistant)"
    r"|i('m| am) (an? )?(ai|artificial intelligence|language model|chatbot|computer program"
    r"|virtual assistant|digital assistant|ai assistant|machine)"
    r"|(large )?language model|ai assistant|i('m| am) (just )?a (program|bot)"
    r"|i (don't|do not) have (personal|feelings|emotions|a body|physical|experiences|opinions"
    r"|a personal)|trained by|my (training|programming|creators)|smollm)\b",
    re.IGNORECASE,
)
REFUSAL_MARKERS = re.compile(
    r"\b(i (can't|cannot|won't|am unable to|'m unable to) (help|assist|do that|comply|provide"
    r"|fulfil|fulfill|pretend|role-?play)|i('m| am) (sorry|afraid),? but|i must decline)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class RoleFeatures:
    """What the role rule looks at: markers found, and the reply's similarity to the role."""

    ai: bool
    refusal: bool
    similarity: float


@dataclass(frozen=True)
class Thresholds:
    """Similarity cut-offs of the role rule (fit by ``bench/judge_agreement.py``)."""

    in_role: float = 0.32
    some_role: float = 0.26


def role_features(items: list[RoleItem]) -> list[RoleFeatures]:
    """The evidence the rule scores from, for each item."""
    if not items:
        return []
    answers = embed([it.answer or " " for it in items])
    roles = embed([f"{it.role.description} {it.role.in_role}" for it in items])
    similarity = (answers * roles).sum(-1)
    return [
        RoleFeatures(
            bool(AI_MARKERS.search(it.answer)), bool(REFUSAL_MARKERS.search(it.answer)), float(m)
        )
        for it, m in zip(items, similarity)
    ]


def score_role(f: RoleFeatures, t: Thresholds) -> int:
    """0-3 from the features (see the module docstring).

    Example:
        >>> t = Thresholds(in_role=0.4, some_role=0.2)
        >>> [score_role(RoleFeatures(False, False, s), t) for s in (0.1, 0.3, 0.5)]
        [1, 2, 3]
        >>> score_role(RoleFeatures(True, False, 0.1), t)
        0
    """
    if f.ai or f.refusal:
        return 2 if f.similarity >= t.in_role else 0
    if f.similarity >= t.in_role:
        return 3
    return 2 if f.similarity >= t.some_role else 1


class LocalJudge:
    """Offline judge; see the module docstring for the method and its measured agreement."""

    name = "local"

    def __init__(self, thresholds: Thresholds | None = None, trait_gain: float = 8.0) -> None:
        self.thresholds = thresholds or Thresholds()
        self.trait_gain = trait_gain

    def check(self) -> None:
        embed(["ready"])

    def score_roles(self, items: list[RoleItem]) -> list[int | None]:
        return [
            None if not it.answer.strip() else score_role(f, self.thresholds)
            for it, f in zip(items, role_features(items))
        ]

    def score_traits(self, items: list[TraitItem]) -> list[float | None]:
        if not items:
            return []
        answers = embed([it.answer or " " for it in items])
        pos = embed([" ".join(p.pos for p in it.trait.pairs) for it in items])
        neg = embed([" ".join(p.neg for p in it.trait.pairs) for it in items])
        diff = (answers * pos).sum(-1) - (answers * neg).sum(-1)
        return [
            None if not it.answer.strip() else 50 + 50 * math.tanh(self.trait_gain * float(d))
            for it, d in zip(items, diff)
        ]
