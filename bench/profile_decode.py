"""Where the time of the axis run's generation goes: one batch of quick-run prompts, timed.

Usage: python bench/profile_decode.py [--model gemma-3-270m] [--batch 32] [--tokens 24]

Runs ``generate`` (the pipeline's engine: capture of all layers, the run's sampling
settings and stop strings) on the first ``--batch`` role prompts of the quick preset, with
timers wrapped around its parts: the prefill forward, the decoder blocks of each decode
step, the LM head (the vocabulary projection), token choice (softmax, top-p, sampling),
the stop-string check, and the capture hooks' bookkeeping. Prints seconds and shares.
Wrapping adds a little overhead; shares are what to read.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch

from personaspace import load_model
from personaspace.capture import SamplingConfig, generate
from personaspace.catalogue import load_catalogue, select
from personaspace.conversation.prompts import format_prompt
from personaspace.pipeline.work import build_work

# the module, not the function `personaspace.capture.generate` that shadows it
gen_mod = importlib.import_module("personaspace.capture.generate")
TIMES: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[name] += time.perf_counter() - t
            CALLS[name] += 1

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=24)
    args = parser.parse_args()
    torch.manual_seed(0)
    lm = load_model(args.model)
    selection = select(load_catalogue(), "quick")
    shards = build_work(selection, lm.display_name, 0, 4, chat_tuned=lm.chat_tuned)
    items = [it for s, v in shards.items() if s.startswith("role/") for it in v][: args.batch]
    prompts = [format_prompt(lm, it.question, it.system) for it in items]
    sampling = SamplingConfig(
        max_new_tokens=args.tokens,
        temperature=0.7,
        top_p=0.9,
    ).for_model(lm.chat_tuned)
    model = lm.model
    head = model.get_output_embeddings()
    body = model.model if hasattr(model, "model") else model
    head.forward = timed("lm_head", head.forward)  # type: ignore[method-assign]
    gen_mod.choose_tokens = timed("choose_tokens", gen_mod.choose_tokens)
    gen_mod._stop_cut = timed("stop_strings", gen_mod._stop_cut)
    on_block = gen_mod._BatchRun.on_block
    gen_mod._BatchRun.on_block = timed("capture_hooks", on_block)  # type: ignore[method-assign]
    absorb = gen_mod._BatchRun._absorb_step
    gen_mod._BatchRun._absorb_step = timed("capture_bookkeeping", absorb)  # type: ignore[method-assign]
    body_forward = body.forward

    def body_timed(*a: Any, **k: Any) -> Any:
        ids = k.get("input_ids")
        name = "prefill_blocks" if ids is not None and ids.shape[1] > 1 else "decode_blocks"
        return timed(name, body_forward)(*a, **k)

    body.forward = body_timed  # type: ignore[method-assign]
    generate(lm, prompts[:2], SamplingConfig(max_new_tokens=2), batch_size=2)  # warm-up
    TIMES.clear()
    CALLS.clear()
    t = time.perf_counter()
    gens = generate(lm, prompts, sampling, batch_size=args.batch, seeds=[it.seed for it in items])
    total = time.perf_counter() - t
    # body time includes the capture hooks (they run inside the blocks)
    parts = {
        "prefill (decoder blocks, prompt)": TIMES["prefill_blocks"],
        "decode: decoder blocks": TIMES["decode_blocks"],
        "decode: LM head (vocabulary projection)": TIMES["lm_head"],
        "token choice (softmax, top-p, sampling)": TIMES["choose_tokens"],
        "stop-string check": TIMES["stop_strings"],
        "capture bookkeeping (per step)": TIMES["capture_bookkeeping"],
    }
    parts["other (loop, padding, cache)"] = total - sum(parts.values())
    result = {
        "model": args.model,
        "batch": args.batch,
        "max_new_tokens": args.tokens,
        "prompt_tokens_mean": round(sum(len(p.input_ids) for p in prompts) / len(prompts), 1),
        "generated_tokens": sum(len(g.token_ids) for g in gens),
        "decode_steps": CALLS["choose_tokens"],
        "total_s": round(total, 2),
        "seconds": {k: round(v, 3) for k, v in parts.items()},
        "share": {k: round(v / total, 3) for k, v in parts.items()},
        "capture_hooks_s (inside blocks)": round(TIMES["capture_hooks"], 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
