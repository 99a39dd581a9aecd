"""``personaspace tune``: finetune a model on a chat dataset (LoRA or full), resumable, with
optional monitoring at each checkpoint and preventative steering during training."""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from personaspace.cli.common import add_model_options, check_model_options, load_model_as_asked
from personaspace.conversation.templates import BUILTIN_TEMPLATES, read_chat_template
from personaspace.errors import PersonaspaceError
from personaspace.models.bundled import DEFAULT_MODEL
from personaspace.training.dataset import OVERLONG, read_chat_dataset, tokenize_examples
from personaspace.training.lora import LoraSettings, token_ids
from personaspace.training.steering import parse_ablate, parse_prevent, resolve
from personaspace.training.tune import METHODS, StepReport, TuneConfig, TuneFolder, tune

FLAGS = {
    "rank": "--lora-rank",
    "alpha": "--lora-alpha",
    "dropout": "--lora-dropout",
    "target_modules": "--lora-targets",
    "trainable_tokens": "--train-tokens",
    "learning_rate": "--lr",
    "max_tokens": "--max-tokens",
    "grad_accum": "--grad-accum",
    "checkpoint_every": "--checkpoint-every",
    "keep_checkpoints": "--keep-checkpoints",
    "max_steps": "--max-steps",
    "epochs": "--epochs",
    "method": "--method",
    "layer": "--prevent/--ablate-direction",
}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "tune",
        help="finetune a model on a chat dataset (LoRA or full), resumable, monitored",
        description="Finetune a causal LM on a JSONL chat dataset ({'messages': [...]} per "
        "line), with the loss on assistant content tokens only. Killed at any moment, the "
        "same command resumes from the newest checkpoint and ends with identical weights. "
        "OUT/final loads anywhere a model is accepted (--model OUT/final).",
    )
    parser.add_argument("data", metavar="DATA", help="the JSONL chat dataset")
    parser.add_argument(
        "--out", required=True, help="the run folder (resumed if it holds this run)"
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"default: {DEFAULT_MODEL}")
    parser.add_argument("--method", default="lora", choices=METHODS)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--lora-alpha", type=int, default=16)
    parser.add_argument("--lora-dropout", type=float, default=0.0)
    parser.add_argument(
        "--lora-targets", default=None, help="module names, comma-separated (default: q,v)"
    )
    parser.add_argument("--lr", type=float, default=None, help="default: 2e-4 LoRA, 2e-5 full")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8, help="examples per batch")
    parser.add_argument("--grad-accum", type=int, default=1, help="batches per optimizer step")
    parser.add_argument("--warmup-steps", type=int, default=0)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--max-grad-norm", type=float, default=1.0, help="0: no clipping")
    parser.add_argument("--seed", type=int, default=0, help="fixes data order and initialisation")
    parser.add_argument("--checkpoint-every", type=int, default=50, help="optimizer steps")
    parser.add_argument("--keep-checkpoints", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=None, help="default: the context")
    parser.add_argument("--overlong", default="refuse", choices=OVERLONG)
    parser.add_argument(
        "--end-of-turn",
        action="store_true",
        help="also train the end-of-turn token after each reply (teaches a base model to stop)",
    )
    parser.add_argument(
        "--chat-template",
        default=None,
        metavar="FILE|NAME",
        help="a Jinja chat template to train with, or a built-in one: "
        + ", ".join(BUILTIN_TEMPLATES),
    )
    parser.add_argument(
        "--train-tokens",
        default=None,
        metavar="TOKEN,...",
        help="with LoRA, also train these tokens' embedding rows (a base model's chat special "
        "tokens, e.g. '<start_of_turn>,<end_of_turn>', so it learns to predict them)",
    )
    parser.add_argument(
        "--save-snapshots",
        action="store_true",
        help="also save a loadable model at step 0 and every checkpoint (OUT/snapshots/step-N)",
    )
    parser.add_argument(
        "--prevent",
        action="append",
        default=[],
        metavar="VECTOR:COEF[@LAYER]",
        help="add RUN[:TRAIT] x COEF residual norms during training only (repeatable)",
    )
    parser.add_argument(
        "--ablate-direction",
        action="append",
        default=[],
        metavar="VECTOR[@LAYER]",
        help="project RUN[:TRAIT] out during training only (repeatable)",
    )
    parser.add_argument(
        "--monitor", default=None, metavar="RUN[,TRAIT...]", help="evaluate at each checkpoint"
    )
    parser.add_argument("--monitor-questions", type=int, default=8, help="per trait and axis")
    parser.add_argument("--monitor-judge", default="local", choices=("local", "none"))
    add_model_options(parser, batch_size=False)
    parser.set_defaults(run=run, param_flags=FLAGS)


def _config(args: argparse.Namespace) -> TuneConfig:
    targets = tuple(t.strip() for t in args.lora_targets.split(",")) if args.lora_targets else None
    config = TuneConfig(
        method=args.method,
        lora=LoraSettings(args.lora_rank, args.lora_alpha, args.lora_dropout, targets),
        learning_rate=args.lr,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm or None,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
    )
    config.check()
    return config


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(args: argparse.Namespace) -> int:
    check_model_options(args)
    config = _config(args)
    if args.train_tokens and config.method != "lora":
        raise PersonaspaceError(
            "--train-tokens is for LoRA", fix="drop it: --method full trains every row already"
        )
    directions = [parse_prevent(t) for t in args.prevent] + [
        parse_ablate(t) for t in args.ablate_direction
    ]
    template = None if args.chat_template is None else read_chat_template(args.chat_template)
    examples = read_chat_dataset(args.data)
    folder = TuneFolder(args.out)
    lm = load_model_as_asked(args.model, args)
    if template is not None:
        lm.tokenizer.chat_template = template
        lm.chat_tuned = True
    if args.train_tokens:
        names = [t.strip() for t in args.train_tokens.split(",") if t.strip()]
        lora = replace(config.lora, trainable_tokens=token_ids(lm.tokenizer, names))
        config = replace(config, lora=lora)
        config.check()
    data = tokenize_examples(
        lm,
        examples,
        max_tokens=args.max_tokens,
        overlong=args.overlong,
        end_of_turn=args.end_of_turn,
    )
    steering = []
    for direction in directions:
        steering.append(resolve(direction, lm)[0])
    settings: dict[str, Any] = {
        "data": {
            "file": str(Path(args.data).resolve()),
            "sha256": _sha256(Path(args.data)),
            "examples": len(data),
            "trained_tokens": sum(d.n_trained for d in data),
        },
        "tokenize": {
            "max_tokens": args.max_tokens,
            "overlong": args.overlong,
            "end_of_turn": args.end_of_turn,
            "chat_template": template,
        },
        "engine": {"device": str(lm.device), "dtype": str(lm.dtype).replace("torch.", "")},
        "steering": [d.text for d in directions],
        "steering_kinds": [d.kind for d in directions],
        "monitor": args.monitor,
    }
    at_checkpoint = _monitor(args, lm, folder)
    total = config.total_steps(len(data))
    with tqdm(total=total, desc="tune", unit="step", dynamic_ncols=True) as bar:

        def on_step(report: StepReport) -> None:
            bar.n = report.step
            bar.set_postfix(loss=f"{report.loss:.3f}", tok_s=f"{report.tokens_per_second:.0f}")
            bar.refresh()

        result = tune(
            lm,
            data,
            folder.path,
            config,
            base=_base_spec(args.model),
            settings=settings,
            steering=steering,
            at_checkpoint=at_checkpoint,
            on_step=on_step,
            save_tokenizer=template is not None,
            save_snapshots=args.save_snapshots,
        )
    first, last = result.losses[0], result.losses[-1]
    resumed = f" (resumed at step {result.resumed_from})" if result.resumed_from else ""
    print(
        f"trained {result.steps} steps{resumed}: loss {first:.3f} -> {last:.3f}, "
        f"{result.tokens_per_second:.0f} tokens/s"
    )
    print(f"the model is {result.final.resolve()} (use --model {result.final})")
    return 0


def _base_spec(spec: str) -> str:
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def _monitor(args: argparse.Namespace, lm: Any, folder: TuneFolder) -> Any:
    if args.monitor is None:
        return None
    from personaspace.catalogue import load_catalogue
    from personaspace.judge.base import make_judge
    from personaspace.training.monitoring import (
        TRAJECTORY_PLOT,
        evaluate,
        plan_monitor,
        plot_trajectory,
        record,
    )

    catalogue = load_catalogue()
    judge = make_judge(args.monitor_judge, catalogue) if args.monitor_judge != "none" else None
    plan = plan_monitor(
        lm,
        args.monitor,
        per_trait=args.monitor_questions,
        axis_questions=args.monitor_questions,
        judge=judge,
        catalogue=catalogue,
    )

    def at_checkpoint(step: int, model: Any) -> None:
        rows = record(folder.path, evaluate(model, plan, step))
        plot_trajectory(rows, folder.file(TRAJECTORY_PLOT))

    return at_checkpoint
