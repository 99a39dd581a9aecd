"""Near-duplicate measurement for prompts: Jaccard similarity of word 3-gram sets.

Two prompts written independently share few word triples; a templated copy ("You are a
pirate. Always answer as a pirate." / "You are a ghost. Always answer as a ghost.")
shares most of them. Text is lower-cased and reduced to words before comparison.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

WORD = re.compile(r"[a-z0-9']+")


def trigrams(text: str) -> frozenset[tuple[str, ...]]:
    """The set of consecutive word triples of ``text``.

    Example:
        >>> sorted(trigrams("The cat sat down"))
        [('cat', 'sat', 'down'), ('the', 'cat', 'sat')]
    """
    words = WORD.findall(text.lower())
    return frozenset(tuple(words[i : i + 3]) for i in range(len(words) - 2))


def jaccard(a: frozenset[tuple[str, ...]], b: frozenset[tuple[str, ...]]) -> float:
    """|a & b| / |a | b| (0 for two empty sets).

    Example:
        >>> jaccard(trigrams("a b c d"), trigrams("a b c e"))
        0.3333333333333333
    """
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def most_similar_pairs(
    texts: Sequence[tuple[str, str]], top: int = 5, floor: float = 0.15
) -> list[tuple[float, str, str]]:
    """The ``top`` most similar ``(score, label_a, label_b)`` pairs among labelled texts.

    An inverted index over trigrams compares only pairs that share at least one trigram.
    """
    grams = [(label, trigrams(text)) for label, text in texts]
    index: dict[tuple[str, ...], list[int]] = {}
    for i, (_, g) in enumerate(grams):
        for gram in g:
            index.setdefault(gram, []).append(i)
    candidates: set[tuple[int, int]] = set()
    for members in index.values():
        candidates.update(itertools.combinations(members, 2))
    scored = []
    for i, j in candidates:
        score = jaccard(grams[i][1], grams[j][1])
        if score >= floor:
            scored.append((score, grams[i][0], grams[j][0]))
    return sorted(scored, reverse=True)[:top]
