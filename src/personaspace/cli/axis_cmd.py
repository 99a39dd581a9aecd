"""``personaspace axis``: the Assistant Axis pipeline from the command line."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tqdm import tqdm

from personaspace.capture.sampling import SamplingConfig
from personaspace.catalogue import PRESETS
from personaspace.cli.common import (
    add_model_options,
    add_ray_options,
    bar_warnings,
    on_ray,
    print_rows,
    ray_options,
)
from personaspace.errors import PersonaspaceError
from personaspace.models import DEFAULT_MODEL
from personaspace.pipeline import AxisConfig, AxisRun, run_axis
from personaspace.pipeline.config import AXIS_SAMPLING
from personaspace.report.trust import diagnostic_rows


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "axis", help="map a model's persona space: role/trait vectors, the Assistant Axis, PCA"
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="alias, folder, .gguf or hub id")
    parser.add_argument("--preset", choices=PRESETS, default="quick")
    parser.add_argument("--judge", choices=("local", "openai", "none"), default="local")
    parser.add_argument("--out", default=None, help="run folder (default: runs/axis-MODEL-PRESET)")
    parser.add_argument(
        "--catalogue", metavar="DIR", default=None, help="your own catalogue folder"
    )
    parser.add_argument(
        "--replace-catalogue",
        action="store_true",
        help="sections of --catalogue replace the built-in ones",
    )
    parser.add_argument(
        "--roles",
        default=None,
        help="comma-separated role names (overrides the preset's role choice)",
    )
    parser.add_argument("--traits", default=None, help="comma-separated trait names")
    parser.add_argument("--judge-model", default=None)
    parser.add_argument(
        "--judge-base-url",
        default=None,
        help="OpenAI-compatible endpoint (default: $OPENAI_BASE_URL)",
    )
    parser.add_argument("--judge-api-key", default=None, help="default: $OPENAI_API_KEY")
    parser.add_argument("--judge-concurrency", type=int, default=4)
    parser.add_argument("--judge-rate", type=float, default=5.0, help="requests per second")
    parser.add_argument("--score-threshold", type=int, choices=(2, 3), default=3)
    parser.add_argument(
        "--min-count",
        type=int,
        default=None,
        help="roles with fewer kept responses are dropped (default: the preset's; quick 3)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=AXIS_SAMPLING.max_new_tokens)
    parser.add_argument("--temperature", type=float, default=AXIS_SAMPLING.temperature)
    parser.add_argument("--top-p", type=float, default=AXIS_SAMPLING.top_p)
    parser.add_argument("--seed", type=int, default=AXIS_SAMPLING.seed)
    add_model_options(parser)
    parser.add_argument(
        "--layer",
        default=None,
        help="analysis layer: a number, or auto (best held-out default-vs-role AUC); "
        "default: the middle layer",
    )
    parser.add_argument(
        "--null",
        choices=("random-init", "none"),
        default="random-init",
        help="the random-init null beside the diagnostics (cached; none skips it)",
    )
    parser.add_argument(
        "--normalize-rows", action="store_true", help="L2-normalise role vectors for PCA"
    )
    parser.add_argument(
        "--no-role-card",
        dest="role_card",
        action="store_false",
        help="ask the role prompts alone, without the character card before each",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="discard an existing run in --out made with other settings",
    )
    add_ray_options(parser, "the shards")
    parser.set_defaults(
        run=run,
        param_flags={
            "min_count": "--min-count",
            "batch_size": "--batch-size",
            "score_threshold": "--score-threshold",
        },
    )


def _names(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _layer(text: str | None) -> int | str | None:
    if text is None or text == "auto":
        return text
    try:
        return int(text)
    except ValueError as err:
        raise PersonaspaceError(
            f"--layer {text!r} is not a layer", fix="give a number, or auto"
        ) from err


def run(args: argparse.Namespace) -> int:
    ray = ray_options(args)
    config = AxisConfig(
        model=args.model,
        preset=args.preset,
        catalogue=args.catalogue,
        catalogue_replace=args.replace_catalogue,
        roles=_names(args.roles),
        traits=_names(args.traits),
        judge=args.judge,
        judge_model=args.judge_model,
        judge_base_url=args.judge_base_url,
        judge_concurrency=args.judge_concurrency,
        judge_rate_per_s=args.judge_rate,
        score_threshold=args.score_threshold,
        min_count=args.min_count,
        sampling=SamplingConfig(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
        ),
        batch_size=args.batch_size,
        analysis_layer=_layer(args.layer),
        null=args.null,
        normalize_rows=args.normalize_rows,
        role_card=args.role_card,
        device=args.device,
        dtype=args.dtype,
    )
    out = Path(args.out or f"runs/axis-{Path(args.model).stem}-{args.preset}")
    bar = tqdm(
        desc=f"axis {args.preset} on {args.model}{on_ray(ray)}", unit="response", disable=None
    )

    def progress(done: int, total: int) -> None:
        if bar.total is None:  # first call: responses already on disk count as the start
            bar.total, bar.initial, bar.n = total, done, done
            bar.refresh()
        else:
            bar.update(done - bar.n)

    api_key = args.judge_api_key or os.environ.get("OPENAI_API_KEY")
    try:
        result = run_axis(
            config,
            out,
            force=args.force,
            progress=progress,
            judge_api_key=api_key,
            ray=ray,
            on_event=bar_warnings(bar),
        )
    finally:
        bar.close()
    print()
    _print_summary(result, config)
    print(
        f"\nwrote {out.resolve()}/ (report.html, summary.json, axis.safetensors, vectors/, "
        "responses.jsonl)"
        if result.analysis is not None
        else f"\nwrote {out.resolve()}/ (summary.json with the verdict, vectors/, responses.jsonl)"
    )
    return 0


def _print_summary(result: AxisRun, config: AxisConfig) -> None:
    s, space = result.summary, result.analysis
    c = s["counts"]
    rows: list[tuple[str, object]] = [
        ("model", s["model_id"]),
        (
            "responses",
            f"{c['responses']} ({c['role_responses']} role, {c['default_responses']} "
            f"default, {c['trait_responses']} trait)",
        ),
        ("role scores 0/1/2/3/missing", " / ".join(str(v) for v in c["score_histogram"].values())),
        ("roles kept / dropped", f"{c['roles_kept']} / {len(c['roles_dropped'])}"),
    ]
    if space is not None:
        at = space.at_analysis_layer
        rows += [
            ("analysis layer", space.analysis_layer),
            ("cos(axis, PC1)", f"{at.cos_axis_pc1:.3f}  (published: > 0.71)"),
            (
                "PCs for 70/80/90% variance",
                f"{at.components_70}/{at.components_80}/{at.components_90}  (published 70%: 4-19)",
            ),
            ("default's rank on PC1", f"{at.default_pc1_rank} of {c['roles_kept'] + 1}"),
            ("nearest the default", ", ".join(n for n, _ in at.nearest_to_default[:5])),
            ("Assistant end", ", ".join(at.assistant_end[:5])),
            ("far end", ", ".join(at.far_end[:5])),
        ]
    rows += diagnostic_rows(s)
    rows.append(("time", ", ".join(f"{k[:-2]} {v:.0f}s" for k, v in s["timings"].items())))
    print_rows(rows)
    for line in s.get("diagnostics", {}).get("verdict", []):
        print(f"not above its null: {line}")
    if result.verdict is not None:
        print(
            f"\nverdict: no persona space: {result.verdict}.\nThe same command with "
            "--score-threshold 2, a lower --min-count or --judge none re-aggregates the stored "
            "replies without generating again."
        )
        return
    dropped = len(c["roles_dropped"])
    if dropped > c["roles_kept"]:
        print(
            f"\nnote: {dropped} of {dropped + c['roles_kept']} roles had fewer than "
            f"{config.kept_per_role} replies scored >= {config.score_threshold}; the same command "
            "with --score-threshold 2 or a lower --min-count re-aggregates without generating "
            "again"
        )
