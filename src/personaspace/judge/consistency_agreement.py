"""Measuring a consistency judge against hand labels (``tests/data/consistency_labels.jsonl``).

Each labelled row holds a ``measure`` (``prompt_to_line``, ``line_to_line`` or ``qa``), a
``persona`` (``assistant`` or a catalogue role), the ``earlier`` lines of the same speaker,
the ``context`` (what the line answered: for ``qa``, the question), the ``line``, the label
``contradicts`` and a one-line ``reason``. A row is judged the way the measure judges it:
against the persona's statement (``prompt_to_line``), against each earlier line, any
contradiction counting (``line_to_line``), or against the answer the persona should give
to the question (``qa``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from personaspace.catalogue import Catalogue
from personaspace.errors import PersonaspaceError
from personaspace.judge.agreement import cohen_kappa
from personaspace.judge.consistency import ConsistencyItem, ConsistencyJudge
from personaspace.judge.personas import PERSONA_QUESTIONS, resolve_persona

LABEL_KEYS = ("id", "measure", "persona", "context", "earlier", "line", "contradicts", "reason")


@dataclass(frozen=True)
class LabelledLine:
    """One hand-labelled row: the pairs a measure would judge, and the label."""

    id: str
    measure: str
    pairs: tuple[ConsistencyItem, ...]
    contradicts: bool


def read_consistency_labels(path: str | Path, catalogue: Catalogue) -> list[LabelledLine]:
    """The labelled rows of a JSONL file, each turned into the pairs its measure judges."""
    rows = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
    asked = {q.text: q for q in PERSONA_QUESTIONS}
    result = []
    for n, row in enumerate(rows, 1):
        missing = [k for k in LABEL_KEYS if k not in row]
        if missing:
            raise PersonaspaceError(
                f"{path} line {n} lacks {', '.join(missing)}", fix=f"give {', '.join(LABEL_KEYS)}"
            )
        persona = resolve_persona(row["persona"], catalogue)
        line, context = str(row["line"]), str(row["context"])
        pairs: tuple[ConsistencyItem, ...]
        if row["measure"] == "prompt_to_line":
            pairs = (ConsistencyItem(persona.statement, line, context),)
        elif row["measure"] == "line_to_line":
            pairs = tuple(ConsistencyItem(str(e), line, context) for e in row["earlier"])
        elif row["measure"] == "qa":
            question = asked.get(context)
            reference = question.expected(persona) if question else persona.statement
            pairs = (ConsistencyItem(reference, line, context),)
        else:
            raise PersonaspaceError(
                f"{path} line {n} has unknown measure {row['measure']!r}",
                fix="use prompt_to_line, line_to_line or qa",
            )
        result.append(LabelledLine(str(row["id"]), row["measure"], pairs, bool(row["contradicts"])))
    return result


def judge_lines(judge: ConsistencyJudge, lines: list[LabelledLine]) -> list[float | None]:
    """Each row's score: the highest of its pairs' (``None`` if none could be scored).

    Example:
        >>> from personaspace.judge.consistency_local import LocalConsistencyJudge
        >>> row = LabelledLine("x", "line_to_line", (ConsistencyItem("I am an AI.", "Hi."),
        ...                    ConsistencyItem("I am 30 years old.", "I'm 31 years old.")), True)
        >>> judge_lines(LocalConsistencyJudge(negation=False), [row])
        [1.0]
    """
    items = [p for line in lines for p in line.pairs]
    scores = judge.contradictions(items)
    result: list[float | None] = []
    start = 0
    for line in lines:
        mine = [s for s in scores[start : start + len(line.pairs)] if s is not None]
        start += len(line.pairs)
        result.append(max(mine) if mine else None)
    return result


@dataclass(frozen=True)
class Agreement:
    """A judge's verdicts against the labels, beside always answering the majority label."""

    n: int
    accuracy: float
    kappa: float
    majority_accuracy: float
    positives: int

    def to_json(self) -> dict[str, float | int]:
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "kappa": self.kappa,
            "majority_accuracy": self.majority_accuracy,
            "labelled_contradictions": self.positives,
        }


def agreement(verdicts: list[bool], labels: list[bool]) -> Agreement:
    """Accuracy and Cohen's kappa of ``verdicts`` against ``labels``, and the majority baseline.

    Example:
        >>> a = agreement([True, False, False, False], [True, True, False, False])
        >>> a.accuracy, a.kappa, a.majority_accuracy
        (0.75, 0.5, 0.5)
    """
    if not labels or len(verdicts) != len(labels):
        raise PersonaspaceError(
            f"{len(verdicts)} verdicts for {len(labels)} labels", fix="give one per label"
        )
    n = len(labels)
    positives = sum(labels)
    accuracy = sum(v == y for v, y in zip(verdicts, labels)) / n
    kappa = cohen_kappa([int(v) for v in verdicts], [int(y) for y in labels], k=2)
    return Agreement(n, accuracy, kappa, max(positives, n - positives) / n, positives)
