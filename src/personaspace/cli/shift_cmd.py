"""``personaspace shift``: how far finetuning moved a model along persona vectors (see
``personaspace.training.shift``)."""

from __future__ import annotations

import argparse
import time
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
from personaspace.judge.base import Judge, make_judge
from personaspace.runfolder.paths import NamedVector, read_named_vector, split_vector_spec
from personaspace.training.screen import OWN_SAMPLING
from personaspace.training.shift import (
    ShiftResult,
    check_same_shape,
    default_questions,
    finetuning_shift,
    shift_layers,
    write_shift,
)

PARAM_FLAGS = {
    "layers": "--layers",
    "n_random": "--directions",
    "max_new_tokens": "--max-new-tokens",
}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "shift",
        help="the finetuning shift: tuned - base activations projected on persona vectors",
        description="Project the mean difference (TUNED - BASE) of the residual state at "
        "the last prompt token over evaluation questions on each persona vector, per layer, "
        "with bootstrap intervals and random-direction nulls; with a judge, the traits' "
        "expression before and after. Writes shift.json, shift.csv and shift.png.",
    )
    parser.add_argument("base", metavar="BASE", help="the original model (alias, folder, ...)")
    parser.add_argument("tuned", metavar="TUNED", help="the finetuned model")
    parser.add_argument(
        "--vectors",
        required=True,
        action="append",
        metavar="RUN[:TRAIT,...]",
        help="vectors of the base model: RUN (its axis) or RUN:TRAIT,TRAIT; repeatable",
    )
    parser.add_argument("--layers", default=None, help="comma-separated (default: all)")
    parser.add_argument(
        "--judge", choices=("local", "none"), default="none", help="score trait expression"
    )
    parser.add_argument(
        "--questions",
        default=None,
        metavar="FILE",
        help="evaluation questions, one a line (default: the traits' evaluation questions)",
    )
    parser.add_argument("--out", default=None, help="default: runs/shift-TUNED")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--directions", type=int, default=200, help="random directions (null)")
    parser.add_argument(
        "--max-new-tokens", type=int, default=OWN_SAMPLING.max_new_tokens, help="judged replies"
    )
    add_model_options(parser)
    parser.set_defaults(run=run, param_flags=PARAM_FLAGS)


def read_vectors(specs: list[str]) -> list[NamedVector]:
    """``RUN[:TRAIT,...]`` options as vectors, each name once.

    Example:
        >>> read_vectors(["runs/x:evil,sycophantic"])[1].name  # doctest: +SKIP
        'sycophantic'
    """
    vectors: list[NamedVector] = []
    for spec in specs:
        run, names = split_vector_spec(spec)
        for name in parse_names(names) or ["axis"]:
            vectors.append(read_named_vector(f"{run}:{name}"))
    labels = [v.label for v in vectors]
    if len(set(labels)) != len(labels):
        raise PersonaspaceError(f"--vectors names a vector twice ({labels})", fix="list each once")
    return vectors


def read_questions(path: str) -> list[str]:
    """One question a line, blank lines skipped."""
    file = Path(path)
    if not file.is_file():
        raise PersonaspaceError(f"no such questions file: {file}", fix="check the path")
    questions = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    questions = [q for q in questions if q]
    if not questions:
        raise PersonaspaceError(f"{file} has no questions", fix="write one question a line")
    return questions


def _short_name(spec: str) -> str:
    return Path(spec.rstrip("/")).name or spec


def summary(result: ShiftResult) -> str:
    """Per vector, the shift at its analysis layer (else the largest) and its null; the
    trait expression before and after, when judged."""
    lines = [
        f"{result.tuned_model} - {result.base_model}, {len(result.questions)} questions, "
        f"{len(result.layers)} layers",
        "",
        f"{'vector':<28} {'layer':>5}  {'shift [95 % CI]':<30} {'random %':>8} {'cos':>7}",
    ]
    for vector in result.vectors:
        if vector.analysis_layer in result.layers:
            row = vector.at(vector.analysis_layer)
            mark = ""
        else:
            row = max(vector.layers, key=lambda r: abs(r.shift.mean))
            mark = " (largest)"
        lines.append(
            f"{vector.vector:<28} {row.layer:>5}  {row.shift!s:<30} "
            f"{row.null.percentile:>8.1f} {row.cosine:>+7.3f}{mark}"
        )
    if result.expression:
        lines += ["", f"{'trait':<20} {'before':<28} {'after':<28} {'change':<28}"]
        for e in result.expression:
            lines.append(f"{e.trait:<20} {e.before!s:<28} {e.after!s:<28} {e.change!s:<28}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    check_model_options(args)
    if args.directions < 1:
        raise PersonaspaceError(f"--directions is {args.directions}", fix="give 1 or more")
    if args.max_new_tokens < 1:
        raise PersonaspaceError(f"--max-new-tokens is {args.max_new_tokens}", fix="give 1 or more")
    layers = parse_layers(args.layers)
    vectors = read_vectors(args.vectors)
    catalogue = load_catalogue()
    questions = (
        read_questions(args.questions) if args.questions else default_questions(vectors, catalogue)
    )
    judge: Judge | None = None if args.judge == "none" else make_judge(args.judge, catalogue)
    judged = judge is not None and any(v.name != "axis" for v in vectors)
    if judge is not None:
        default_questions(vectors, catalogue)  # refuses a trait the catalogue has no rubric for
        judge.check()
    out = Path(args.out or f"runs/shift-{_short_name(args.tuned)}")
    base = load_model_as_asked(args.base, args)
    shift_layers(base, vectors, layers)
    tuned = base if args.tuned == args.base else load_model_as_asked(args.tuned, args)
    check_same_shape(base, tuned)
    passes = 4 if judged else 2
    started = time.perf_counter()
    with tqdm(total=passes * len(questions), desc="shift", unit="question") as bar:
        result = finetuning_shift(
            base,
            tuned,
            questions,
            vectors,
            layers=layers,
            judge=judge,
            seed=args.seed,
            batch_size=args.batch_size,
            n_random=args.directions,
            max_new_tokens=args.max_new_tokens,
            catalogue=catalogue,
            on_batch=bar.update,
        )
    elapsed = time.perf_counter() - started
    written = write_shift(result, out)
    print(summary(result))
    print(f"\n{elapsed:.1f} s; wrote {', '.join(str(p) for p in written)}")
    return 0
