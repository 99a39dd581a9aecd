"""`personaspace serve` under load: streamed latency with and without capping, and 16 clients.

Starts the real server (`personaspace serve`, a child process, the axis run's model and
capping config) on a free loopback port and talks to it with the official `openai` client:

1. Streaming: the same prompts, streamed (`stream: true`, greedy, 64 tokens), alternately
   uncapped and capped (`personaspace.cap`, default `layers_11:19-p25`, 8 layers). Per
   request: time to first token (request sent -> first content chunk) and decode tokens/s
   (completion tokens after the first / time from first to last chunk). Medians, and the
   capped / uncapped ratios, from the same interleaved run.
2. Load: 16 client threads send requests back to back for `--load-s` seconds (default 120),
   alternating capped and uncapped, half streamed; every error is counted. The server's
   resident memory is sampled every second from /proc: its peak (VmHWM) and the mean RSS
   of the first and the last 20 % of the run (flat memory: the two agree).

Usage: python bench/bench_serve.py [--axis RUN] [--rounds 8] [--load-s 120] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import openai

DEFAULT_RUN = "runs/axis-smollm2-135m-instruct-quick"
PROMPTS = [
    "What should I pack for a week of hiking?",
    "Explain how a bicycle gear works.",
    "Give me three tips for writing a cover letter.",
    "Why is the sky blue?",
    "How do I keep basil alive indoors?",
    "What is a good way to learn chess openings?",
    "Describe a calm morning routine.",
    "How do bees make honey?",
]


def start_server(axis: str) -> tuple[subprocess.Popen, str]:
    exe = Path(sys.executable).with_name("personaspace")
    proc = subprocess.Popen(
        [str(exe), "serve", "--axis", axis, "--port", "0", "--no-access-log"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.search(r"at (http://\S+?)/ ", line)
        if found:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, found.group(1)
    raise SystemExit(f"the server did not start (exit {proc.wait()})")


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def streamed(client: openai.OpenAI, prompt: str, cap: str | None, tokens: int) -> dict:
    sent = time.perf_counter()
    first = last = None
    usage = None
    stream = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": prompt}],
        max_tokens=tokens,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"personaspace": {"cap": cap}},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            last = time.perf_counter()
            first = first or last
        if chunk.usage is not None:
            usage = chunk.usage
    assert first is not None and last is not None and usage is not None
    n = usage.completion_tokens
    return {
        "ttft_s": first - sent,
        "decode_tokens_per_s": (n - 1) / (last - first) if n > 1 and last > first else None,
        "completion_tokens": n,
    }


def streaming(client: openai.OpenAI, cap: str, rounds: int, tokens: int) -> dict[str, Any]:
    runs: dict[str, list[dict]] = {"uncapped": [], "capped": []}
    streamed(client, PROMPTS[0], None, 8)  # warm-up
    for i in range(rounds):
        prompt = PROMPTS[i % len(PROMPTS)]
        runs["uncapped"].append(streamed(client, prompt, None, tokens))
        runs["capped"].append(streamed(client, prompt, cap, tokens))
    out: dict[str, Any] = {"runs": runs}
    for name, rows in runs.items():
        rates = [r["decode_tokens_per_s"] for r in rows if r["decode_tokens_per_s"]]
        out[name] = {
            "ttft_s": statistics.median(r["ttft_s"] for r in rows),
            "decode_tokens_per_s": statistics.median(rates),
        }
    out["ttft_capped_over_uncapped"] = out["capped"]["ttft_s"] / out["uncapped"]["ttft_s"]
    out["tokens_per_s_capped_over_uncapped"] = (
        out["capped"]["decode_tokens_per_s"] / out["uncapped"]["decode_tokens_per_s"]
    )
    return out


def load(url: str, pid: int, cap: str, clients: int, seconds: float) -> dict[str, Any]:
    stop = time.monotonic() + seconds
    done: list[int] = [0] * clients
    errors: list[str] = []
    samples: list[tuple[float, int]] = []

    def client_loop(index: int) -> None:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300)
        i = 0
        while time.monotonic() < stop:
            chosen = cap if (index + i) % 2 else None
            prompt = PROMPTS[(index + i) % len(PROMPTS)]
            try:
                if i % 2:
                    streamed(client, prompt, chosen, 16)
                else:
                    reply = client.chat.completions.create(
                        model="smollm2-135m-instruct",
                        messages=[{"role": "user", "content": prompt}],
                        max_tokens=16,
                        extra_body={"personaspace": {"cap": chosen}},
                    )
                    assert reply.choices[0].message.content is not None
                done[index] += 1
            except Exception as err:  # every failure counts, whatever it is
                errors.append(f"{type(err).__name__}: {err}")
            i += 1

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    start = time.monotonic()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        samples.append((time.monotonic() - start, rss_kib(pid)[0]))
        time.sleep(1.0)
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    n = max(len(samples) // 5, 1)
    return {
        "clients": clients,
        "seconds": elapsed,
        "requests": sum(done),
        "requests_per_client": done,
        "errors": len(errors),
        "error_examples": errors[:5],
        "rss_first_fifth_mib": statistics.mean(s for _, s in samples[:n]) / 1024,
        "rss_last_fifth_mib": statistics.mean(s for _, s in samples[-n:]) / 1024,
        "rss_samples_mib": [round(s / 1024, 1) for _, s in samples],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--axis", default=DEFAULT_RUN)
    parser.add_argument("--cap", default="layers_11:19-p25")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--load-s", type=float, default=120.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if not (Path(args.axis) / "capping.safetensors").is_file():
        raise SystemExit(f"{args.axis} has no capping.safetensors: run `make demo` first")
    proc, url = start_server(args.axis)
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300)
        s = streaming(client, args.cap, args.rounds, args.tokens)
        print(
            f"streaming ({args.rounds} x {args.tokens} tokens each): TTFT uncapped "
            f"{s['uncapped']['ttft_s'] * 1000:.0f} ms, capped {s['capped']['ttft_s'] * 1000:.0f} "
            f"ms (ratio {s['ttft_capped_over_uncapped']:.3f}); decode tokens/s uncapped "
            f"{s['uncapped']['decode_tokens_per_s']:.1f}, capped "
            f"{s['capped']['decode_tokens_per_s']:.1f} "
            f"(ratio {s['tokens_per_s_capped_over_uncapped']:.3f})"
        )
        before = rss_kib(proc.pid)[0] / 1024
        result_load = load(url, proc.pid, args.cap, args.clients, args.load_s)
        peak = rss_kib(proc.pid)[1] / 1024
        result_load.update({"rss_before_load_mib": before, "peak_rss_mib": peak})
        print(
            f"load: {args.clients} clients x {result_load['seconds']:.0f} s: "
            f"{result_load['requests']} requests, {result_load['errors']} errors; server RSS "
            f"{before:.0f} MiB before, {result_load['rss_first_fifth_mib']:.0f} MiB (first "
            f"fifth) -> {result_load['rss_last_fifth_mib']:.0f} MiB (last fifth), peak "
            f"{peak:.0f} MiB"
        )
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"streaming": s, "load": result_load, "pid": os.getpid()}, indent=2)
        )


if __name__ == "__main__":
    main()
