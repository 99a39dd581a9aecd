"""What capping and monitoring cost, measured side by side in one run (issue 5's targets).

1. Capping overhead: plain generation (no hooks) against generation inside ``intervene``
   with caps at 8 layers, at batch 1 and batch 16 (64 new tokens, greedy). Two capped
   variants:
   - ``cap_inert``: the same 8 caps with floors far below every state. A cap does the
     same arithmetic whether or not it moves a state (project, clamp, add, count), so this
     variant costs what a real cap costs while producing exactly the plain tokens (checked):
     the time ratio compares like with like. Target: <= 1.03.
   - ``cap_p25``: the run's real experiment (default ``layers_11:19-p25``). It changes the
     replies, so their lengths differ; it is compared per generated token.
   Variants run interleaved (plain, inert, p25, plain, ...) and each figure is a median.
2. Monitoring cost: a 20-turn conversation (the model's own greedy replies to 20 catalogue
   questions) projected on the axis as ``personaspace monitor`` does it (``project_turns``),
   against one plain forward pass of the model over the same tokens (with logits at every
   position, and, stricter, with the last position's logits only, as the monitor asks). The
   model's forward calls are counted (target: 1) and the times compared (target: <= 1).

Usage: python bench/bench_interventions.py [--axis RUN] [--rounds 7] [--json OUT]
(RUN: a calibrated smollm2 axis run; default runs/axis-smollm2-135m-instruct-quick.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from personaspace import load_model
from personaspace.capture import SamplingConfig, generate
from personaspace.catalogue import load_catalogue
from personaspace.conversation import format_conversation
from personaspace.interventions import cap, intervene
from personaspace.models.loading import LoadedModel
from personaspace.monitor import project_turns
from personaspace.runfolder import load_axis
from personaspace.vectors import load_capping_config

DEFAULT_RUN = "runs/axis-smollm2-135m-instruct-quick"
DEFAULT_EXPERIMENT = "layers_11:19-p25"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def capping_overhead(
    lm: LoadedModel, caps: list, questions: list[str], batch: int, rounds: int, tokens: int
) -> dict[str, Any]:
    inert = [cap(c.layer, c.direction, tau=-1e30) for c in caps]
    prompts = [
        format_conversation(
            lm.tokenizer, [{"role": "user", "content": q}], add_generation_prompt=True
        )
        for q in questions[:batch]
    ]
    config = SamplingConfig(max_new_tokens=tokens)

    def run(items: list) -> list:
        with intervene(lm, items):
            return generate(lm, prompts, config, reductions=(), batch_size=batch)

    variants = {"plain": [], "cap_inert": caps and inert, "cap_p25": caps}
    times: dict[str, list[float]] = {name: [] for name in variants}
    outputs: dict[str, list] = {}
    run([])  # warm-up
    for _ in range(rounds):
        for name, items in variants.items():
            seconds, outputs[name] = timed(lambda items=items: run(items))
            times[name].append(seconds)
    plain_ids = [g.token_ids for g in outputs["plain"]]
    assert [g.token_ids for g in outputs["cap_inert"]] == plain_ids, "inert caps changed tokens"
    med = {k: statistics.median(v) for k, v in times.items()}
    n_tokens = {k: sum(len(g.token_ids) for g in v) for k, v in outputs.items()}
    per_token = {k: med[k] / max(n_tokens[k], 1) for k in med}
    # One batch: it decodes until its longest reply ends, so steps = the longest reply.
    steps = {k: max(len(g.token_ids) for g in v) for k, v in outputs.items()}
    per_step = {k: med[k] / max(steps[k], 1) for k in med}
    changed = sum(g.token_ids != p for g, p in zip(outputs["cap_p25"], plain_ids))
    return {
        "batch": batch,
        "median_s": med,
        "all_s": times,
        "generated_tokens": n_tokens,
        "inert_over_plain": med["cap_inert"] / med["plain"],
        "decode_steps": steps,
        "p25_over_plain_per_token": per_token["cap_p25"] / per_token["plain"],
        "p25_over_plain_per_step": per_step["cap_p25"] / per_step["plain"],
        "p25_replies_changed": changed,
    }


class ForwardCounter:
    """Counts calls of the model's top-level forward."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls = 0
        self._handle = model.register_forward_pre_hook(self._count)

    def _count(self, *_: Any) -> None:
        self.calls += 1

    def close(self) -> None:
        self._handle.remove()


def monitoring_cost(lm: LoadedModel, axis: Any, questions: list[str], rounds: int) -> dict:
    turns = questions[:20]
    prompts = [
        format_conversation(
            lm.tokenizer, [{"role": "user", "content": q}], add_generation_prompt=True
        )
        for q in turns
    ]
    replies = generate(lm, prompts, SamplingConfig(max_new_tokens=48), reductions=())
    messages = []
    for q, r in zip(turns, replies):
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": r.text}]
    conv = format_conversation(lm.tokenizer, messages)
    ids = torch.tensor([conv.input_ids])

    def plain(keep: int = 0) -> Any:  # logits_to_keep=0: logits at every position
        with torch.inference_mode():
            return lm.model(input_ids=ids, use_cache=False, logits_to_keep=keep)

    def monitor(per_token: bool = False) -> Any:
        return project_turns(lm, axis, [conv], per_token=per_token)

    variants: dict[str, Callable[[], Any]] = {
        "plain_forward": plain,
        "plain_forward_last_logits": lambda: plain(1),
        "monitor": monitor,
        "monitor_per_token": lambda: monitor(True),
    }
    calls = {}
    for name, fn in variants.items():
        counter = ForwardCounter(lm.model)
        fn()
        counter.close()
        calls[name] = counter.calls
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            times[name].append(timed(fn)[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    [trajectory] = monitor()
    return {
        "assistant_turns": int(trajectory.turns.shape[0]),
        "tokens": len(conv.input_ids),
        "forward_calls": calls,
        "median_s": med,
        "all_s": times,
        "monitor_over_forward": med["monitor"] / med["plain_forward"],
        "monitor_over_forward_last_logits": med["monitor"] / med["plain_forward_last_logits"],
        "monitor_per_token_over_forward": med["monitor_per_token"] / med["plain_forward"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--axis", default=DEFAULT_RUN, help="a calibrated axis run folder")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if not (Path(args.axis) / "capping.safetensors").is_file():
        raise SystemExit(f"{args.axis} has no capping.safetensors: run `make demo` first")
    lm = load_model("smollm2-135m-instruct")
    axis = load_axis(args.axis, lm)
    caps = load_capping_config(Path(args.axis) / "capping.safetensors").interventions(
        args.experiment
    )
    questions = [q.text for q in load_catalogue().questions.values()]
    result: dict[str, Any] = {
        "model": lm.model_id,
        "experiment": args.experiment,
        "capped_layers": [c.layer for c in caps],
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "max_new_tokens": args.new_tokens,
    }
    for batch in (1, 16):
        r = capping_overhead(lm, caps, questions, batch, args.rounds, args.new_tokens)
        result[f"capping_batch_{batch}"] = r
        print(
            f"capping, batch {batch}: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in r["median_s"].items())
        )
        print(
            f"  inert caps / plain = {r['inert_over_plain']:.3f} (target <= 1.03); "
            f"p25 caps / plain per token = {r['p25_over_plain_per_token']:.3f}, per decode "
            f"step = {r['p25_over_plain_per_step']:.3f} "
            f"({r['p25_replies_changed']} of {batch} replies changed by the cap)"
        )
    m = monitoring_cost(lm, axis, questions, args.rounds)
    result["monitoring"] = m
    print(
        f"monitoring a {m['assistant_turns']}-turn transcript ({m['tokens']} tokens): "
        f"forward calls {m['forward_calls']}; "
        + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in m["median_s"].items())
    )
    print(
        f"  monitor / one forward = {m['monitor_over_forward']:.3f} (target <= 1); "
        f"/ one forward with only the last position's logits = "
        f"{m['monitor_over_forward_last_logits']:.3f}; with per-token projections "
        f"{m['monitor_per_token_over_forward']:.3f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
