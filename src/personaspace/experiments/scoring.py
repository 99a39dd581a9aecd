"""Capability items: how they are asked and how a reply is scored (exact match, no judge).

Multiple choice (``mc``): the question, the choices as ``A. ...`` lines, and "Answer with
the letter of the correct choice only." The reply's choice is, in this order: a letter
opening the reply (``B``, ``B.``, ``(B)``, ``B) ...``), a letter after "answer is", or
else the one choice whose text appears in the reply (none if several do). Correct when it
is the item's letter.

Exact (``exact``): the question and "Answer with the answer alone (a number or a word)."
Reply and answer are lower-cased and split into words (letters and digits); the reply is
correct when it starts or ends with the answer's words (``"5"``, ``"2 + 3 = 5"``, ``"Ice."``
all match ``5``/``ice``). Anything else is wrong, including an empty reply. The rule is
lenient at the end of a reply (small models restate the question first), so a reply that
names another answer and ends with the right one counts as correct.
"""

from __future__ import annotations

import re

from personaspace.catalogue import CapabilityItem

LETTERS = "ABCDEFGH"
MC_INSTRUCTION = "Answer with the letter of the correct choice only."
EXACT_INSTRUCTION = "Answer with the answer alone (a number or a word)."
_WORD = re.compile(r"[a-z0-9]+")


def capability_prompt(item: CapabilityItem) -> str:
    """The user message that asks ``item``.

    Example:
        >>> item = CapabilityItem("c", "t", "mc", "2 + 2?", "B", ("3", "4"))
        >>> print(capability_prompt(item))
        2 + 2?
        A. 3
        B. 4
        Answer with the letter of the correct choice only.
    """
    if item.kind == "mc":
        options = "\n".join(f"{letter}. {text}" for letter, text in zip(LETTERS, item.choices))
        return f"{item.question}\n{options}\n{MC_INSTRUCTION}"
    return f"{item.question}\n{EXACT_INSTRUCTION}"


def words(text: str) -> list[str]:
    """Lower-cased runs of letters and digits.

    Example:
        >>> words('The answer is "60".')
        ['the', 'answer', 'is', '60']
    """
    return _WORD.findall(text.lower())


def extract_choice(reply: str, item: CapabilityItem) -> str | None:
    """The letter a reply picks (see the module docstring), or ``None``.

    Example:
        >>> item = CapabilityItem("c", "t", "mc", "Capital of France?", "A",
        ...                       ("Paris", "Rome", "Berlin", "Madrid"))
        >>> [extract_choice(r, item) for r in ("B. Rome", "(c)", "The answer is D",
        ...                                   "It is Paris.", "Paris or Rome", "no idea")]
        ['B', 'C', 'D', 'A', None, None]
    """
    letters = LETTERS[: len(item.choices)]
    text = reply.strip()
    opening = re.match(rf"^\(?([{letters}])(?:[\).:]|\s|$)", text) or re.match(
        rf"^\(?([{letters.lower()}])[\).:]", text
    )
    if opening:
        return opening.group(1).upper()
    stated = re.search(rf"(?i:answer is):?\s*\(?([{letters}])\b", text)
    if stated:
        return stated.group(1)
    reply_words = f" {' '.join(words(text))} "
    named = [
        letter
        for letter, choice in zip(letters, item.choices)
        if words(choice) and f" {' '.join(words(choice))} " in reply_words
    ]
    return named[0] if len(named) == 1 else None


def is_correct(item: CapabilityItem, reply: str) -> bool:
    """Exact-match scoring of one reply.

    Example:
        >>> item = CapabilityItem("c", "arithmetic", "exact", "2 + 3?", "5")
        >>> [is_correct(item, r) for r in ("5", "2 + 3 = 5", "5 apples", "It is 6.", "")]
        [True, True, True, False, False]
    """
    if item.kind == "mc":
        return extract_choice(reply, item) == item.answer
    target, got = words(item.answer), words(reply)
    if not target or len(got) < len(target):
        return False
    return got[: len(target)] == target or got[-len(target) :] == target


def chance_accuracy(items: list[CapabilityItem]) -> float:
    """The accuracy of guessing: 1/choices for a multiple-choice item, 0 for an exact one.

    Example:
        >>> mc = CapabilityItem("a", "t", "mc", "q", "A", ("x", "y", "z", "w"))
        >>> chance_accuracy([mc, CapabilityItem("b", "t", "exact", "q", "5")])
        0.125
    """
    if not items:
        return 0.0
    return sum(1 / len(i.choices) if i.kind == "mc" and i.choices else 0.0 for i in items) / len(
        items
    )
