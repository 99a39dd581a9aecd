"""``personaspace data``: finetuning datasets, offline.

``data trait TRAIT --level normal|mild|strong --out FILE.jsonl`` has the model answer the
trait's extraction questions under the level's instruction, judges the replies and keeps
those that fit the level, without the system prompt (``training.trait_data``).
``data chat TRANSCRIPTS... --out FILE.jsonl`` turns transcripts (ours, OpenAI-style
message lists, the reference release's) into a dataset. ``data magpie --out FILE.jsonl``
has a chat model write user requests from its own user-turn header and answer them
(``training.magpie``), the catalogue's questions held out. All write ``FILE.card.json``
beside the dataset.

Output: ``--out`` must end in ``.jsonl``. An existing output (dataset or card) is left alone
unless ``--force`` is given, and even then only a file that reads as a chat dataset (and a
card we wrote) is replaced, so a mistyped ``--out`` cannot overwrite other files; an input
transcript is never overwritten.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from tqdm import tqdm

from personaspace.capture.sampling import SamplingConfig
from personaspace.catalogue import Catalogue, load_catalogue
from personaspace.cli.common import (
    add_model_options,
    check_model_options,
    load_model_as_asked,
    print_rows,
)
from personaspace.errors import PersonaspaceError
from personaspace.judge import make_judge
from personaspace.judge.base import Judge
from personaspace.models import DEFAULT_MODEL
from personaspace.monitor.transcripts import Transcript, read_transcripts
from personaspace.training.dataset import read_chat_dataset
from personaspace.training.magpie import MagpieSettings, make_magpie_dataset
from personaspace.training.trait_data import (
    CARD_KINDS,
    DEFAULT_MIN_COHERENCE,
    DEFAULT_SAMPLES_PER_QUESTION,
    LEVELS,
    TRAIT_DATA_SAMPLING,
    card_path,
    find_trait,
    keep_rule,
    make_trait_dataset,
    plan_trait_items,
    trait_questions,
    transcript_examples,
    write_dataset,
)

MAGPIE = MagpieSettings()
PARAM_FLAGS = {
    "requests": "--requests",
    "request_tokens": "--request-tokens",
    "answer_tokens": "--answer-tokens",
    "near_duplicate": "--near-duplicate",
    "samples_per_question": "--samples-per-question",
    "max_new_tokens": "--max-new-tokens",
    "temperature": "--temperature",
    "top_p": "--top-p",
    "min_score": "--min-score",
    "max_score": "--max-score",
    "min_coherence": "--min-coherence",
    "extra": "--extra-questions",
    "batch_size": "--batch-size",
}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("data", help="make finetuning datasets: trait data, transcripts")
    commands = parser.add_subparsers(dest="data_command", metavar="KIND")
    trait = commands.add_parser(
        "trait",
        help="replies of the model that express a trait (or none of it), judged and filtered",
        description="Ask the trait's extraction questions (its evaluation questions are held "
        "out) under the level's instruction, judge each reply, keep those that fit the level "
        "(strong: score >= 60, mild: >= 50, normal: <= 40; coherent in all) and write them "
        "without the system prompt, with FILE.card.json beside them.",
    )
    trait.add_argument("trait", metavar="TRAIT", help="a catalogue trait, e.g. evil")
    trait.add_argument("--level", choices=LEVELS, required=True)
    trait.add_argument("--out", required=True, metavar="FILE.jsonl")
    trait.add_argument("--model", default=DEFAULT_MODEL, help="alias, folder, .gguf or hub id")
    trait.add_argument(
        "--samples-per-question", type=int, default=DEFAULT_SAMPLES_PER_QUESTION, metavar="N"
    )
    trait.add_argument(
        "--extra-questions",
        type=int,
        default=0,
        metavar="N",
        help="also ask N catalogue questions (tasks and character questions in turn)",
    )
    trait.add_argument("--seed", type=int, default=0)
    trait.add_argument("--judge", choices=("local", "openai", "none"), default="local")
    trait.add_argument("--judge-model", default=None)
    trait.add_argument("--judge-base-url", default=None, help="default: $OPENAI_BASE_URL")
    trait.add_argument("--judge-api-key", default=None, help="default: $OPENAI_API_KEY")
    trait.add_argument(
        "--min-score", type=float, default=None, help="keep trait scores >= this (0-100)"
    )
    trait.add_argument(
        "--max-score", type=float, default=None, help="keep trait scores <= this (0-100)"
    )
    trait.add_argument("--min-coherence", type=float, default=DEFAULT_MIN_COHERENCE)
    trait.add_argument("--max-new-tokens", type=int, default=TRAIT_DATA_SAMPLING.max_new_tokens)
    trait.add_argument("--temperature", type=float, default=TRAIT_DATA_SAMPLING.temperature)
    trait.add_argument("--top-p", type=float, default=TRAIT_DATA_SAMPLING.top_p)
    trait.add_argument("--catalogue", metavar="DIR", default=None, help="your catalogue folder")
    trait.add_argument("--force", action="store_true", help="replace an existing dataset")
    add_model_options(trait)
    trait.set_defaults(run=run_trait)
    chat = commands.add_parser(
        "chat",
        help="a dataset from transcripts (ours, OpenAI-style lists, reference files)",
        description="One example per conversation, every assistant turn trained on; a "
        "trailing user turn is cut. Writes FILE.card.json beside the dataset.",
    )
    chat.add_argument("transcripts", nargs="+", metavar="TRANSCRIPT", help=".json or .jsonl")
    chat.add_argument("--out", required=True, metavar="FILE.jsonl")
    chat.add_argument(
        "--drop-system", action="store_true", help="leave the system prompts out of the data"
    )
    chat.add_argument("--force", action="store_true", help="replace an existing dataset")
    chat.set_defaults(run=run_chat)
    magpie = commands.add_parser(
        "magpie",
        help="an instruction dataset the model writes itself (requests and answers)",
        description="Sample user requests from the model's own user-turn header (MAGPIE-style), "
        "keep the finished, coherent, distinct ones that are not near a held-out question, "
        "answer each under the default prompt, keep the finished coherent answers. Writes "
        "FILE.card.json beside the dataset.",
    )
    magpie.add_argument("--out", required=True, metavar="FILE.jsonl")
    magpie.add_argument("--model", default=DEFAULT_MODEL, help="a chat model (its template)")
    magpie.add_argument("--requests", type=int, default=MAGPIE.requests, help="requests sampled")
    magpie.add_argument("--request-tokens", type=int, default=MAGPIE.request_tokens)
    magpie.add_argument("--answer-tokens", type=int, default=MAGPIE.answer_tokens)
    magpie.add_argument("--request-temperature", type=float, default=MAGPIE.request_temperature)
    magpie.add_argument("--answer-temperature", type=float, default=MAGPIE.answer_temperature)
    magpie.add_argument(
        "--near-duplicate",
        type=float,
        default=MAGPIE.near_duplicate,
        help="embedding cosine at which a request repeats another or a held-out question",
    )
    magpie.add_argument(
        "--hold-out",
        choices=("catalogue", "none"),
        default="catalogue",
        help="leave out requests near the catalogue's questions and capability items "
        "(what the axis pipeline and the evaluations ask); default: catalogue",
    )
    magpie.add_argument(
        "--drop-unfinished",
        action="store_true",
        help="drop answers cut at --answer-tokens (default: trim them to their last sentence)",
    )
    magpie.add_argument("--seed", type=int, default=0)
    magpie.add_argument("--catalogue", metavar="DIR", default=None, help="your catalogue folder")
    magpie.add_argument("--force", action="store_true", help="replace an existing dataset")
    add_model_options(magpie)
    magpie.set_defaults(run=run_magpie)
    # main() maps library parameters to options through the `data` parser's defaults
    parser.set_defaults(run=lambda _args: _help(parser), param_flags=PARAM_FLAGS)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def check_out(out: str, *, force: bool, inputs: tuple[str, ...] = ()) -> Path:
    """``--out`` checked before any work: a ``.jsonl`` path that is not an input, and that
    is either free or (with ``--force``) a dataset with our card, if any, beside it."""
    path = Path(out)
    card = card_path(path)
    if path.suffix != ".jsonl":
        raise PersonaspaceError(
            f"--out {out} does not end in .jsonl", fix="name the dataset FILE.jsonl"
        )
    if path.is_dir():
        raise PersonaspaceError(f"--out {out} is a folder", fix="give a FILE.jsonl path")
    if any(Path(i).resolve() == path.resolve() for i in inputs):
        raise PersonaspaceError(f"--out {out} is one of the inputs", fix="write to another file")
    existing = [p for p in (path, card) if p.exists()]
    if existing and not force:
        raise PersonaspaceError(
            f"{existing[0]} exists", fix="pass --force to replace it, or choose another --out"
        )
    if path.exists():
        try:
            read_chat_dataset(path)
        except PersonaspaceError as err:
            raise PersonaspaceError(
                f"{path} exists and is not a chat dataset ({err.problem})",
                fix="choose another --out (--force only replaces a dataset)",
            ) from err
    if card.exists() and not _is_our_card(card):
        raise PersonaspaceError(
            f"{card} exists and is not a dataset card",
            fix="choose another --out (--force only replaces a dataset and its card)",
        )
    return path


def _is_our_card(path: Path) -> bool:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(value, dict) and value.get("kind") in CARD_KINDS


def _judge(args: argparse.Namespace, catalogue: Catalogue) -> Judge | None:
    if args.judge == "none":
        return None
    judge = make_judge(
        args.judge,
        catalogue,
        model=args.judge_model,
        base_url=args.judge_base_url,
        api_key=args.judge_api_key or os.environ.get("OPENAI_API_KEY"),
    )
    judge.check()
    return judge


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def run_trait(args: argparse.Namespace) -> int:
    # every check before the model loads: nothing is written on bad input
    out = check_out(args.out, force=args.force)
    check_model_options(args)
    catalogue = load_catalogue(args.catalogue)
    trait = find_trait(catalogue, args.trait)
    questions = trait_questions(trait, catalogue, args.extra_questions)
    plan = plan_trait_items(
        trait,
        args.level,
        questions=questions,
        samples_per_question=args.samples_per_question,
        seed=args.seed,
    )
    judge = _judge(args, catalogue)
    keep_rule(
        args.level,
        min_score=args.min_score,
        max_score=args.max_score,
        min_coherence=args.min_coherence,
        scored=judge is not None,
    )
    sampling = SamplingConfig(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p
    )
    lm = load_model_as_asked(args.model, args)
    desc = f"data {trait.name} {args.level} on {lm.model_id}"
    with tqdm(total=len(plan), desc=desc, unit="reply", disable=None) as bar:
        data = make_trait_dataset(
            lm,
            trait,
            args.level,
            judge=judge,
            questions=questions,
            samples_per_question=args.samples_per_question,
            seed=args.seed,
            sampling=sampling,
            batch_size=args.batch_size,
            min_score=args.min_score,
            max_score=args.max_score,
            min_coherence=args.min_coherence,
            on_batch=lambda done, _total: bar.update(done - bar.n),
        )
    card = data.card
    dropped = ", ".join(f"{k} {v}" for k, v in card["dropped"].items() if v) or "none"
    scores = card["trait_score"]
    if not data.examples:
        every = scores["all"]
        raise PersonaspaceError(
            f"none of the {card['generated']} replies was kept (dropped: {dropped}; trait "
            f"scores of all: mean {_fmt(every['mean'])}, quartiles {_fmt(every['q1'])}/"
            f"{_fmt(every['median'])}/{_fmt(every['q3'])})",
            fix="loosen --min-score/--max-score or --min-coherence, or ask more "
            "--samples-per-question; nothing was written",
        )
    dataset, card_file = write_dataset(out, data.examples, card)
    rule = card["keep_rule"]
    kept_rule = (
        f"trait score {rule['min_score']:g}-{rule['max_score']:g}, "
        if rule["scored"]
        else "unscored, "
    ) + f"coherence >= {rule['min_coherence']:g}"
    print_rows(
        [
            ("model", card["model_id"]),
            ("trait / level", f"{card['trait']} / {card['level']}"),
            ("questions x samples", f"{len(card['questions'])} x {card['samples_per_question']}"),
            ("kept / generated", f"{card['kept']} / {card['generated']}  ({kept_rule})"),
            ("dropped", dropped),
            (
                "trait score kept / all",
                f"mean {_fmt(scores['kept']['mean'])} / {_fmt(scores['all']['mean'])}",
            ),
        ]
    )
    print(f"\nwrote {dataset} and {card_file}")
    return 0


def _read_all(paths: list[str]) -> list[Transcript]:
    transcripts: list[Transcript] = []
    for path in paths:
        try:
            transcripts += read_transcripts(path)
        except PersonaspaceError as err:
            if err.problem.endswith("has no assistant turns"):
                raise PersonaspaceError(
                    err.problem, fix="give conversations with the assistant replies to train on"
                ) from err
            raise
    return transcripts


def run_chat(args: argparse.Namespace) -> int:
    out = check_out(args.out, force=args.force, inputs=tuple(args.transcripts))
    examples, card = transcript_examples(_read_all(args.transcripts), drop_system=args.drop_system)
    dataset, card_file = write_dataset(out, examples, card)
    print_rows(
        [
            ("transcripts", card["transcripts"]),
            ("examples", card["examples"]),
            ("assistant turns", card["assistant_turns"]),
            ("system prompts dropped", card["system_prompts_dropped"]),
            ("trailing user turns cut", card["trailing_user_turns_dropped"]),
        ]
    )
    print(f"\nwrote {dataset} and {card_file}")
    return 0


def held_out_questions(catalogue: Catalogue) -> list[str]:
    """Every question of the catalogue and every capability item's question."""
    return [q.text for q in catalogue.questions.values()] + [
        item.question for item in catalogue.capability.values()
    ]


def run_magpie(args: argparse.Namespace) -> int:
    out = check_out(args.out, force=args.force)
    check_model_options(args)
    settings = MagpieSettings(
        requests=args.requests,
        request_tokens=args.request_tokens,
        answer_tokens=args.answer_tokens,
        request_temperature=args.request_temperature,
        answer_temperature=args.answer_temperature,
        near_duplicate=args.near_duplicate,
        trim_unfinished=not args.drop_unfinished,
        seed=args.seed,
    )
    settings.check()
    held = held_out_questions(load_catalogue(args.catalogue)) if args.hold_out != "none" else []
    lm = load_model_as_asked(args.model, args)
    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            bars[stage] = tqdm(total=total, desc=f"magpie {stage}", unit="reply", disable=None)
        bars[stage].update(done - bars[stage].n)

    try:
        data = make_magpie_dataset(
            lm, settings, held_out=held, batch_size=args.batch_size, on_progress=progress
        )
    finally:
        for bar in bars.values():
            bar.close()
    card = data.card
    if not data.examples:
        raise PersonaspaceError(
            f"none of the {card['requests_sampled']} requests made an example (requests "
            f"dropped: {card['requests_dropped']}; answers dropped: {card['answers_dropped']})",
            fix="sample more --requests or raise --answer-tokens; nothing was written",
        )
    dataset, card_file = write_dataset(out, data.examples, card)

    def dropped(counts: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "none"

    print_rows(
        [
            ("model", card["model_id"]),
            ("requests kept / sampled", f"{card['requests_kept']} / {card['requests_sampled']}"),
            ("requests dropped", dropped(card["requests_dropped"])),
            ("answers dropped", dropped(card["answers_dropped"])),
            ("answers trimmed to a sentence", card["answers_trimmed_to_sentence"]),
            ("examples", card["kept"]),
            ("answer words (median)", card["answer_words"]["median"]),
        ]
    )
    print(f"\nwrote {dataset} and {card_file}")
    return 0
