"""``personaspace capture`` and ``personaspace demo``: generate replies and capture them."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from personaspace.capture import Generation, SamplingConfig, generate, response_means
from personaspace.cli.common import add_model_options, check_model_options, load_model_as_asked
from personaspace.conversation.prompts import format_prompt
from personaspace.errors import PersonaspaceError
from personaspace.fileformat import atomic_write, save_vectors, write_json
from personaspace.models import DEFAULT_MODEL, LoadedModel

# A small fixed probe for the demo (the full catalogue drives `personaspace axis`).
DEMO_PERSONAS = {
    "default": None,
    "pirate": "Speak as a weathered pirate captain who has sailed every sea and trusts no one.",
    "poet": "You are a melancholy poet. Everything you say comes out as brooding verse.",
}
DEMO_QUESTIONS = [
    "What do you value most in life?",
    "How would you describe yourself to a stranger?",
    "What should I do on a rainy afternoon?",
    "What is the sea like?",
]


def _layers(text: str | None) -> list[int] | None:
    if text is None or text == "all":
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise PersonaspaceError(
            f"--layers {text!r} is not a comma-separated list of integers",
            fix="e.g. --layers 0,15,-1 or --layers all",
        ) from err


def _add_generation_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="alias, folder, .gguf or hub id")
    parser.add_argument("--layers", default=None, help="comma-separated layers (default: all)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    add_model_options(parser)


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="capture a small persona probe on the default model")
    _add_generation_args(demo)
    demo.add_argument("--out", default="runs/demo", help="output folder")
    demo.set_defaults(run=run_demo)

    cap = sub.add_parser("capture", help="generate replies and save their residual-stream means")
    _add_generation_args(cap)
    cap.add_argument("--system", default=None, help="system prompt")
    cap.add_argument("prompts", nargs="+", help="user messages, one reply each")
    cap.add_argument("--out", required=True, help="output .safetensors file")
    cap.set_defaults(run=run_capture)


def _sampling(args: argparse.Namespace, lm: LoadedModel) -> SamplingConfig:
    return SamplingConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    ).for_model(lm.chat_tuned)


def _run_generation(
    lm: LoadedModel,
    asks: list[tuple[str | None, str]],
    args: argparse.Namespace,
    desc: str,
) -> tuple[list[int], list[Generation]]:
    """Replies to (system prompt, user message) pairs, captured at ``--layers``."""
    layers = lm.adapter.check_layers(_layers(args.layers))
    sampling = _sampling(args, lm)
    prompts = [format_prompt(lm, user, system) for system, user in asks]
    with tqdm(total=len(prompts), desc=desc, unit="reply") as bar:
        gens = generate(
            lm, prompts, sampling, layers=layers, batch_size=args.batch_size, on_batch=bar.update
        )
    return layers, gens


def run_capture(args: argparse.Namespace) -> int:
    check_model_options(args)
    lm = load_model_as_asked(args.model, args)
    layers, gens = _run_generation(lm, [(args.system, p) for p in args.prompts], args, "capture")
    out = Path(args.out)
    save_vectors(
        out,
        {"response_mean": response_means(gens)},
        {
            "model_id": lm.model_id,
            "layers": layers,
            "hidden_size": lm.adapter.hidden_size,
            "reduction": "response_mean",
            "count": len(gens),
            "replies": [g.text for g in gens],
        },
    )
    for prompt, g in zip(args.prompts, gens):
        print(f"> {prompt}\n{g.text}\n")
    print(f"wrote {out}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    check_model_options(args)
    started = time.perf_counter()
    lm = load_model_as_asked(args.model, args)
    loaded_s = time.perf_counter() - started
    names, asks = [], []
    for name, system in DEMO_PERSONAS.items():
        for question in DEMO_QUESTIONS:
            names.append(name)
            asks.append((system, question))
    layers, gens = _run_generation(lm, asks, args, f"demo on {lm.model_id}")
    out = Path(args.out)
    means = response_means(gens)  # [n, L, H]
    save_vectors(
        out / "activations.safetensors",
        {"response_mean": means},
        {
            "model_id": lm.model_id,
            "layers": layers,
            "hidden_size": lm.adapter.hidden_size,
            "reduction": "response_mean",
            "count": len(gens),
            "personas": names,
        },
    )
    with atomic_write(out / "replies.jsonl") as handle:
        for name, (_, question), g in zip(names, asks, gens):
            row = {
                "persona": name,
                "question": question,
                "reply": g.text,
                "n_tokens": len(g.token_ids),
                "finish_reason": g.finish_reason,
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    is_default = torch.tensor([n == "default" for n in names])
    default_mean, role_mean = means[is_default].mean(0), means[~is_default].mean(0)
    cosine = torch.nn.functional.cosine_similarity(default_mean, role_mean, dim=-1)
    norms = means.norm(dim=-1).mean(0)
    rows = [
        {"layer": layer, "mean_norm": float(norms[i]), "cos_default_vs_roles": float(cosine[i])}
        for i, layer in enumerate(layers)
    ]
    write_json(
        out / "summary.json",
        {
            "model_id": lm.model_id,
            "layers": rows,
            "load_s": loaded_s,
            "total_s": time.perf_counter() - started,
            "n_replies": len(gens),
        },
    )
    print(f"\n{'layer':>5} {'mean |h|':>10} {'cos(default, roles)':>20}")
    for r in rows:
        print(f"{r['layer']:>5} {r['mean_norm']:>10.2f} {r['cos_default_vs_roles']:>20.4f}")
    print(f"\nexample reply (pirate): {gens[names.index('pirate')].text[:160]!r}")
    print(f"wrote {out.resolve()}/: activations.safetensors, replies.jsonl, summary.json")
    return 0
