"""The generation engine against Hugging Face ``generate``, side by side in one run.

Usage:
    python bench/bench_engine.py [--model smollm2-135m-instruct] [--reps 3] [--prompts 128]
        [--batches 32,64,128] [--dtypes float32,bfloat16] [--device auto] [--ablate]

All variants generate replies to the same quick-preset prompts (role system prompts and
questions, as the axis pipeline asks them) with the pipeline's sampling (temperature 0.7,
top-p 0.9, 64 new tokens, the base model's stop string), interleaved rep by rep; the table
gives medians.

- ``hf``: ``model.generate`` (sampling, no capture) at each batch size and dtype; its best
  configuration is the reference.
- ``ours``: ``personaspace.capture.generate`` with capture of every layer (as the pipeline
  runs it), and ``ours-nocapture`` (no hooks) for the capture overhead.
- ``--ablate``: the engine as it was before each optimisation, then with the optimisations
  added one at a time (by patching, in this order: the contiguous head input; inverse-CDF
  sampling on the nucleus instead of an exponential race over the whole vocabulary; a KV
  cache written in place instead of transformers' DynamicCache; dropping stopped rows;
  shared-prefix prefill), to measure each gain.

Also measured in the same run: the matmul peak (2048 x 2048, per dtype) and the implied
FLOP/s of each variant (2 x parameters x generated tokens / wall time; prompt tokens not
counted), as a share of that peak. Prints one JSON object; ``--out FILE`` writes it too.
Skips cleanly on an unknown device.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from personaspace import load_model
from personaspace.capture import SamplingConfig, generate
from personaspace.capture.generate import end_of_turn_ids
from personaspace.catalogue import load_catalogue, select
from personaspace.conversation.prompts import format_prompt
from personaspace.errors import PersonaspaceError
from personaspace.models.device import resolve_device
from personaspace.pipeline.work import build_work

gen_mod = importlib.import_module("personaspace.capture.generate")
sampling_mod = importlib.import_module("personaspace.capture.sampling")


def matmul_peak(dtype: torch.dtype, device: torch.device) -> float:
    """GFLOP/s of a 2048 x 2048 matmul (best of 5)."""
    a = torch.randn(2048, 2048, device=device).to(dtype)
    b = torch.randn(2048, 2048, device=device).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(5):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * 2048**3 / best / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def exponential_race(
    logits: torch.Tensor, config: SamplingConfig, generators: list[torch.Generator]
) -> torch.Tensor:
    """The engine's previous token choice: one exponential per vocabulary entry per row."""
    if config.greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / config.temperature, dim=-1)
    race = torch.empty_like(probs)
    for row, generator in enumerate(generators):
        race[row].exponential_(generator=generator)
    kept, order = sampling_mod.nucleus(probs, config.top_p)
    picked = (kept / race.gather(-1, order)).argmax(dim=-1, keepdim=True)
    return order.gather(-1, picked).squeeze(-1)


FEATURES = ("contiguous-head", "inverse-cdf", "growing-cache", "dropping-rows", "shared-prefix")


@contextlib.contextmanager
def with_features(enabled: int) -> Iterator[None]:
    """The engine with only the first ``enabled`` of ``FEATURES`` (the rest patched out)."""
    saved: list[tuple[Any, str, Any]] = []

    def patch(obj: Any, attr: str, value: Any) -> None:
        saved.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, value)

    off = set(FEATURES[enabled:])
    if "contiguous-head" in off:
        patch(gen_mod, "contiguous_head_input", lambda model: contextlib.nullcontext())
    if "inverse-cdf" in off:
        patch(gen_mod, "choose_tokens", exponential_race)
        patch(sampling_mod, "NUCLEUS_START", 1024)
    if "growing-cache" in off:
        from transformers import DynamicCache

        patch(gen_mod, "GrowingCache", lambda n_layers, capacity: DynamicCache())
    if "dropping-rows" in off:
        patch(gen_mod, "COMPACT_FRACTION", 0)
    if "shared-prefix" in off:
        patch(gen_mod, "shareable_prefix", lambda prompt: 0)
    try:
        yield
    finally:
        for obj, attr, value in reversed(saved):
            setattr(obj, attr, value)


def hf_generate(lm: Any, rows: list[list[int]], config: SamplingConfig, batch: int) -> int:
    """Hugging Face sampling on the same prompts (no capture); returns reply tokens."""
    eot = sorted(end_of_turn_ids(lm))
    pad = int(lm.tokenizer.pad_token_id)
    tokens = 0
    ordered = sorted(rows, key=len, reverse=True)
    for start in range(0, len(ordered), batch):
        chunk = ordered[start : start + batch]
        width = max(len(r) for r in chunk)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in chunk], device=lm.device)
        mask = torch.tensor(
            [[0] * (width - len(r)) + [1] * len(r) for r in chunk], device=lm.device
        )
        kwargs: dict[str, Any] = {}
        if config.stop_strings:
            kwargs = {"stop_strings": list(config.stop_strings), "tokenizer": lm.tokenizer}
        with torch.inference_mode():
            out = lm.model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=config.temperature,
                top_p=config.top_p,
                top_k=0,
                max_new_tokens=config.max_new_tokens,
                eos_token_id=eot,
                pad_token_id=pad,
                **kwargs,
            )
        for row in out[:, width:].tolist():
            ends = [i for i, tok in enumerate(row) if tok in eot or tok == pad]
            tokens += ends[0] if ends else len(row)
    return tokens


def model_folder(spec: str) -> str | None:
    """A Hugging Face folder for ``spec`` (the dequantized cache of a bundled GGUF)."""
    from pathlib import Path

    from personaspace.models import cache
    from personaspace.models.bundled import BUNDLED_MODELS

    bundled = BUNDLED_MODELS.get(spec)
    if bundled is not None:
        folder = cache.gguf_cache_dir(bundled.locate_gguf(cache.cache_root()))
        return str(folder) if cache.is_cached(folder) else None
    return spec if Path(spec).is_dir() else spec if "/" in spec else None


def vllm_runner(spec: str, dtype: str) -> Callable[[list[list[int]], SamplingConfig], int] | None:
    """vLLM's offline engine on the same token ids, where vLLM is installed (no capture)."""
    if importlib.util.find_spec("vllm") is None:
        return None
    folder = model_folder(spec)
    if folder is None:
        return None
    from vllm import LLM, SamplingParams  # type: ignore[import-not-found]

    llm = LLM(model=folder, dtype=dtype, enforce_eager=False)

    def run(rows: list[list[int]], config: SamplingConfig) -> int:
        params = SamplingParams(
            temperature=config.temperature,
            top_p=config.top_p,
            max_tokens=config.max_new_tokens,
            stop=list(config.stop_strings) or None,
        )
        prompts = [{"prompt_token_ids": r} for r in rows]
        outputs = llm.generate(prompts, params, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outputs)

    return run


def timed(device: torch.device, run: Callable[[], int]) -> tuple[int, float]:
    _sync(device)
    t = time.perf_counter()
    tokens = run()
    _sync(device)
    return tokens, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--batches", default="32,64,128")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--ablate", action="store_true")
    parser.add_argument("--no-hf", action="store_true", help="skip Hugging Face generate")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    try:
        device = resolve_device(args.device)
    except PersonaspaceError as err:
        print(f"skipped: {err}")
        return
    batches = [int(b) for b in args.batches.split(",")]
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    models = {d: load_model(args.model, dtype=d, device=device) for d in dtypes}
    lm0 = next(iter(models.values()))
    selection = select(load_catalogue(), "quick")
    shards = build_work(selection, lm0.display_name, 0, 4, chat_tuned=lm0.chat_tuned)
    items = [it for s, v in shards.items() if s.startswith("role/") for it in v][: args.prompts]
    prompts = [format_prompt(lm0, it.question, it.system) for it in items]
    seeds = [it.seed for it in items]
    config = SamplingConfig(max_new_tokens=64, temperature=0.7, top_p=0.9).for_model(lm0.chat_tuned)
    n_params = lm0.n_parameters()
    variants: dict[str, Callable[[], int]] = {}
    for dtype, lm in models.items():
        tag = str(dtype).removeprefix("torch.")

        def ours(
            lm: Any = lm,
            batch: int = 64,
            reductions: tuple[str, ...] = ("response_mean",),
            enabled: int = len(FEATURES),
        ) -> int:
            with with_features(enabled):
                gens = generate(
                    lm, prompts, config, batch_size=batch, seeds=seeds, reductions=reductions
                )
            return sum(len(g.token_ids) for g in gens)

        # the capture pair runs back to back in every rep (their ratio is what counts)
        variants[f"ours {tag} b64"] = lambda o=ours: o(batch=64)
        variants[f"ours-nocapture {tag} b64"] = lambda o=ours: o(batch=64, reductions=())
        for b in batches:
            if b != 64:
                variants[f"ours {tag} b{b}"] = lambda o=ours, b=b: o(batch=b)
            if not args.no_hf:
                variants[f"hf {tag} b{b}"] = lambda lm=lm, b=b: hf_generate(
                    lm, [p.input_ids for p in prompts], config, b
                )
        if args.ablate:
            for k in range(len(FEATURES)):
                label = "before" if k == 0 else f"+{FEATURES[k - 1]}"
                variants[f"ablate {k} {label} {tag} b64"] = lambda o=ours, k=k: o(enabled=k)
    if device.type == "cuda":
        for dtype in dtypes:
            tag = str(dtype).removeprefix("torch.")
            runner = vllm_runner(args.model, tag)
            if runner is not None:
                variants[f"vllm {tag}"] = lambda r=runner: r([p.input_ids for p in prompts], config)
    peaks = {str(d).removeprefix("torch."): matmul_peak(d, device) for d in dtypes}
    for lm in models.values():  # warm up
        generate(lm, prompts[:2], SamplingConfig(max_new_tokens=2), batch_size=2)
    runs: dict[str, list[float]] = {name: [] for name in variants}
    tokens: dict[str, int] = {}
    for rep in range(args.reps):
        for name, run in variants.items():
            n, seconds = timed(device, run)
            runs[name].append(n / seconds)
            tokens[name] = n
            print(f"rep {rep + 1} {name}: {n / seconds:.1f} tok/s", file=sys.stderr, flush=True)
    table = {}
    for name, rates in runs.items():
        tag = next(t for t in peaks if f" {t} " in f" {name} ")
        rate = statistics.median(rates)
        table[name] = {
            "tokens_per_s": round(rate, 1),
            "tokens": tokens[name],
            "implied_gflop_s": round(2 * n_params * rate / 1e9, 1),
            "share_of_peak": round(2 * n_params * rate / 1e9 / peaks[tag], 3),
        }
    hf = {k: v["tokens_per_s"] for k, v in table.items() if k.startswith("hf ")}
    best_hf = max(hf, key=hf.__getitem__) if hf else None
    ours_rates = {k: v["tokens_per_s"] for k, v in table.items() if k.startswith("ours ")}
    best_ours = max(ours_rates, key=ours_rates.__getitem__)
    result: dict[str, Any] = {
        "model": args.model,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "prompts": len(prompts),
        "reps": args.reps,
        "matmul_peak_gflop_s": {k: round(v, 1) for k, v in peaks.items()},
        "variants": table,
        "best_ours": best_ours,
        "best_hf": best_hf,
        "vllm": "measured"
        if any(k.startswith("vllm") for k in table)
        else "not run (needs a CUDA GPU and the vllm package)",
    }
    if best_hf:
        result["ours_over_best_hf"] = round(ours_rates[best_ours] / hf[best_hf], 2)
    for tag in peaks:
        plain, captured = runs.get(f"ours-nocapture {tag} b64"), runs.get(f"ours {tag} b64")
        if plain and captured:
            # paired within each rep (the two run back to back), then the median: the
            # machine's speed drifts between reps far more than the capture costs
            ratios = [p / c for p, c in zip(plain, captured)]
            result[f"capture_cost_{tag}"] = round(statistics.median(ratios), 3)
            result[f"capture_cost_{tag}_per_rep"] = [round(r, 3) for r in ratios]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
