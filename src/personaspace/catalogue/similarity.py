"""Near-duplicate measurement for prompts: Jaccard similarity of word 3-gram sets.

Two prompts written independently share few word triples; a templated copy ("You are a
pirate. Always answer as a pirate." / "You are a ghost. Always answer as a ghost.")
shares most of them once each prompt's own character name is masked. Text is lower-cased
and reduced to words (a trailing possessive 's dropped) before comparison; words of the
character's name are replaced by one placeholder so a name swap does not hide a template.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence

WORD = re.compile(r"[a-z0-9']+")


def trigrams(text: str, masked: Iterable[str] = ()) -> frozenset[tuple[str, ...]]:
    """The set of consecutive word triples of ``text``, words in ``masked`` replaced by ``*``.

    Example:
        >>> sorted(trigrams("The cat sat down"))
        [('cat', 'sat', 'down'), ('the', 'cat', 'sat')]
        >>> sorted(trigrams("The cat's hat", masked={"cat"}))
        [('the', '*', 'hat')]
    """
    hidden = {w.lower() for w in masked}
    words = [w.removesuffix("'s") for w in WORD.findall(text.lower())]
    words = ["*" if w in hidden else w for w in words]
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
    texts: Sequence[tuple[str, str] | tuple[str, str, Iterable[str]]],
    top: int = 5,
    floor: float = 0.15,
) -> list[tuple[float, str, str]]:
    """The ``top`` most similar ``(score, label_a, label_b)`` pairs among labelled texts.

    Each item is ``(label, text)`` or ``(label, text, masked_words)``. An inverted index
    over trigrams compares only pairs that share at least one trigram.

    Example:
        >>> pairs = most_similar_pairs([
        ...     ("a", "You are a pirate. Speak as a pirate would.", {"pirate"}),
        ...     ("b", "You are a ghost. Speak as a ghost would.", {"ghost"}),
        ...     ("c", "Tell me about the sea, old sailor.", {"sailor"}),
        ... ])
        >>> pairs[0]
        (1.0, 'a', 'b')
    """
    grams = [(item[0], trigrams(item[1], item[2] if len(item) > 2 else ())) for item in texts]
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
