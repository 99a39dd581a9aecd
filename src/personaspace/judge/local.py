"""The offline judge: lexical markers of "I am an AI" plus sentence-embedding similarity.

Role adherence (0-3). Two kinds of evidence:

* **AI identity / refusal markers**: phrases by which a reply presents itself as an AI,
  a language model or an assistant, or declines ("as an AI", "I don't have personal
  feelings", "I can't help with that").
* **Role vs Assistant similarity**: the margin between the reply's embedding similarity to
  the role (its description and what an in-role answer looks like) and to a description
  of a generic AI assistant's reply.

Rule: with AI markers, a refusal that shows no role is 0, a reply that shows the role
(margin >= ``ai_with_role``) is 2, else 1; without AI markers, a reply that shows the role
(margin >= ``in_role``) is 3, else 1 (a generic assistant answer). The thresholds were fit
on hand labels (``tests/data/judge_labels.jsonl``; ``bench/judge_agreement.py`` refits
them and reports held-out accuracy and Cohen's kappa).

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
ASSISTANT_REFERENCE = (
    "A helpful AI assistant answers politely and neutrally, explains it is an AI language "
    "model without personal experiences, and offers general information and assistance."
)


@dataclass(frozen=True)
class RoleFeatures:
    ai: bool
    refusal: bool
    margin: float


@dataclass(frozen=True)
class Thresholds:
    in_role: float = 0.02
    ai_with_role: float = 0.10


def role_features(items: list[RoleItem]) -> list[RoleFeatures]:
    """The evidence the rule scores from, for each item."""
    if not items:
        return []
    answers = embed([it.answer or " " for it in items])
    roles = embed([f"{it.role.description} {it.role.in_role}" for it in items])
    assistant = embed([ASSISTANT_REFERENCE])[0]
    margins = (answers * roles).sum(-1) - answers @ assistant
    return [
        RoleFeatures(
            bool(AI_MARKERS.search(it.answer)), bool(REFUSAL_MARKERS.search(it.answer)), float(m)
        )
        for it, m in zip(items, margins)
    ]


def score_role(f: RoleFeatures, t: Thresholds) -> int:
    """0-3 from the features (see the module docstring)."""
    if f.ai or f.refusal:
        if f.margin >= t.ai_with_role:
            return 2
        return 0 if f.refusal and not f.ai else 1
    return 3 if f.margin >= t.in_role else 1


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
