"""What finetuning costs, side by side in one run (issue 14's targets).

1. ``tune`` against a plain Hugging Face + peft loop, on the same padded batches: SmolLM2-
   135M-Instruct, LoRA rank 8 / alpha 16 on q_proj,v_proj, batch 8, AdamW lr 2e-4 (no weight
   decay), fp32 and bf16. The dataset is synthetic: each catalogue question as the user turn
   and one fixed assistant reply (86 tokens), assistant-only labels from
   ``tokenize_examples`` (126-192 tokens an example, mean 134, with SmolLM2's template).
   - ``ours``: ``tune`` end to end (``prepare_model``, the optimizer, every ``train_step``,
     the checkpoint ``tune`` writes at its last step, ``losses.jsonl``, the final adapter
     and a progress callback that updates a tqdm bar as the CLI does), ``checkpoint_every``
     at its default 50, ``max_steps = --steps``. Its defaults also clip the gradient norm to
     1 and decay the learning rate linearly: both run.
   - ``baseline``: ``peft.get_peft_model`` on a freshly loaded model, then ``loss =
     model(input_ids=..., attention_mask=..., labels=labels).loss; loss.backward();
     opt.step(); opt.zero_grad()`` on the batches ``tune`` trains on (``batch_indices`` and
     ``collate``, collated inside the loop as ``train_step`` does).
   The two alternate step by step: ``tune``'s progress callback runs the baseline's step of
   the same batch (and the ``--prevent`` steps below, in an order rotating step by step)
   and that time is taken out of ``tune``'s wall time, so every step of one is measured
   seconds from the same step of the other. Figures: training tokens/s (non-padding tokens
   over the timed region, which starts after the model is loaded: ``tune``'s whole call;
   the baseline's ``get_peft_model``, the optimizer and its steps) and the ratio ours /
   baseline per rep.
   Target >= 0.95. The time ``tune`` spends outside its steps (set-up, checkpoint, progress,
   final save) is also given as a share of a 50-step run (one checkpoint interval).
2. ``--prevent`` cost: two more models train the same batches with ``train_step``, one
   plain and one inside the steering intervention (the CLI's
   ``resolve(parse_prevent("RUN:TRAIT:0.5"))`` on the monitor run's trait where it has one,
   else a seeded random unit direction at the middle layer), in the same rounds (bf16
   only). ``tune`` enters the steering hooks inside ``train_step`` only, so step time with
   / without is the cost. Target <= 1.05. The plain one against ``tune``'s own steps (the
   same code) is a control: how far apart two identical variants land on this machine.
3. Monitoring cost: one ``evaluate(lm, plan, step)`` at the CLI defaults (``plan_monitor``
   with 8 questions per trait and for the axis, 48 new tokens, the local judge; the judge's
   embedder is loaded before), on the model ``ours`` bf16 has just trained (adapter in
   place), plus the CLI's ``record`` and ``plot_trajectory``, against 50 x the median
   per-step time of that run. Target <= 0.10. Split into generation and the judge.
4. ``--parts gemma``: peak RSS of ``personaspace tune DATA --model gemma-3-270m --max-steps
   N`` (a child process; its own ``ru_maxrss`` from ``os.wait4``) in bf16 and fp32, and its
   training tokens/s (from the last checkpoint's ``state.json``: the steps only; and the
   figure the CLI prints). Target <= 6 GiB.

A one-step warm-up of each path and dtype runs first; the load average is read before and
after. ``--threads`` (default 1) sets torch's intra-op threads here and ``OMP_NUM_THREADS``
for the child: on this shared 2-core machine two threads against a busy neighbour ran
steps 2-4x slower and far less evenly than one. Prints a table; ``--json FILE`` writes
every figure.

Usage: python bench/bench_tune.py [--reps 2] [--steps 5] [--dtypes float32,bfloat16]
    [--parts train,prevent,monitor,gemma] [--monitor-run /tmp/q13/smol2,evil] [--threads 1]
    [--json OUT]
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
from personaspace.training.tune import TuneConfig, _optimizer, prepare_model, train_step, tune
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
    "longer fit, and a few that fit better than you thought. Take it slowly."
)
TIMED = ("train_step", "prepare_model", "_optimizer", "save_checkpoint", "prune_checkpoints")
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


class Baseline:
    """The textbook Hugging Face + peft loop, one step at a time."""

    def __init__(self, dtype: torch.dtype, data: list[TokenizedExample], config: TuneConfig):
        from peft import LoraConfig, get_peft_model

        self.lm = load_model(MODEL, dtype=dtype, device="cpu")
        self.data, self.config = data, config
        self.pad = int(self.lm.tokenizer.pad_token_id)
        torch.manual_seed(config.seed)
        start = time.perf_counter()
        self.model = get_peft_model(
            self.lm.model,
            LoraConfig(
                r=config.lora.rank,
                lora_alpha=config.lora.alpha,
                lora_dropout=config.lora.dropout,
                target_modules=list(TARGETS),
                bias="none",
            ),
        )
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=0.0)
        self.model.train()
        self.setup_s = time.perf_counter() - start
        self.step_s: list[float] = []
        self.losses: list[float] = []
        self.tokens = 0

    def step(self, b: int) -> None:
        start = time.perf_counter()
        indices = batch_indices(len(self.data), self.config.batch_size, self.config.seed, b)
        batch = collate([self.data[i] for i in indices], self.pad)
        loss = self.model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels
        ).loss
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        self.losses.append(float(loss.detach()))
        self.tokens += batch.n_tokens
        self.step_s.append(time.perf_counter() - start)

    def figures(self) -> dict[str, Any]:
        seconds = self.setup_s + sum(self.step_s)
        return {
            "seconds": seconds,
            "tokens": self.tokens,
            "tokens_per_s": self.tokens / seconds,
            "step_s": self.step_s,
            "step_tokens_per_s": self.tokens / sum(self.step_s),
            "setup_s": self.setup_s,
            "losses": self.losses,
            "trainable_parameters": sum(p.numel() for p in self.params),
            "adapter_dtype": str(self.params[0].dtype).removeprefix("torch."),
        }


class StepLoop:
    """``train_step`` (with a steering intervention if ``build`` gives one), on its own
    model and optimizer."""

    def __init__(
        self,
        dtype: torch.dtype,
        data: list[TokenizedExample],
        config: TuneConfig,
        build: Callable[[LoadedModel], list[Intervention]] | None,
    ):
        self.lm = load_model(MODEL, dtype=dtype, device="cpu")
        self.data, self.config = data, config
        self.steering = build(self.lm) if build is not None else []
        prepare_model(self.lm, config)
        self.opt = _optimizer(self.lm, config)
        self.total = config.total_steps(len(data))
        self.step_s: list[float] = []
        self.losses: list[float] = []
        self.tokens = 0

    def step(self, b: int) -> None:
        start = time.perf_counter()
        loss, tokens = train_step(
            self.lm, self.data, self.config, self.opt, b, self.total, self.steering
        )
        self.step_s.append(time.perf_counter() - start)
        self.losses.append(loss)
        self.tokens += tokens

    def figures(self) -> dict[str, Any]:
        return {
            "step_s": self.step_s,
            "step_tokens_per_s": self.tokens / sum(self.step_s),
            "losses": self.losses,
            "steering": [prevent_label(i) for i in self.steering],
        }


def run_round(
    dtype: torch.dtype,
    data: list[TokenizedExample],
    config: TuneConfig,
    out: Path,
    prevent: Callable[[LoadedModel], list[Intervention]] | None = None,
) -> tuple[dict[str, dict[str, Any]], LoadedModel]:
    """``tune`` end to end, with the baseline's step of each batch (and, with ``prevent``,
    a plain and a steered ``train_step``) run from its progress callback, in an order that
    rotates step by step; the callback's time is taken out of ``tune``'s."""
    from tqdm import tqdm

    baseline = Baseline(dtype, data, config)
    loops: list[Baseline | StepLoop] = [baseline]
    if prevent is not None:
        loops += [StepLoop(dtype, data, config, None), StepLoop(dtype, data, config, prevent)]
    lm = load_model(MODEL, dtype=dtype, device="cpu")
    calls: dict[str, list[float]] = {}
    others = [0.0]
    bar = tqdm(total=config.max_steps, file=io.StringIO(), desc="tune", unit="step")

    def on_step(report: Any) -> None:
        start = time.perf_counter()
        bar.n = report.step
        bar.set_postfix(loss=f"{report.loss:.3f}", tok_s=f"{report.tokens_per_second:.0f}")
        bar.refresh()
        middle = time.perf_counter()
        calls.setdefault("on_step", []).append(middle - start)
        turn = report.step % len(loops)
        for other in loops[turn:] + loops[:turn]:
            other.step(report.step - 1)
        others[0] += time.perf_counter() - middle

    with timing(tune_mod, (*TIMED, *TIMED_ALSO), calls):
        start = time.perf_counter()
        result = tune(lm, data, fresh(out), config, base=MODEL, on_step=on_step)
        seconds = time.perf_counter() - start - others[0]
    bar.close()
    shutil.rmtree(out, ignore_errors=True)
    steps_s = sum(calls["train_step"])
    ours = {
        "seconds": seconds,
        "tokens": result.tokens,
        "tokens_per_s": result.tokens / seconds,
        "step_s": calls["train_step"],
        "step_tokens_per_s": result.tokens / steps_s,
        "outside_steps_s": seconds - steps_s,
        "checkpoint_s": sum(sum(calls.get(n, [])) for n in TIMED[3:]),
        "final_save_s": sum(calls.get("_save_final", [])),
        "setup_s": sum(sum(calls.get(n, [])) for n in ("prepare_model", "_optimizer")),
        "progress_s": sum(calls.get("on_step", [])),
        "losses": result.losses,
    }
    if result.tokens != baseline.tokens:
        raise SystemExit(f"token counts differ: tune {result.tokens}, baseline {baseline.tokens}")
    tag = str(dtype).removeprefix("torch.")
    figures = {f"baseline {tag}": baseline.figures(), f"ours {tag}": ours}
    if prevent is not None:
        figures[f"train_step {tag}"] = loops[1].figures()
        figures[f"train_step+prevent {tag}"] = loops[2].figures()
    return figures, lm


def prevent_for(monitor_run: str | None) -> Callable[[LoadedModel], list[Intervention]]:
    """The ``--prevent`` intervention: the CLI's own parse and resolve on the monitor run's
    trait (coefficient 0.5 at its analysis layer) where it has one, else a random unit
    direction at the middle layer (0.5 x a residual norm of 100)."""

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


def monitor_plan(lm: LoadedModel, spec: str) -> tuple[Any, float]:
    """The CLI's monitoring plan, and the seconds its judge took to load its embedder."""
    from personaspace.judge.base import make_judge
    from personaspace.training.monitoring import plan_monitor

    catalogue = load_catalogue()
    plan = plan_monitor(
        lm,
        spec,
        per_trait=8,
        axis_questions=8,
        max_new_tokens=48,
        judge=make_judge("local", catalogue),
        catalogue=catalogue,
    )
    start = time.perf_counter()
    plan.judge.check()
    return plan, time.perf_counter() - start


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


def gemma_rss(
    data_path: Path, dtype: str, steps: int, out: Path, threads: int | None
) -> dict[str, Any]:
    """``personaspace tune`` on Gemma-3-270M in a child process: its peak RSS and rate."""
    exe = Path(sys.executable).with_name("personaspace")
    command = [str(exe), "tune", str(data_path), "--model", "gemma-3-270m"]
    command += ["--out", str(fresh(out)), "--max-steps", str(steps), "--dtype", dtype]
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    log = out.with_suffix(".log")
    start = time.perf_counter()
    with log.open("w") as handle:
        proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
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


def quartiles(values: Sequence[float]) -> list[float]:
    if len(values) < 2:
        return [values[0]] * 3
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return [q1, q2, q3]


def summarise(runs: dict[str, list[dict[str, Any]]], tags: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    print()
    print("| variant | tokens/s end to end, median (reps) | tokens/s in steps only | s/step |")
    print("|---|---|---|---|")
    for name, items in runs.items():
        rates = [r["tokens_per_s"] for r in items if "tokens_per_s" in r]
        step_rates = [r["step_tokens_per_s"] for r in items]
        per_step = median([s for r in items for s in r["step_s"]])
        summary[name] = {
            "tokens_per_s": median(rates) if rates else None,
            "step_tokens_per_s": median(step_rates),
            "median_step_s": per_step,
        }
        first = spread(rates, 1) if rates else "(steps only)"
        print(f"| {name} | {first} | {spread(step_rates, 1)} | {per_step:.2f} |")
    print()
    for tag in tags:
        ours, base = runs.get(f"ours {tag}"), runs.get(f"baseline {tag}")
        if not (ours and base):
            continue
        ratios = [o["tokens_per_s"] / b["tokens_per_s"] for o, b in zip(ours, base)]
        step_ratios = [o["step_tokens_per_s"] / b["step_tokens_per_s"] for o, b in zip(ours, base)]
        paired = [b / o for o_, b_ in zip(ours, base) for o, b in zip(o_["step_s"], b_["step_s"])]
        outside = median([o["outside_steps_s"] for o in ours])
        per_step = median([s for o in ours for s in o["step_s"]])
        per_50 = outside / (outside + 50 * per_step)
        entry = {
            "median": median(ratios),
            "per_rep": ratios,
            "steps_only_median": median(step_ratios),
            "steps_only_per_rep": step_ratios,
            "paired_step_quartiles": quartiles(paired),
            "outside_steps_s": outside,
            "checkpoint_s": median([o["checkpoint_s"] for o in ours]),
            "final_save_s": median([o["final_save_s"] for o in ours]),
            "progress_s": median([o["progress_s"] for o in ours]),
            "setup_s": median([o["setup_s"] for o in ours]),
            "baseline_setup_s": median([b["setup_s"] for b in base]),
            "outside_share_of_50_step_run": per_50,
            "first_step_loss_ours": ours[0]["losses"][0],
            "first_step_loss_baseline": base[0]["losses"][0],
        }
        summary[f"ours_over_baseline_{tag}"] = entry
        q = entry["paired_step_quartiles"]
        print(
            f"{tag}: ours / baseline tokens/s = {spread(ratios)} end to end, "
            f"{spread(step_ratios)} steps only, paired steps quartiles "
            f"{q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f} (target >= 0.95); outside the steps "
            f"{outside:.2f} s a run (set-up {entry['setup_s']:.2f}, checkpoint "
            f"{entry['checkpoint_s']:.2f}, final save {entry['final_save_s']:.2f}, progress "
            f"{entry['progress_s']:.3f}) = {100 * per_50:.2f} % of a 50-step run; "
            f"first-step loss ours {entry['first_step_loss_ours']:.6f}, "
            f"baseline {entry['first_step_loss_baseline']:.6f}"
        )
    plain, steered = runs.get("train_step bfloat16"), runs.get("train_step+prevent bfloat16")
    ours = runs.get("ours bfloat16")
    if plain and steered and ours:
        control = [p["step_tokens_per_s"] / o["step_tokens_per_s"] for p, o in zip(plain, ours)]
        summary["control_train_step_over_tune_steps_bfloat16"] = {
            "median": median(control),
            "per_rep": control,
        }
        print(
            f"control: train_step from the callback / tune's own steps, tokens/s, bf16 = "
            f"{spread(control)} (the same code; 1 but for position and noise)"
        )
        cost = [p["step_tokens_per_s"] / s["step_tokens_per_s"] for p, s in zip(plain, steered)]
        paired = [
            s / p for p_, s_ in zip(plain, steered) for p, s in zip(p_["step_s"], s_["step_s"])
        ]
        summary["prevent_cost_bfloat16"] = {
            "median": median(cost),
            "per_rep": cost,
            "paired_step_quartiles": quartiles(paired),
            "intervention": steered[0]["steering"],
        }
        q = quartiles(paired)
        print(
            f"--prevent cost (step time with / without, bf16) = {spread(cost)}, paired steps "
            f"quartiles {q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f} (target <= 1.05)"
        )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per tune run")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--parts", default="train,prevent,monitor", help="and/or gemma")
    parser.add_argument("--monitor-run", default="/tmp/q13/smol2,evil", help="RUN[,TRAIT]")
    parser.add_argument("--gemma-steps", type=int, default=6)
    parser.add_argument("--gemma-dtypes", default="bfloat16,float32")
    parser.add_argument("--threads", type=int, default=1, help="0: torch's default")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bt"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = set(args.parts.split(","))
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    tags = [str(d).removeprefix("torch.") for d in dtypes]
    args.workdir.mkdir(parents=True, exist_ok=True)
    wall_start = time.perf_counter()
    result: dict[str, Any] = {
        "command": " ".join(["bench/bench_tune.py", *sys.argv[1:]]),
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
    if parts & {"train", "prevent", "monitor"}:
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
        print(f"dataset: {result['dataset']}")
        plan = None
        if "monitor" in parts:
            run = args.monitor_run.split(",")[0]
            if Path(run).is_dir():
                plan, result["judge_load_s"] = monitor_plan(lm0, args.monitor_run)
            else:
                print(f"monitor part skipped: no run folder {run}", file=sys.stderr)
        del lm0
        prevent = prevent_for(args.monitor_run) if "prevent" in parts else None
        for dtype in dtypes:  # one step of each path per dtype: kernels, allocator
            run_round(dtype, data, config_for(1, args.batch), args.workdir / "warm", prevent)
        runs: dict[str, list[dict[str, Any]]] = {}
        monitors: list[dict[str, Any]] = []
        for rep in range(args.reps):
            for dtype in dtypes:
                steering = prevent if dtype == torch.bfloat16 else None
                tag = str(dtype).removeprefix("torch.")
                figures, lm = run_round(dtype, data, config, args.workdir / tag, steering)
                for name, item in figures.items():
                    runs.setdefault(name, []).append(item)
                    print(
                        f"rep {rep + 1} {name}: {item['step_tokens_per_s']:.1f} tok/s in steps",
                        file=sys.stderr,
                        flush=True,
                    )
                if plan is not None and dtype == torch.bfloat16:
                    m = run_monitor(lm, plan, args.workdir / "monitor")
                    m["train_50_steps_s"] = 50 * median(figures["ours bfloat16"]["step_s"])
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
        summary = summarise(runs, tags)
        if monitors:
            summary["monitoring"] = {
                "ratio_median": median([m["ratio"] for m in monitors]),
                "per_rep": monitors,
                "judge_load_s": result.get("judge_load_s"),
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
            out = args.workdir / f"gemma-{tag}"
            g = gemma_rss(data_path, tag, args.gemma_steps, out, args.threads)
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
