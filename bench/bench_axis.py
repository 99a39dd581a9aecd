"""The quick axis run, timed: wall time by stage, peak memory, and generation throughput.

Usage: python bench/bench_axis.py [--model smollm2-135m-instruct] [--preset quick]
       [--out runs/axis-MODEL-PRESET] [--wall-target-s 600] [--threads N] [--skip-plain]

``--out`` keeps the run folder (a fresh one: the folder must not hold a run yet), so the
timed run is also the run you analyse; without it the run goes to a temporary folder.
``--threads N`` sets torch's intra-op threads for both halves (``OMP_NUM_THREADS`` for the
child); on a CPU shared with other jobs one thread can be much faster than two, because
every small matrix product otherwise waits for a descheduled second thread.

1. Runs ``personaspace axis`` (a fresh output folder, default settings) as a child process
   and records its wall time, the stage timings from ``summary.json`` and the child's peak
   resident memory.
2. In this process, generates the very same prompts (same batches, same sampling settings,
   same maximum length) with plain ``model.generate`` from transformers: no hooks, no
   capture, no judging, no writing. Tokens/s of the pipeline's generation stage divided by
   tokens/s of this plain run is the throughput ratio (target >= 0.9).

Both halves run in one invocation on the same machine, so the ratio is measured side by
side; absolute times drift on a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from personaspace import load_model
from personaspace.capture.generate import end_of_turn_ids
from personaspace.catalogue import load_catalogue, select
from personaspace.conversation.prompts import format_prompt
from personaspace.pipeline import AxisConfig
from personaspace.pipeline.run import _groups
from personaspace.pipeline.work import build_work


def run_pipeline(
    model: str, preset: str, out: Path, threads: int | None
) -> tuple[float, float, dict]:
    started = time.perf_counter()
    log = out.with_suffix(".log")
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    with open(log, "w") as handle:
        subprocess.run(
            [sys.executable, "-m", "personaspace.cli.main", "axis", "--model", model,
             "--preset", preset, "--out", str(out)],
            check=True, stdout=handle, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    wall = time.perf_counter() - started
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    return wall, peak_gib, json.loads((out / "summary.json").read_text())


def plain_generation(model: str, preset: str, config: AxisConfig) -> tuple[int, float]:
    lm = load_model(model)
    selection = select(load_catalogue(), preset)
    shards = build_work(
        selection,
        lm.display_name,
        config.sampling.seed,
        selection.trait_questions,
        chat_tuned=lm.chat_tuned,
    )
    eot = sorted(end_of_turn_ids(lm))
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else eot[0]
    tokens, seconds = 0, 0.0
    for group in _groups(shards, list(shards), config.batch_size):
        items = [it for s in group for it in shards[s]]
        rows = sorted(
            (p.input_ids for p in (format_prompt(lm, it.question, it.system) for it in items)),
            key=len,
            reverse=True,
        )
        for start in range(0, len(rows), config.batch_size):
            batch = rows[start : start + config.batch_size]
            width = max(len(r) for r in batch)
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in batch])
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in batch])
            t = time.perf_counter()
            with torch.inference_mode():
                out = lm.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    do_sample=True,
                    temperature=config.sampling.temperature,
                    top_p=config.sampling.top_p,
                    top_k=0,
                    max_new_tokens=config.sampling.max_new_tokens,
                    eos_token_id=eot,
                    pad_token_id=pad,
                )
            seconds += time.perf_counter() - t
            for row in out[:, width:].tolist():
                ends = [i for i, tok in enumerate(row) if tok in eot]
                tokens += ends[0] if ends else len(row)
    return tokens, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=AxisConfig.model)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--out", type=Path, default=None, help="keep the run in this folder")
    parser.add_argument("--wall-target-s", type=float, default=600.0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument(
        "--skip-plain",
        action="store_true",
        help="time the pipeline only (no plain-generate half, no throughput ratio)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = AxisConfig(model=args.model, preset=args.preset)
    if args.out is not None:
        if (args.out / "config.json").exists():
            sys.exit(f"{args.out} already holds a run: a timed run needs a fresh folder")
        wall, peak_gib, summary = run_pipeline(args.model, args.preset, args.out, args.threads)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            wall, peak_gib, summary = run_pipeline(
                args.model, args.preset, Path(tmp) / "run", args.threads
            )
    timings = summary["timings"]
    pipeline_tps = summary["generated_tokens_per_s"]
    result = {
        "model": args.model,
        "preset": args.preset,
        "threads": torch.get_num_threads(),
        "responses": summary["counts"]["responses"],
        "wall_s": round(wall, 1),
        "stages_s": {k: round(v, 1) for k, v in timings.items()},
        "peak_rss_gib": round(peak_gib, 2),
        "pipeline_generated_tokens": summary["counts"]["generated_tokens_this_session"],
        "pipeline_tokens_per_s": round(pipeline_tps, 1),
        "targets": {
            f"wall_le_{args.wall_target_s:g}s": wall <= args.wall_target_s,
            "peak_rss_lt_4gib": peak_gib < 4,
        },
    }
    if not args.skip_plain:
        plain_tokens, plain_s = plain_generation(args.model, args.preset, config)
        plain_tps = plain_tokens / plain_s
        result.update(
            {
                "plain_generate_tokens": plain_tokens,
                "plain_generate_s": round(plain_s, 1),
                "plain_tokens_per_s": round(plain_tps, 1),
                "throughput_ratio": round(pipeline_tps / plain_tps, 3),
            }
        )
        result["targets"]["ratio_ge_0.9"] = pipeline_tps / plain_tps >= 0.9
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
