"""Persona consistency over a conversation: three measures of the assistant's replies.

For a persona (the Assistant, or a catalogue role: ``judge.personas``) and a judge of
contradictions (``judge.consistency``), each assistant turn ``t`` of a transcript gets:

- **prompt-to-line**: 1 if reply ``t`` does not contradict the persona's statement, else 0;
- **line-to-line** (from turn 2): ``1 - conflicts / judged``, where ``conflicts`` counts
  the earlier replies ``1..t-1`` that reply ``t`` contradicts and ``judged`` those the
  judge could score (every pair ``(i, t)`` with ``i < t`` is judged once);
- **Q&A** (when a model is given): after turn ``t`` each question of
  ``PERSONA_QUESTIONS`` is appended to the conversation so far and answered by the model
  (greedy, ``QA_SAMPLING``); the score is the share of answers that do not contradict
  what the persona should answer.

A conversation's score on each measure is the mean of its turns' scores (turns the judge
could not score are left out; ``None`` when none could be). Higher is more consistent.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from personaspace.capture import SamplingConfig, generate
from personaspace.conversation.prompts import format_prompt
from personaspace.errors import PersonaspaceError
from personaspace.judge.consistency import ConsistencyItem, ConsistencyJudge, contradicts
from personaspace.judge.personas import PERSONA_QUESTIONS, Persona, PersonaQuestion
from personaspace.models.loading import LoadedModel
from personaspace.monitor.transcripts import Transcript

MEASURES: tuple[str, ...] = ("prompt_to_line", "line_to_line", "qa")
QA_SAMPLING = SamplingConfig(max_new_tokens=40)  # greedy: the same answers on every run
META_KEYS = ("condition", "scenario", "expect", "topic")


@dataclass(frozen=True)
class QAAnswer:
    """One answer to a persona question after a turn, and whether it contradicts."""

    question: str
    answer: str
    score: float | None
    contradicts: bool | None


@dataclass(frozen=True)
class TurnScore:
    """The three measures at one assistant turn (1-based); ``None`` where not measured."""

    turn: int
    reply: str
    persona_score: float | None
    prompt_to_line: float | None
    conflicts: int
    judged_pairs: int
    line_to_line: float | None
    qa: float | None
    answers: tuple[QAAnswer, ...] = ()


@dataclass(frozen=True)
class ConversationScore:
    """One transcript's turns and its mean score on each measure."""

    name: str
    source: str
    domain: str | None
    meta: dict[str, Any]
    turns: tuple[TurnScore, ...]

    def mean(self, measure: str) -> float | None:
        """The mean over turns of ``measure`` (``None`` where no turn has it).

        Example:
            >>> t = [TurnScore(1, "a", 0.0, 1.0, 0, 0, None, None),
            ...      TurnScore(2, "b", 1.0, 0.0, 1, 1, 0.0, None)]
            >>> c = ConversationScore("c", "c.json", None, {}, tuple(t))
            >>> c.mean("prompt_to_line"), c.mean("line_to_line"), c.mean("qa")
            (0.5, 0.0, None)
        """
        values = [getattr(t, measure) for t in self.turns]
        finite = [v for v in values if v is not None]
        return float(np.mean(finite)) if finite else None


@dataclass
class ConsistencyReport:
    """Every conversation's turns and means, with the persona and the judge they used."""

    persona: Persona
    judge: str
    conversations: list[ConversationScore]
    qa_model: str | None = None
    questions: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        """Everything, as ``consistency.json`` holds it."""
        return {
            "persona": {
                "name": self.persona.name,
                "kind": self.persona.kind,
                "statement": self.persona.statement,
            },
            "judge": self.judge,
            "qa_model": self.qa_model,
            "questions": list(self.questions),
            "measures": list(MEASURES),
            "conversations": [
                {
                    "name": c.name,
                    "source": c.source,
                    "domain": c.domain,
                    **{k: c.meta[k] for k in META_KEYS if k in c.meta},
                    "means": {m: c.mean(m) for m in MEASURES},
                    "turns": [
                        {
                            "turn": t.turn,
                            "prompt_to_line": t.prompt_to_line,
                            "persona_score": t.persona_score,
                            "line_to_line": t.line_to_line,
                            "conflicts": t.conflicts,
                            "judged_pairs": t.judged_pairs,
                            "qa": t.qa,
                            "answers": [
                                {
                                    "question": a.question,
                                    "answer": a.answer,
                                    "score": a.score,
                                    "contradicts": a.contradicts,
                                }
                                for a in t.answers
                            ],
                        }
                        for t in c.turns
                    ],
                }
                for c in self.conversations
            ],
        }

    def turn_csv(self) -> str:
        """One row per (conversation, turn): the three measures and the conflict counts."""
        rows = [
            [
                c.name,
                c.domain or "",
                _group(c),
                t.turn,
                t.prompt_to_line,
                t.line_to_line,
                t.conflicts,
                t.judged_pairs,
                t.qa,
            ]
            for c in self.conversations
            for t in c.turns
        ]
        header = ["conversation", "domain", "group", "turn", *MEASURES[:2]]
        return _csv([*header, "conflicts", "judged_pairs", "qa"], rows)

    def conversation_csv(self) -> str:
        """One row per conversation: its mean on each measure."""
        rows = [
            [c.name, c.domain or "", _group(c), len(c.turns)] + [c.mean(m) for m in MEASURES]
            for c in self.conversations
        ]
        return _csv(["conversation", "domain", "group", "turns", *MEASURES], rows)

    def table(self) -> str:
        """The per-conversation means as aligned text.

        Example:
            >>> from personaspace.judge.personas import assistant_persona
            >>> t = TurnScore(1, "a", 0.0, 1.0, 0, 0, None, None)
            >>> r = ConsistencyReport(assistant_persona(), "stub",
            ...                       [ConversationScore("c", "c.json", None, {}, (t,))])
            >>> print(r.table())
            conversation  turns  prompt_to_line  line_to_line  qa
            c             1      1.00            -             -
        """
        head = ["conversation", "turns", *MEASURES]
        body = [
            [c.name, str(len(c.turns))] + [_fmt(c.mean(m)) for m in MEASURES]
            for c in self.conversations
        ]
        widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
        return "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [head, *body]
        )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _group(c: ConversationScore) -> str:
    return str(c.meta.get("condition") or c.meta.get("expect") or "")


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return buffer.getvalue()


def assistant_replies(transcript: Transcript) -> list[str]:
    """The assistant's replies, in order, after checking the transcript has user turns.

    Example:
        >>> from personaspace.monitor.transcripts import parse_transcript
        >>> t = parse_transcript([{"role": "user", "content": "Hi"},
        ...                       {"role": "assistant", "content": "Hello"}], "x.json")
        >>> assistant_replies(t)
        ['Hello']
    """
    if not any(m.role == "user" for m in transcript.messages):
        raise PersonaspaceError(
            f"{transcript.source} has no user turns",
            fix="consistency is measured on conversations: give user and assistant turns",
        )
    replies = [m.content for m in transcript.messages if m.role == "assistant"]
    if not replies:
        raise PersonaspaceError(
            f"{transcript.source} has no assistant turns",
            fix="consistency is measured on the assistant's replies: give some",
        )
    return replies


def user_turns(transcript: Transcript) -> list[str]:
    """The user message each assistant reply answers ('' for a reply with none before it)."""
    asked, last = [], ""
    for m in transcript.messages:
        if m.role == "user":
            last = m.content
        elif m.role == "assistant":
            asked.append(last)
    return asked


def line_pairs(n_lines: int) -> list[tuple[int, int]]:
    """Every (earlier, later) pair of ``n_lines`` lines, 0-based, by later line then earlier.

    Example:
        >>> line_pairs(4)
        [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]
    """
    return [(i, t) for t in range(n_lines) for i in range(t)]


def asked_turns(n_turns: int, turns: Sequence[int] | None) -> list[int]:
    """The 0-based turns to ask after: all (``None``), or the 1-based ``turns`` given
    (negative ones count from the end; those past the conversation are skipped).

    Example:
        >>> asked_turns(4, None), asked_turns(4, [1, -1]), asked_turns(2, [3])
        ([0, 1, 2, 3], [0, 3], [])
    """
    if turns is None:
        return list(range(n_turns))
    chosen = {t - 1 if t > 0 else n_turns + t for t in turns if t != 0}
    return sorted(t for t in chosen if 0 <= t < n_turns)


def qa_prompts(
    lm: LoadedModel,
    transcript: Transcript,
    questions: Sequence[PersonaQuestion],
    turns: Sequence[int] | None = None,
) -> list[tuple[int, PersonaQuestion, Any]]:
    """``(turn index, question, prompt)`` for every question after every assistant turn
    (or those ``turns`` picks, as ``asked_turns`` reads them): the conversation up to and
    including that reply, then the question as the user's."""
    ends = [k for k, m in enumerate(transcript.messages) if m.role == "assistant"]
    return [
        (turn, q, format_prompt(lm, q.text, history=transcript.messages[: ends[turn] + 1]))
        for turn in asked_turns(len(ends), turns)
        for q in questions
    ]


def answer_questions(
    lm: LoadedModel,
    transcripts: Sequence[Transcript],
    questions: Sequence[PersonaQuestion] = PERSONA_QUESTIONS,
    *,
    sampling: SamplingConfig = QA_SAMPLING,
    turns: Sequence[int] | None = None,
    batch_size: int | None = None,
    on_batch: Callable[[int], object] | None = None,
) -> list[list[list[str | None]]]:
    """The model's answers ``[conversation][turn][question]`` to the persona questions,
    asked after every turn or after ``turns`` (1-based, negative from the end; the others
    are ``None``).

    Example:
        >>> answers = answer_questions(lm, transcripts)  # doctest: +SKIP
        >>> answers[0][0][1]  # conversation 1, after turn 1, the body question  # doctest: +SKIP
        'No, I am a computer program.'
    """
    if not questions:
        raise PersonaspaceError("there are no questions to ask", fix="give at least one")
    jobs = [
        (c, turn, q, p)
        for c, t in enumerate(transcripts)
        for turn, q, p in qa_prompts(lm, t, questions, turns)
    ]
    replies = generate(
        lm,
        [p for *_, p in jobs],
        sampling.for_model(lm.chat_tuned),
        reductions=(),
        batch_size=batch_size,
        seeds=[sampling.seed] * len(jobs),
        on_batch=on_batch,
    )
    shaped: list[list[list[str | None]]] = [
        [[None for _ in questions] for _ in range(t.n_assistant_turns)] for t in transcripts
    ]
    order = {q.id: i for i, q in enumerate(questions)}
    for (c, turn, q, _), reply in zip(jobs, replies):
        shaped[c][turn][order[q.id]] = reply.text.strip()
    return shaped


def score_consistency(
    transcripts: Sequence[Transcript],
    persona: Persona,
    judge: ConsistencyJudge,
    *,
    answers: Sequence[Sequence[Sequence[str | None]]] | None = None,
    questions: Sequence[PersonaQuestion] = PERSONA_QUESTIONS,
    qa_model: str | None = None,
) -> ConsistencyReport:
    """The three measures for every transcript (Q&A only when ``answers`` are given, as
    ``answer_questions`` returns them; ``None`` answers were not asked). All pairs go to
    the judge in one call.

    Example:
        >>> from personaspace.judge.consistency_local import LocalConsistencyJudge
        >>> from personaspace.judge.personas import assistant_persona
        >>> from personaspace.monitor.transcripts import parse_transcript
        >>> t = parse_transcript([{"role": "user", "content": "Who are you?"},
        ...     {"role": "assistant", "content": "I am an AI assistant."},
        ...     {"role": "user", "content": "Really?"},
        ...     {"role": "assistant", "content": "No. I am a real person from Ohio."}], "x.json")
        >>> r = score_consistency([t], assistant_persona(), LocalConsistencyJudge(negation=False))
        >>> [(s.prompt_to_line, s.line_to_line) for s in r.conversations[0].turns]
        [(1.0, None), (0.0, 0.0)]
    """
    replies = [assistant_replies(t) for t in transcripts]
    asked = [user_turns(t) for t in transcripts]
    if answers is not None and len(answers) != len(transcripts):
        raise PersonaspaceError(
            f"{len(answers)} sets of answers for {len(transcripts)} transcripts",
            fix="give one set per transcript",
        )
    items: list[ConsistencyItem] = []
    where: list[tuple[str, int, int, int]] = []  # (measure, conversation, turn, other)
    for c, (lines, users) in enumerate(zip(replies, asked)):
        for t, (line, user) in enumerate(zip(lines, users)):
            items.append(ConsistencyItem(persona.statement, line, user))
            where.append(("prompt_to_line", c, t, -1))
        for i, t in line_pairs(len(lines)):
            items.append(ConsistencyItem(lines[i], lines[t], users[t]))
            where.append(("line_to_line", c, t, i))
        if answers is not None:
            for t, row in enumerate(answers[c]):
                for q, answer in zip(questions, row):
                    if answer is None:  # not asked after this turn
                        continue
                    items.append(ConsistencyItem(q.expected(persona), answer, q.text))
                    where.append(("qa", c, t, questions.index(q)))
    scores = judge.contradictions(items) if items else []
    if len(scores) != len(items):
        raise PersonaspaceError(
            f"the judge {judge.name} returned {len(scores)} scores for {len(items)} items",
            fix="a judge returns one score per item",
        )
    persona_scores: dict[tuple[int, int], float | None] = {}
    pairs: dict[tuple[int, int], list[bool]] = {}
    qa: dict[tuple[int, int], list[QAAnswer]] = {}
    for (measure, c, t, other), item, score in zip(where, items, scores):
        if measure == "prompt_to_line":
            persona_scores[c, t] = score
        elif measure == "line_to_line":
            verdict = contradicts(score)
            pairs.setdefault((c, t), [])
            if verdict is not None:
                pairs[c, t].append(verdict)
        else:
            qa_answer = QAAnswer(questions[other].text, item.line, score, contradicts(score))
            qa.setdefault((c, t), []).append(qa_answer)
    conversations = []
    for c, (transcript, lines) in enumerate(zip(transcripts, replies)):
        turns = []
        for t, line in enumerate(lines):
            p = persona_scores[c, t]
            verdicts = pairs.get((c, t), [])
            graded = [a.contradicts for a in qa.get((c, t), []) if a.contradicts is not None]
            answers_here = tuple(qa.get((c, t), []))
            turns.append(
                TurnScore(
                    turn=t + 1,
                    reply=line,
                    persona_score=p,
                    prompt_to_line=None if p is None else float(not contradicts(p)),
                    conflicts=sum(verdicts),
                    judged_pairs=len(verdicts),
                    line_to_line=1 - sum(verdicts) / len(verdicts) if verdicts else None,
                    qa=1 - sum(graded) / len(graded) if graded else None,
                    answers=answers_here,
                )
            )
        conversations.append(
            ConversationScore(
                transcript.name, transcript.source, transcript.domain, transcript.meta, tuple(turns)
            )
        )
    return ConsistencyReport(
        persona,
        judge.name,
        conversations,
        qa_model=qa_model if answers is not None else None,
        questions=tuple(q.text for q in questions) if answers is not None else (),
    )


def draw_consistency(report: ConsistencyReport) -> Callable[[Figure], None]:
    """A figure drawer: one panel per measure, each conversation's score by turn (thin,
    coloured by its group: condition or expected behaviour) and each group's mean (thick).

    Example:
        >>> from personaspace.report.plots import render_png
        >>> from personaspace.judge.personas import assistant_persona
        >>> t = TurnScore(1, "a", 0.0, 1.0, 0, 0, None, None)
        >>> r = ConsistencyReport(assistant_persona(), "stub",
        ...                       [ConversationScore("c", "c.json", None, {}, (t,))])
        >>> render_png(draw_consistency(r), (9, 3))[:4]
        b'\\x89PNG'
    """
    measures = [m for m in MEASURES if any(c.mean(m) is not None for c in report.conversations)]
    measures = measures or ["prompt_to_line"]
    groups = sorted({_group(c) for c in report.conversations})
    colours = {g: f"C{i % 10}" for i, g in enumerate(groups)}

    def draw(fig: Figure) -> None:
        for k, measure in enumerate(measures):
            ax = fig.add_subplot(1, len(measures), k + 1)
            for group in groups:
                chosen = [c for c in report.conversations if _group(c) == group]
                n_turns = max(len(c.turns) for c in chosen)
                table = np.full((len(chosen), n_turns), np.nan)
                for row, c in enumerate(chosen):
                    for t in c.turns:
                        value = getattr(t, measure)
                        table[row, t.turn - 1] = np.nan if value is None else value
                    ax.plot(range(1, n_turns + 1), table[row], color=colours[group], alpha=0.25)
                counts = np.isfinite(table).sum(0)
                mean = np.where(counts > 0, np.nansum(table, 0) / np.maximum(counts, 1), np.nan)
                ax.plot(
                    range(1, n_turns + 1),
                    mean,
                    color=colours[group],
                    linewidth=2.5,
                    label=group or "mean",
                )
            ax.set_ylim(-0.05, 1.05)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("assistant turn")
            ax.set_ylabel("consistency (1 = consistent)")
            ax.set_title(measure.replace("_", "-"))
            if k == 0:
                ax.legend(fontsize=7, loc="lower left")
        fig.suptitle(f"persona {report.persona.name}, judge {report.judge}", fontsize=9)

    return draw
