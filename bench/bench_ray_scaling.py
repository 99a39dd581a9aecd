"""Scaling of `axis --ray` with the number of local CPU workers (each one thread).

One local Ray instance with as many CPUs as the largest worker count; the same axis run
(the bundled SmolLM2 by default: 2 roles and 6 traits of the quick preset, no judge; two
roles are too few for a persona space, so the run ends after writing its vectors, without
the null, validation, calibration and report passes that would dominate here) made with
each worker count in turn, interleaved over the rounds (1 2 1 2 ...) so that load from other
jobs on the machine hits every count alike. The figure is the wall time of the generation
stage (`workers_s`: from the first group handed out to the last shard written; model loading
excluded); the speedup is the median 1-worker time over the median N-worker time, and the
busy fraction the share of that wall time each worker spent computing (1.0: the driver
kept every worker fed; a speedup below N with a busy fraction near 1 means the workers
ran slower, short of CPU, not that they waited). Every
run's responses.jsonl must hash the same (the runs are byte-identical).

Usage: python bench/bench_ray_scaling.py [--rounds 3] [--workers 1,2] [--json OUT]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
from pathlib import Path

import ray

from personaspace.catalogue import load_catalogue, select
from personaspace.pipeline import AxisConfig, run_axis
from personaspace.pipeline.distributed import RayOptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--roles", type=int, default=2, help="the first N roles of quick")
    parser.add_argument("--traits", type=int, default=6, help="the first N traits of quick")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--niceness",
        default="0",
        help="the workers' nice value (Ray's own default, 15, yields to every other job on a "
        "shared machine; 0 competes like a single process would)",
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    quick = select(load_catalogue(), "quick")
    roles = [r.name for r in quick.roles[: args.roles]]
    traits = [t.name for t in quick.traits[: args.traits]]
    config = AxisConfig.from_json(
        {
            "model": args.model,
            "preset": "quick",
            "roles": roles,
            "traits": traits,
            "judge": "none",
            "null": "none",
            "min_count": 1,
            "max_new_tokens": args.max_new_tokens,
            "batch_size": args.batch_size,
            "device": "cpu",
            "dtype": "float32",
        }
    )
    os.environ["RAY_worker_niceness"] = args.niceness  # noqa: SIM112 (Ray spells it so)
    ray.init(num_cpus=max(counts), include_dashboard=False, log_to_driver=False)
    seconds: dict[int, list[float]] = {n: [] for n in counts}
    busy: dict[int, list[float]] = {n: [] for n in counts}  # workers' summed generate+judge
    hashes, replies, tokens = set(), 0, 0
    try:
        for round_ in range(args.rounds):
            for n in counts:
                with tempfile.TemporaryDirectory() as folder:
                    run = run_axis(config, Path(folder) / "run", ray=RayOptions(workers=n))
                    timings = run.summary["timings"]
                    seconds[n].append(timings["workers_s"])
                    busy[n].append(timings["generate_s"] + timings["judge_s"])
                    replies = run.summary["counts"]["responses"]
                    tokens = run.summary["counts"]["generated_tokens_this_session"]
                    data = (Path(folder) / "run" / "responses.jsonl").read_bytes()
                    hashes.add(hashlib.sha256(data).hexdigest())
                print(
                    f"round {round_} workers {n}: {seconds[n][-1]:.1f} s "
                    f"(workers busy {busy[n][-1]:.1f} s in all)",
                    flush=True,
                )
    finally:
        ray.shutdown()
    median = {n: statistics.median(v) for n, v in seconds.items()}
    result = {
        "model": args.model,
        "worker_niceness": args.niceness,
        "replies": replies,
        "generated_tokens": tokens,
        "seconds": seconds,
        "median_s": median,
        "workers_busy_s": busy,
        # the share of the wall time each worker spent computing (1.0: never idle)
        "busy_fraction": {n: statistics.median(busy[n]) / (n * median[n]) for n in counts},
        "replies_per_s": {n: replies / s for n, s in median.items()},
        "speedup": {n: median[counts[0]] / s for n, s in median.items()},
        "identical_outputs": len(hashes) == 1,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
