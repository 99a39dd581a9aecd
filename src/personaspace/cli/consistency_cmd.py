"""``personaspace consistency``: does the assistant stay the persona it should be, turn by
turn? (See ``personaspace.experiments.consistency`` for the three measures.)"""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from personaspace.catalogue import load_catalogue
from personaspace.cli.common import (
    add_model_options,
    check_model_options,
    load_model_as_asked,
    parse_layers,
    parse_names,
)
from personaspace.errors import PersonaspaceError
from personaspace.experiments.consistency import (
    QA_SAMPLING,
    answer_questions,
    asked_turns,
    assistant_replies,
    draw_consistency,
    score_consistency,
)
from personaspace.experiments.consistency_drift import DriftConsistency, consistency_by_condition
from personaspace.fileformat import atomic_write, write_json
from personaspace.judge.consistency import (
    CONSISTENCY_JUDGES,
    ConsistencyJudge,
    make_consistency_judge,
)
from personaspace.judge.personas import (
    PERSONA_QUESTIONS,
    Persona,
    PersonaQuestion,
    resolve_persona,
)
from personaspace.monitor.transcripts import read_transcripts
from personaspace.report.plots import save_png


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "consistency",
        help="score each assistant turn's consistency with a persona (three measures)",
        description="Score every assistant reply of transcripts for persona consistency: "
        "prompt-to-line (does it contradict the persona?), line-to-line (does it contradict "
        "the assistant's earlier replies?) and, with --model, Q&A (questions about the "
        "persona asked after every turn and graded). Writes consistency.json, "
        "consistency_turns.csv, consistency_conversations.csv and consistency.png; with "
        "--drift, per-condition scores of a drift run with paired tests against `none`.",
    )
    parser.add_argument("transcripts", nargs="*", metavar="TRANSCRIPT", help=".json / .jsonl")
    parser.add_argument(
        "--persona",
        default="assistant",
        help="assistant (the AI assistant's stated identity) or a catalogue role's name",
    )
    parser.add_argument(
        "--judge",
        choices=CONSISTENCY_JUDGES,
        default="local",
        help="local: identity claims + embeddings (offline); likelihood: a bundled model's "
        "p(yes); openai: any OpenAI-compatible endpoint",
    )
    parser.add_argument("--judge-model", default=None, help="the endpoint's model (openai)")
    parser.add_argument("--judge-base-url", default=None, help="default: $OPENAI_BASE_URL")
    parser.add_argument(
        "--model", default=None, help="the model under test, which answers the Q&A questions"
    )
    parser.add_argument(
        "--questions",
        default=None,
        help="comma-separated question ids to ask (default: all: "
        + ",".join(q.id for q in PERSONA_QUESTIONS)
        + ")",
    )
    parser.add_argument(
        "--qa-turns",
        default=None,
        help="comma-separated turns to ask after, 1-based, negative from the end "
        "(default: every turn; e.g. 1,-1)",
    )
    parser.add_argument(
        "--drift", default=None, metavar="DIR", help="a drift run folder: score its conditions"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output folder (default: ./consistency-<first transcript stem>, or the --drift "
        "folder)",
    )
    add_model_options(parser)
    parser.set_defaults(run=run, param_flags={"persona": "--persona", "judge": "--judge"})


def _questions(text: str | None) -> tuple[PersonaQuestion, ...]:
    if text is None:
        return PERSONA_QUESTIONS
    known = {q.id: q for q in PERSONA_QUESTIONS}
    names = parse_names(text)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise PersonaspaceError(
            f"--questions: unknown question id(s) {', '.join(unknown) or '(none given)'}",
            fix=f"choose among {', '.join(known)}",
        )
    return tuple(known[n] for n in names)


def _qa_turns(text: str | None) -> list[int] | None:
    if text is None:
        return None
    turns = parse_layers(text, "--qa-turns")
    if turns is None or 0 in turns:
        raise PersonaspaceError("--qa-turns holds 0", fix="turns count from 1 (or -1 from the end)")
    return turns


def _check(args: argparse.Namespace) -> None:
    if args.drift is None and not args.transcripts:
        raise PersonaspaceError("no transcripts given", fix="give TRANSCRIPT files or --drift DIR")
    if args.drift is not None and args.transcripts:
        raise PersonaspaceError(
            "both transcripts and --drift are given", fix="give one or the other"
        )
    if args.drift is not None and args.model is not None:
        raise PersonaspaceError(
            "--model (the Q&A measure) is not used with --drift",
            fix="its answers would need each condition's intervention; drop --model",
        )


def _write(out: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        if name.endswith(".json"):
            continue
        with atomic_write(out / name) as handle:
            handle.write(text)


def run(args: argparse.Namespace) -> int:
    # Everything is read and checked before anything is loaded or written.
    _check(args)
    persona = resolve_persona(args.persona, load_catalogue())
    questions, qa_turns = _questions(args.questions), _qa_turns(args.qa_turns)
    if args.model is not None:
        check_model_options(args)
    judge = make_consistency_judge(args.judge, model=args.judge_model, base_url=args.judge_base_url)
    if args.drift is not None:
        return _run_drift(args, persona, judge)
    transcripts = [t for path in args.transcripts for t in read_transcripts(path)]
    for t in transcripts:
        assistant_replies(t)
    judge.check()
    answers, qa_model = None, None
    if args.model is not None:
        lm = load_model_as_asked(args.model, args)
        qa_model = lm.model_id
        total = len(questions) * sum(
            len(asked_turns(t.n_assistant_turns, qa_turns)) for t in transcripts
        )
        with tqdm(total=total, desc=f"Q&A on {lm.model_id}", unit="answer") as bar:
            answers = answer_questions(
                lm,
                transcripts,
                questions,
                sampling=QA_SAMPLING,
                turns=qa_turns,
                batch_size=args.batch_size,
                on_batch=bar.update,
            )
    report = score_consistency(
        transcripts,
        persona,
        judge,
        answers=answers,
        questions=questions,
        qa_model=qa_model,
    )
    out = Path(args.out) if args.out else Path(f"consistency-{Path(args.transcripts[0]).stem}")
    write_json(out / "consistency.json", report.to_json())
    _write(
        out,
        {
            "consistency_turns.csv": report.turn_csv(),
            "consistency_conversations.csv": report.conversation_csv(),
        },
    )
    save_png(out / "consistency.png", draw_consistency(report), (12 if answers else 9, 3.6))
    print(f"persona {persona.name}, judge {judge.name}")
    print(report.table())
    print(
        f"wrote {out.resolve()}/: consistency.json, consistency_turns.csv, "
        "consistency_conversations.csv, consistency.png"
    )
    return 0


def _run_drift(args: argparse.Namespace, persona: Persona, judge: ConsistencyJudge) -> int:
    judge.check()
    result = consistency_by_condition(args.drift, persona, judge)
    out = Path(args.out) if args.out else Path(args.drift)
    write_drift_consistency(out, result)
    print(f"persona {persona.name}, judge {judge.name}, baseline {result.baseline}")
    print_drift_consistency(result)
    print(f"wrote {out.resolve()}/: consistency.json, consistency.csv, consistency.png")
    return 0


def write_drift_consistency(out: Path, result: DriftConsistency) -> None:
    """consistency.json, consistency.csv and consistency.png of a drift run's conditions."""
    write_json(out / "consistency.json", result.to_json())
    _write(out, {"consistency.csv": result.csv_text()})
    save_png(out / "consistency.png", result.draw, (10, 3.6))


def print_drift_consistency(result: DriftConsistency) -> None:
    """One line per condition: its means and the paired tests against the baseline."""
    for name, entry in result.summary().items():
        parts = [f"{name} ({entry['n']} conversations)"]
        for measure in ("prompt_to_line", "line_to_line"):
            block = entry[measure]
            mean = "-" if block["mean"] is None else f"{block['mean']:.3f}"
            text = f"{measure} {mean}"
            test = block.get("versus_baseline", {}).get("all")
            if test and test["mean_difference"] is not None:
                text += (
                    f" (vs {result.baseline} {test['mean_difference']:+.3f}, n={test['n']}, "
                    f"Wilcoxon p={test['p_wilcoxon']:.3g}, sign-flip p={test['p_signflip']:.3g})"
                )
            parts.append(text)
        print("  ".join(parts))
