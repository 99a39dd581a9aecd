"""What finetuning costs, side by side in one run (issue 14's targets).

1. ``tune`` against a plain Hugging Face + peft loop, on the same padded batches: SmolLM2-
   135M-Instruct, LoRA rank 8 / alpha 16 on q_proj,v_proj, batch 8, AdamW lr 2e-4 (no weight
   decay), fp32 and bf16. The dataset is synthetic: each catalogue question as the user turn
   and one fixed assistant reply (about 95 tokens; examples are about 128-200 tokens with the
   chat template), assistant-only labels from ``tokenize_examples``.
   - ``ours``: ``tune`` end to end (``prepare_model``, the optimizer, every ``train_step``,
     the checkpoint ``tune`` writes at its last step, ``losses.jsonl``, the final adapter
     and a progress callback that updates a tqdm bar as the CLI does), ``checkpoint_every``
     at its default 50, ``max_steps = --steps``. Its defaults also clip the gradient norm to
     1 and decay the learning rate linearly: both run.
   - ``baseline``: ``peft.get_peft_model`` on a freshly loaded model, then ``loss =
     model(input_ids=..., attention_mask=..., labels=labels).loss; loss.backward();
     opt.step(); opt.zero_grad()`` on the batches ``tune`` trains on (``batch_indices`` and
     ``collate``, collated inside the loop as ``train_step`` does).
   Figures: training tokens/s (non-padding tokens over the timed region, which starts after
   the model is loaded) and the ratio ours / baseline, paired within each rep. Target >= 0.95.
   The time ``tune`` spends outside its ``train_step`` calls (set-up, checkpoint, progress,
   final save) is measured too and also reported per 50 steps (one checkpoint interval).
2. ``--prevent`` cost: ``ours`` in bf16 with a steering intervention at the middle layer
   (the CLI's ``resolve(parse_prevent("RUN:TRAIT:0.5"))`` where ``--monitor-run`` has the
   trait, else a seeded random unit direction) against ``ours`` without. Target <= 1.05.
3. Monitoring cost: one ``evaluate(lm, plan, step)`` at the CLI defaults (``plan_monitor``
   with 8 questions per trait and for the axis, 48 new tokens, the local judge), on the model
   ``ours`` bf16 has just trained (adapter in place), plus the CLI's ``record`` and
   ``plot_trajectory``, against 50 x the per-step training time of that run. Target <= 0.10.
   Split into generation (``generate`` with capture) and the judge.
4. ``--parts gemma``: peak RSS of ``personaspace tune DATA --model gemma-3-270m --max-steps
   N`` (a child process, its own ``ru_maxrss`` from ``os.wait4``) in bf16 and fp32, and its
   training tokens/s (from the checkpoint's ``state.json``: step time only, and the CLI's
   printed figure). Target <= 6 GiB.

Variants run interleaved (baseline fp32, ours fp32, baseline bf16, ours bf16, ours bf16 +
prevent, evaluate; then again), after a one-step warm-up of each dtype; the load average
is read before and after. Prints a table; ``--json FILE`` writes every figure.

Usage: python bench/bench_tune.py [--reps 2] [--steps 3] [--dtypes float32,bfloat16]
    [--parts train,prevent,monitor,gemma] [--monitor-run /tmp/q13/smol2,evil] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from personaspace.catalogue import load_catalogue
from personaspace.conversation.messages import Message
from personaspace.models import load_model
from personaspace.models.loading import LoadedModel
from personaspace.training.batches import batch_indices, collate
from personaspace.training.dataset import (
    ChatExample,
    TokenizedExample,
    tokenize_examples,
    write_chat_dataset,
)
from personaspace.training.lora import LoraSettings
from personaspace.training.tune import TuneConfig, tune
from personaspace.vectors.intervention import Intervention, steer

tune_mod = importlib.import_module("personaspace.training.tune")
monitoring_mod = importlib.import_module("personaspace.training.monitoring")

MODEL = "smollm2-135m-instruct"
TARGETS = ("q_proj", "v_proj")
REPLY = (
    "That is a good question, and the honest answer depends on what you mean by it. Most "
    "people start by listing the facts they are sure of, then the assumptions they make "
    "without noticing. Writing both down helps: the facts rarely change, the assumptions "
    "often do. Try it for a week and you will probably find one or two beliefs that no "
    "longer fit. Take it slowly."
)
TIMED = ("prepare_model", "_optimizer", "save_checkpoint", "prune_checkpoints")
TIMED_ALSO = ("_write_losses", "_save_final", "write_json")


def examples() -> list[ChatExample]:
    """One example per catalogue question: the question, then the fixed reply."""
    questions = [q.text for q in load_catalogue().questions.values()]
    return [
        ChatExample([Message("user", q), Message("assistant", REPLY)], f"synthetic:{i + 1}")
        for i, q in enumerate(questions)
    ]


def config_for(steps: int, batch: int) -> TuneConfig:
    return TuneConfig(
        lora=LoraSettings(8, 16, 0.0, TARGETS),
        learning_rate=2e-4,
        max_steps=steps,
        batch_size=batch,
    )


@contextlib.contextmanager
def timing(module: Any, names: Sequence[str], into: dict[str, list[float]]) -> Iterator[None]:
    """Wrap ``module.<name>`` for each name so that every call's seconds land in ``into``."""
    saved = {name: getattr(module, name) for name in names}

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                into.setdefault(name, []).append(time.perf_counter() - start)

        return timed

    for name, fn in saved.items():
        setattr(module, name, wrap(name, fn))
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(module, name, fn)


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def run_ours(
    dtype: torch.dtype,
    data: list[TokenizedExample],
    config: TuneConfig,
    out: Path,
    steering: Callable[[LoadedModel], list[Intervention]] | None = None,
) -> tuple[dict[str, Any], LoadedModel]:
    """``tune`` end to end on a freshly loaded model, with the CLI's progress bar."""
    from tqdm import tqdm

    lm = load_model(MODEL, dtype=dtype, device="cpu")
    interventions = steering(lm) if steering is not None else []
    calls: dict[str, list[float]] = {}
    bar = tqdm(total=config.max_steps, file=io.StringIO(), desc="tune", unit="step")

    def on_step(report: Any) -> None:
        start = time.perf_counter()
        bar.n = report.step
        bar.set_postfix(loss=f"{report.loss:.3f}", tok_s=f"{report.tokens_per_second:.0f}")
        bar.refresh()
        calls.setdefault("on_step", []).append(time.perf_counter() - start)

    with timing(tune_mod, ("train_step", *TIMED, *TIMED_ALSO), calls):
        start = time.perf_counter()
        result = tune(
            lm,
            data,
            fresh(out),
            config,
            base=MODEL,
            steering=interventions,
            on_step=on_step,
        )
        seconds = time.perf_counter() - start
    bar.close()
    shutil.rmtree(out, ignore_errors=True)
    steps_s = sum(calls["train_step"])
    checkpoint_s = sum(sum(calls.get(n, [])) for n in ("save_checkpoint", "prune_checkpoints"))
    return {
        "seconds": seconds,
        "tokens": result.tokens,
        "tokens_per_s": result.tokens / seconds,
        "step_s": calls["train_step"],
        "step_tokens_per_s": result.tokens / steps_s,
        "outside_steps_s": seconds - steps_s,
        "checkpoint_s": checkpoint_s,
        "final_save_s": sum(calls.get("_save_final", [])),
        "setup_s": sum(sum(calls.get(n, [])) for n in ("prepare_model", "_optimizer")),
        "progress_s": sum(calls.get("on_step", [])),
        "losses": result.losses,
        "steering": [prevent_label(i) for i in interventions],
    }, lm


def run_baseline(
    dtype: torch.dtype, data: list[TokenizedExample], config: TuneConfig
) -> dict[str, Any]:
    """The textbook Hugging Face + peft loop over the batches ``tune`` would train on."""
    from peft import LoraConfig, get_peft_model

    lm = load_model(MODEL, dtype=dtype, device="cpu")
    pad = int(lm.tokenizer.pad_token_id)
    steps = config.total_steps(len(data))
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    model = get_peft_model(
        lm.model,
        LoraConfig(
            r=config.lora.rank,
            lora_alpha=config.lora.alpha,
            lora_dropout=config.lora.dropout,
            target_modules=list(TARGETS),
            bias="none",
        ),
    )
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    model.train()
    losses, tokens, step_s = [], 0, []
    for b in range(steps):
        t = time.perf_counter()
        indices = batch_indices(len(data), config.batch_size, config.seed, b)
        batch = collate([data[i] for i in indices], pad)
        loss = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels
        ).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
        tokens += batch.n_tokens
        step_s.append(time.perf_counter() - t)
    seconds = time.perf_counter() - start
    del model, opt, lm
    gc.collect()
    return {
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "step_s": step_s,
        "step_tokens_per_s": tokens / sum(step_s),
        "outside_steps_s": seconds - sum(step_s),
        "losses": losses,
        "trainable_parameters": sum(p.numel() for p in params),
        "adapter_dtype": str(params[0].dtype).removeprefix("torch."),
    }


def prevent_for(monitor_run: str | None) -> Callable[[LoadedModel], list[Intervention]]:
    """The ``--prevent`` intervention: the CLI's own parse and resolve on the monitor run's
    trait (coefficient 0.5 at its analysis layer) where it has one, else a random unit
    direction at the middle layer (one residual norm of 100, coefficient 0.5)."""

    def build(lm: LoadedModel) -> list[Intervention]:
        if monitor_run is not None:
            from personaspace.training.monitoring import parse_monitor
            from personaspace.training.steering import parse_prevent, resolve

            run, traits = parse_monitor(monitor_run)
            if traits and Path(run).is_dir():
                return [resolve(parse_prevent(f"{run}:{traits[0]}:0.5"), lm)[0]]
        generator = torch.Generator().manual_seed(0)
        direction = torch.randn(lm.adapter.hidden_size, generator=generator)
        return [steer(lm.adapter.n_layers // 2, direction, 0.5, 100.0)]

    return build


def prevent_label(item: Intervention) -> dict[str, Any]:
    return {"kind": item.kind, "layer": item.layer, "amount": round(item.amount, 3)}


def monitor_plan(lm: LoadedModel, spec: str) -> Any:
    from personaspace.judge.base import make_judge
    from personaspace.training.monitoring import plan_monitor

    catalogue = load_catalogue()
    return plan_monitor(
        lm,
        spec,
        per_trait=8,
        axis_questions=8,
        max_new_tokens=48,
        judge=make_judge("local", catalogue),
        catalogue=catalogue,
    )


def run_monitor(lm: LoadedModel, plan: Any, out: Path) -> dict[str, Any]:
    """One ``evaluate`` and the CLI's ``record`` + ``plot_trajectory``, split by part."""
    calls: dict[str, list[float]] = {}
    judge = plan.judge
    original = judge.score_traits

    def score_traits(items: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(items)
        finally:
            calls.setdefault("judge", []).append(time.perf_counter() - start)

    judge.score_traits = score_traits
    try:
        with timing(monitoring_mod, ("generate",), calls):
            start = time.perf_counter()
            row = monitoring_mod.evaluate(lm, plan, 50)
            evaluate_s = time.perf_counter() - start
    finally:
        del judge.score_traits
    fresh(out).mkdir(parents=True)
    start = time.perf_counter()
    rows = monitoring_mod.record(out, row)
    monitoring_mod.plot_trajectory(rows, out / monitoring_mod.TRAJECTORY_PLOT)
    write_s = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    generate_s = sum(calls.get("generate", []))
    judge_s = sum(calls.get("judge", []))
    return {
        "evaluate_s": evaluate_s,
        "generate_s": generate_s,
        "judge_s": judge_s,
        "rest_s": evaluate_s - generate_s - judge_s,
        "record_and_plot_s": write_s,
        "total_s": evaluate_s + write_s,
        "questions": len(plan.questions),
        "reply_chars": sum(len(r) for r in row["replies"]),
    }


def gemma_rss(data_path: Path, dtype: str, steps: int, out: Path) -> dict[str, Any]:
    """``personaspace tune`` on Gemma-3-270M in a child process: its peak RSS and rate."""
    exe = Path(sys.executable).with_name("personaspace")
    command = [
        str(exe),
        "tune",
        str(data_path),
        "--model",
        "gemma-3-270m",
        "--out",
        str(fresh(out)),
        "--max-steps",
        str(steps),
        "--dtype",
        dtype,
    ]
    log = out.with_suffix(".log")
    start = time.perf_counter()
    with log.open("w") as handle:
        proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    text = log.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{text[-2000:]}")
    printed = re.search(r"([\d.]+) tokens/s", text)
    state = json.loads((out / "checkpoints" / f"step-{steps:06d}" / "state.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    return {
        "command": " ".join(command),
        "peak_rss_gib": usage.ru_maxrss / 2**20,
        "wall_s": wall,
        "cli_tokens_per_s": float(printed.group(1)) if printed else None,
        "train_tokens_per_s": sum(state["tokens"]) / state["seconds"],
        "train_seconds": state["seconds"],
        "tokens": sum(state["tokens"]),
        "losses": state["losses"],
    }


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float], digits: int = 3) -> str:
    return f"{median(values):.{digits}f} ({', '.join(f'{v:.{digits}f}' for v in values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per tune run")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--parts", default="train,prevent,monitor", help="and/or gemma")
    parser.add_argument("--monitor-run", default="/tmp/q13/smol2,evil", help="RUN[,TRAIT]")
    parser.add_argument("--gemma-steps", type=int, default=6)
    parser.add_argument("--gemma-dtypes", default="bfloat16,float32")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bt"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    tags = [str(d).removeprefix("torch.") for d in dtypes]
    args.workdir.mkdir(parents=True, exist_ok=True)
    wall_start = time.perf_counter()
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "model": MODEL,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_before": os.getloadavg(),
        "reps": args.reps,
        "steps": args.steps,
        "batch": args.batch,
    }
    print(f"load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    config = config_for(args.steps, args.batch)
    chat = examples()
    data_path = write_chat_dataset(args.workdir / "data.jsonl", chat)
    train_parts = parts & {"train", "prevent", "monitor"}
    if train_parts:
        lm0 = load_model(MODEL, dtype=torch.float32, device="cpu")
        data = tokenize_examples(lm0, chat)
        lengths = [len(d.input_ids) for d in data]
        result["dataset"] = {
            "examples": len(data),
            "tokens_mean": statistics.mean(lengths),
            "tokens_min": min(lengths),
            "tokens_max": max(lengths),
            "trained_tokens_mean": statistics.mean(d.n_trained for d in data),
        }
        plan = None
        if "monitor" in parts:
            run = args.monitor_run.split(",")[0]
            if Path(run).is_dir():
                plan = monitor_plan(lm0, args.monitor_run)
            else:
                print(f"monitor part skipped: no run folder {run}", file=sys.stderr)
        del lm0
        prevent = prevent_for(args.monitor_run) if "prevent" in parts else None
        warm = config_for(1, args.batch)
        for dtype in dtypes:  # one step of each path per dtype: kernels, allocator
            run_baseline(dtype, data, warm)
            run_ours(dtype, data, warm, args.workdir / "warm")
        runs: dict[str, list[dict[str, Any]]] = {}
        monitors: list[dict[str, Any]] = []
        for rep in range(args.reps):
            for dtype, tag in zip(dtypes, tags):
                variants: list[tuple[str, Callable[[], Any]]] = [
                    (f"baseline {tag}", lambda d=dtype: (run_baseline(d, data, config), None)),
                    (
                        f"ours {tag}",
                        lambda d=dtype, t=tag: run_ours(d, data, config, args.workdir / t),
                    ),
                ]
                if prevent is not None and dtype == torch.bfloat16:
                    variants.append(
                        (
                            f"ours+prevent {tag}",
                            lambda d=dtype: run_ours(
                                d, data, config, args.workdir / "prevent", prevent
                            ),
                        )
                    )
                for name, fn in variants:
                    figures, lm = fn()
                    runs.setdefault(name, []).append(figures)
                    print(
                        f"rep {rep + 1} {name}: {figures['tokens_per_s']:.1f} tok/s "
                        f"({figures['seconds']:.1f} s)",
                        file=sys.stderr,
                        flush=True,
                    )
                    if plan is not None and name == "ours bfloat16" and lm is not None:
                        if not monitors:  # the first call loads the judge's embedder
                            start = time.perf_counter()
                            run_monitor(lm, plan, args.workdir / "monitor")
                            result["monitor_first_call_s"] = time.perf_counter() - start
                        m = run_monitor(lm, plan, args.workdir / "monitor")
                        m["train_50_steps_s"] = 50 * median(figures["step_s"])
                        m["ratio"] = m["total_s"] / m["train_50_steps_s"]
                        monitors.append(m)
                        print(
                            f"rep {rep + 1} evaluate: {m['evaluate_s']:.1f} s "
                            f"(generate {m['generate_s']:.1f}, judge {m['judge_s']:.1f})",
                            file=sys.stderr,
                            flush=True,
                        )
                    del lm
                    gc.collect()
        result["variants"] = runs
        summary: dict[str, Any] = {}
        print()
        print("| variant | tokens/s end to end, median (reps) | tokens/s in steps only |")
        print("|---|---|---|")
        for name, items in runs.items():
            rates = [r["tokens_per_s"] for r in items]
            step_rates = [r["step_tokens_per_s"] for r in items]
            summary[name] = {"tokens_per_s": median(rates), "step_tokens_per_s": median(step_rates)}
            print(f"| {name} | {spread(rates, 1)} | {spread(step_rates, 1)} |")
        print()
        for tag in tags:
            ours, base = runs.get(f"ours {tag}"), runs.get(f"baseline {tag}")
            if not (ours and base):
                continue
            ratios = [o["tokens_per_s"] / b["tokens_per_s"] for o, b in zip(ours, base)]
            step_ratios = [
                o["step_tokens_per_s"] / b["step_tokens_per_s"] for o, b in zip(ours, base)
            ]
            outside = median([o["outside_steps_s"] for o in ours])
            per_step = median([s for o in ours for s in o["step_s"]])
            per_50 = outside / (outside + 50 * per_step)
            summary[f"ours_over_baseline_{tag}"] = {
                "median": median(ratios),
                "per_rep": ratios,
                "steps_only_median": median(step_ratios),
                "steps_only_per_rep": step_ratios,
                "outside_steps_s": outside,
                "checkpoint_s": median([o["checkpoint_s"] for o in ours]),
                "final_save_s": median([o["final_save_s"] for o in ours]),
                "progress_s": median([o["progress_s"] for o in ours]),
                "setup_s": median([o["setup_s"] for o in ours]),
                "outside_share_per_50_steps": per_50,
                "first_step_loss_ours": ours[0]["losses"][0],
                "first_step_loss_baseline": base[0]["losses"][0],
            }
            print(
                f"{tag}: ours / baseline tokens/s = {spread(ratios)} end to end, "
                f"{spread(step_ratios)} steps only (target >= 0.95); outside the steps "
                f"{outside:.2f} s per run (checkpoint "
                f"{summary[f'ours_over_baseline_{tag}']['checkpoint_s']:.2f} s), "
                f"{100 * per_50:.2f} % of a 50-step interval; first-step loss ours "
                f"{ours[0]['losses'][0]:.6f}, baseline {base[0]['losses'][0]:.6f}"
            )
        plain, steered = runs.get("ours bfloat16"), runs.get("ours+prevent bfloat16")
        if plain and steered:
            cost = [p["tokens_per_s"] / s["tokens_per_s"] for p, s in zip(plain, steered)]
            step_cost = [
                p["step_tokens_per_s"] / s["step_tokens_per_s"] for p, s in zip(plain, steered)
            ]
            summary["prevent_cost_bfloat16"] = {
                "median": median(cost),
                "per_rep": cost,
                "steps_only_median": median(step_cost),
                "steps_only_per_rep": step_cost,
                "intervention": steered[0]["steering"],
            }
            print(
                f"--prevent cost (time with / without, bf16) = {spread(cost)} end to end, "
                f"{spread(step_cost)} steps only (target <= 1.05)"
            )
        if monitors:
            summary["monitoring"] = {
                "ratio_median": median([m["ratio"] for m in monitors]),
                "per_rep": monitors,
                "first_call_s": result.get("monitor_first_call_s"),
            }
            m = monitors
            print(
                f"monitoring: evaluate {spread([x['evaluate_s'] for x in m], 1)} s (generate "
                f"{spread([x['generate_s'] for x in m], 1)}, judge "
                f"{spread([x['judge_s'] for x in m], 2)}, record+plot "
                f"{spread([x['record_and_plot_s'] for x in m], 2)}) against 50 steps "
                f"{spread([x['train_50_steps_s'] for x in m], 0)} s: "
                f"{spread([x['ratio'] for x in m], 4)} (target <= 0.10)"
            )
        result["summary"] = summary
    if "gemma" in parts:
        gemma = {}
        for tag in args.gemma_dtypes.split(","):
            g = gemma_rss(data_path, tag, args.gemma_steps, args.workdir / f"gemma-{tag}")
            gemma[tag] = g
            print(
                f"gemma-3-270m {tag}: peak RSS {g['peak_rss_gib']:.2f} GiB (target <= 6), "
                f"{g['train_tokens_per_s']:.1f} training tokens/s ({g['tokens']} tokens in "
                f"{g['train_seconds']:.1f} s; the CLI printed {g['cli_tokens_per_s']}), "
                f"wall {g['wall_s']:.0f} s"
            )
        result["gemma"] = gemma
    result["load_average_after"] = os.getloadavg()
    result["wall_s"] = time.perf_counter() - wall_start
    print(
        f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"wall {result['wall_s']:.0f} s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
