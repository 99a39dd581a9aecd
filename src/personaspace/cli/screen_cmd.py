"""``personaspace screen``: how far a chat dataset's replies sit along a persona vector,
against the model's own replies to the same prompts (see ``personaspace.training.screen``)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tqdm import tqdm

from personaspace.cli.common import (
    add_model_options,
    check_model_options,
    load_model_as_asked,
    model_spec_for,
)
from personaspace.errors import PersonaspaceError
from personaspace.runfolder.paths import NamedVector, read_named_vector
from personaspace.training.dataset import read_chat_dataset
from personaspace.training.screen import (
    OWN_SAMPLING,
    ScreenResult,
    prepare_items,
    screen_dataset,
    screening_layer,
    write_screen,
)
from personaspace.vectors.axis import Axis

PARAM_FLAGS = {
    "layer": "--layer",
    "top": "--top",
    "n_random": "--directions",
    "max_new_tokens": "--max-new-tokens",
}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "screen",
        help="project a chat dataset's replies on a persona vector, against the model's own",
        description="For each sample of a JSONL chat dataset, project its last assistant "
        "reply (teacher-forced) and the model's own reply to the same prompt on a persona "
        "vector; report the dataset's mean projection difference, its bootstrap interval "
        "and its percentile among random directions, and rank the samples. Writes "
        "screen.json, screen.csv and screen.png.",
    )
    parser.add_argument("data", metavar="DATA", help='JSONL file, one {"messages": [...]} a line')
    parser.add_argument(
        "--vector", required=True, metavar="RUN:TRAIT", help="RUN, RUN:axis or RUN:TRAIT"
    )
    parser.add_argument("--layer", type=int, default=None, help="default: the run's layer")
    parser.add_argument("--model", default=None, help="default: the vector run's model")
    parser.add_argument("--out", default=None, help="default: runs/screen-DATA-TRAIT")
    parser.add_argument(
        "--no-generate",
        action="store_true",
        help="skip the model's own replies (dataset and last-prompt projections only)",
    )
    parser.add_argument("--top", type=int, default=10, help="samples listed in the summary")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-new-tokens", type=int, default=OWN_SAMPLING.max_new_tokens, help="own replies"
    )
    parser.add_argument("--directions", type=int, default=200, help="random directions (null)")
    add_model_options(parser)
    parser.set_defaults(run=run, param_flags=PARAM_FLAGS)


def _positive(value: int, option: str) -> None:
    if value < 1:
        raise PersonaspaceError(f"{option} is {value}", fix="give 1 or more")


def vector_model_spec(vector: NamedVector, spec: str | None) -> str:
    """``--model``, else the model the vector's run was made with (when loadable)."""
    shape = Axis(vector.model_id, vector.layers, vector.vectors, None, vector.run)
    return model_spec_for(shape, spec)


def _short(text: str | None, width: int = 48) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


def summary(result: ScreenResult, top: int) -> str:
    """The dataset-level figures and the ``top`` most shifting samples, as printed."""
    lines = [
        f"vector {result.vector}, layer {result.layer}, {len(result.samples)} samples "
        f"on {result.model_id}",
        f"  dataset reply projection   {result.dataset_projection}",
        f"  last prompt projection     {result.last_prompt_projection}",
    ]
    if result.own_projection is not None:
        lines.append(f"  own reply projection       {result.own_projection}")
    if result.projection_difference is not None:
        lines.append(f"  projection difference      {result.projection_difference}  (95 % CI)")
    if result.null is not None:
        null = result.null
        lines.append(
            f"  random directions ({null.n_directions}): |difference| above "
            f"{null.percentile:.1f} % of them (their 95th percentile {null.random_abs_p95:.3f})"
        )
    if result.n_own_empty:
        lines.append(f"  {result.n_own_empty} own replies were empty (left out)")
    own = result.generate_own
    head = f"{'difference':>10}  {'dataset':>8}  {'own':>8}" if own else f"{'dataset':>8}"
    lines += ["", f"{'rank':>4}  {head}  {'prompt':>8}  source: reply"]
    for rank, s in enumerate(result.ranked(top), start=1):
        values = f"{_number(s.dataset_projection):>8}"
        if own:
            values = (
                f"{_number(s.projection_difference):>10}  {values}  {_number(s.own_projection):>8}"
            )
        lines.append(
            f"{rank:>4}  {values}  {_number(s.last_prompt_projection):>8}  "
            f"{s.source}: {_short(s.dataset_reply)}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    check_model_options(args)
    _positive(args.top, "--top")
    _positive(args.directions, "--directions")
    _positive(args.max_new_tokens, "--max-new-tokens")
    examples = read_chat_dataset(args.data)
    vector = read_named_vector(args.vector)
    out = Path(args.out or f"runs/screen-{Path(args.data).stem}-{vector.name}")
    lm = load_model_as_asked(vector_model_spec(vector, args.model), args)
    layer = screening_layer(lm, vector, args.layer)
    # every sample formatted and checked against the context before any forward pass
    prepare_items(lm, examples, seed=args.seed, max_new_tokens=args.max_new_tokens)
    passes = 1 if args.no_generate else 2
    started = time.perf_counter()
    with tqdm(total=passes * len(examples), desc="screen", unit="sample") as bar:
        result = screen_dataset(
            lm,
            examples,
            vector,
            layer=layer,
            seed=args.seed,
            generate_own=not args.no_generate,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            n_random=args.directions,
            on_batch=bar.update,
        )
    elapsed = time.perf_counter() - started
    written = write_screen(result, out)
    print(summary(result, args.top))
    print(f"\n{elapsed:.1f} s; wrote {', '.join(str(p) for p in written)}")
    return 0
