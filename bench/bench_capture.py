"""Generate+capture vs plain generation vs the two-pass baseline, side by side in one run.

On the default model (smollm2), batch 32, 64 new tokens, greedy. Variants run interleaved
(A B C D, A B C D, ...) and each figure is the median over the rounds, so machine noise
hits all variants alike. Prints:
  1. generate+capture time / plain generate time (target <= 1.05)
  2. speedup of single-pass over the two-pass baseline (target >= 1.3)
  3. generated tokens/s, and the implied model FLOP/s as a fraction of a torch matmul peak
     measured in the same run.

Usage: python bench/bench_capture.py [--rounds 3] [--batch 32] [--new-tokens 64] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from personaspace import load_model
from personaspace.capture import SamplingConfig, generate
from personaspace.conversation import format_conversation

TOPICS = [
    "the ocean",
    "a favourite book",
    "learning to cook",
    "the night sky",
    "city life",
    "mountain hiking",
    "old photographs",
    "rainy days",
    "friendship",
    "a first job",
    "music that moves you",
    "gardening",
    "trains",
    "the meaning of home",
    "winter",
    "a difficult decision",
    "the smell of bread",
    "libraries",
    "learning languages",
    "insects",
    "the future of cities",
    "chess",
    "childhood games",
    "deserts",
    "kindness",
    "volcanoes",
    "letters by hand",
    "a quiet morning",
    "bicycles",
    "bees",
    "maps",
    "clocks",
]


def matmul_peak_flops(n: int = 2048, repeats: int = 8) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def two_pass(lm, prompts, config):  # type: ignore[no-untyped-def]
    """Baseline: generate (no hooks), then one forward with output_hidden_states, then means."""
    gens = generate(lm, prompts, config, reductions=(), batch_size=len(prompts))
    rows = [p.input_ids + g.token_ids for p, g in zip(prompts, gens)]
    width = max(len(r) for r in rows)
    pad = lm.tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        out = lm.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            output_hidden_states=True,
            logits_to_keep=1,
        )
    states = torch.stack(out.hidden_states[1:], dim=2)  # [B, T, L, H]
    means = []
    for i, (p, g) in enumerate(zip(prompts, gens)):
        start = width - len(rows[i]) + len(p.input_ids)
        means.append(states[i, start : start + len(g.token_ids)].mean(0))
    return gens, torch.stack(means)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    lm = load_model(args.model)
    prompts = [
        format_conversation(
            lm.tokenizer,
            [{"role": "user", "content": f"Tell me about {t}."}],
            add_generation_prompt=True,
        )
        for t in (TOPICS * 4)[: args.batch]
    ]
    config = SamplingConfig(max_new_tokens=args.new_tokens)

    def plain():  # type: ignore[no-untyped-def]
        return generate(lm, prompts, config, reductions=(), batch_size=args.batch)

    def capture():  # type: ignore[no-untyped-def]
        return generate(lm, prompts, config, batch_size=args.batch)

    def hf_generate():  # type: ignore[no-untyped-def]
        batch = lm.tokenizer(
            [p.text for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False
        )
        with torch.inference_mode():
            return lm.model.generate(
                **batch,
                max_new_tokens=args.new_tokens,
                do_sample=False,
                pad_token_id=lm.tokenizer.pad_token_id,
            )

    variants = {
        "plain_generate": plain,
        "generate_capture": capture,
        "two_pass": lambda: two_pass(lm, prompts, config),
        "hf_generate": hf_generate,
    }
    capture()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in variants}
    outputs = {}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    gens = outputs["generate_capture"]
    new_tokens = sum(len(g.token_ids) for g in gens)
    fed_tokens = sum(len(p.input_ids) for p in prompts) + new_tokens
    # Forward FLOPs per token ~ 2 x (matmul parameters): all parameters except the input
    # embedding lookup, plus the LM head (the tied embedding matrix counts once as a matmul).
    n_params = lm.n_parameters()
    flops_per_token = 2 * n_params
    peak = matmul_peak_flops()
    # Check the single pass and the baseline agree before comparing their speed.
    _, baseline_means = outputs["two_pass"]
    ours = torch.stack([g.response_mean for g in gens])
    agree = float(
        (
            (ours[:, :-1] - baseline_means[:, :-1]).norm(dim=-1)
            / baseline_means[:, :-1].norm(dim=-1)
        ).max()
    )
    result = {
        "model": lm.model_id,
        "batch": args.batch,
        "max_new_tokens": args.new_tokens,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "median_s": med,
        "all_s": times,
        "capture_over_plain": med["generate_capture"] / med["plain_generate"],
        "capture_over_hf_generate": med["generate_capture"] / med["hf_generate"],
        "speedup_vs_two_pass": med["two_pass"] / med["generate_capture"],
        "generated_tokens": new_tokens,
        "generated_tokens_per_s": new_tokens / med["generate_capture"],
        "model_flops_per_s": fed_tokens * flops_per_token / med["generate_capture"],
        "matmul_peak_flops_per_s": peak,
        "max_rel_err_vs_two_pass_layers_0_to_L-2": agree,
    }
    result["fraction_of_peak"] = result["model_flops_per_s"] / peak
    for name, value in med.items():
        print(f"{name:>18}: {value:7.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times[name])})")
    print(
        f"1. generate+capture / plain generate: {result['capture_over_plain']:.3f} "
        f"(target <= 1.05); vs HF generate: {result['capture_over_hf_generate']:.3f}"
    )
    print(
        f"2. speedup over two-pass baseline:    {result['speedup_vs_two_pass']:.2f}x "
        f"(target >= 1.3x)"
    )
    print(
        f"3. generated tokens/s: {result['generated_tokens_per_s']:.1f}; model "
        f"{result['model_flops_per_s'] / 1e9:.1f} GFLOP/s = "
        f"{result['fraction_of_peak']:.1%} of matmul peak {peak / 1e9:.1f} GFLOP/s"
    )
    print(f"   single pass vs two-pass means, max relative error: {agree:.2e}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
