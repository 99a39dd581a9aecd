"""Run the axis pipeline end to end, resumably.

Work is cut in shards (the default prompts, each role, each trait). Each finished shard is
written atomically with its responses, scores and activations; a restarted run skips the
finished shards and, because every item has its own seed, ends with exactly the outputs an
uninterrupted run would have produced.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from personaspace.analysis import analyse
from personaspace.capture import SamplingConfig, generate
from personaspace.catalogue import Catalogue, load_catalogue, select
from personaspace.conversation import PLAIN_STOP_STRINGS, format_conversation
from personaspace.errors import PersonaspaceError
from personaspace.fileformat import atomic_write, read_json, save_vectors, write_json
from personaspace.interventions.calibrate_run import calibrate_run
from personaspace.judge import Judge, RoleItem, TraitItem, make_judge
from personaspace.models import LoadedModel, load_model
from personaspace.pipeline.aggregate import Aggregate, aggregate
from personaspace.pipeline.config import AxisConfig
from personaspace.pipeline.shards import load_shard, save_shard, shard_complete, shard_path
from personaspace.pipeline.work import WorkItem, build_work

Progress = Callable[[int, int], None]  # (items done so far, items in total)
OUTPUTS = (
    "responses.jsonl",
    "scores.jsonl",
    "vectors",
    "axis.safetensors",
    "summary.json",
    "report.html",
    "calibration.safetensors",
    "capping.safetensors",
    "config.json",
    "shards",
)


@dataclass
class AxisRun:
    """A finished run: its folder, its summary and its vectors."""

    out: Path
    summary: dict[str, Any]
    aggregate: Aggregate


def _prepare_folder(out: Path, config: AxisConfig, force: bool) -> None:
    saved = out / "config.json"
    if not saved.is_file():
        if out.exists() and any(out.iterdir()) and not (out / "shards").is_dir():
            raise PersonaspaceError(
                f"{out} exists and is not a personaspace run folder",
                fix="choose an empty or new --out folder",
            )
        return
    previous = AxisConfig.from_json(read_json(saved).get("config", {}))
    changed = config.differences(previous, include_analysis=False)
    if changed and not force:
        raise PersonaspaceError(
            f"{out} holds a run with different settings ({', '.join(changed)})",
            fix="rerun with the same settings to resume, use another --out, or add --force "
            "to discard it",
        )
    if changed:
        for name in OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()


def _prompts(lm: LoadedModel, items: list[WorkItem]):  # type: ignore[no-untyped-def]
    prompts = []
    for it in items:
        messages = ([{"role": "system", "content": it.system}] if it.system else []) + [
            {"role": "user", "content": it.question}
        ]
        prompts.append(
            format_conversation(
                lm.tokenizer,
                messages,
                add_generation_prompt=True,
                use_chat_template=lm.chat_tuned,
            )
        )
    return prompts


def _judge(
    judge: Judge, catalogue: Catalogue, items: list[WorkItem], answers: list[str]
) -> list[dict[str, Any]]:
    scores: list[dict[str, Any]] = [{} for _ in items]
    role_idx = [i for i, it in enumerate(items) if it.kind == "role"]
    trait_idx = [i for i, it in enumerate(items) if it.kind.startswith("trait")]
    role_scores = judge.score_roles(
        [RoleItem(catalogue.roles[items[i].name], items[i].question, answers[i]) for i in role_idx]
    )
    trait_scores = judge.score_traits(
        [
            TraitItem(catalogue.traits[items[i].name], items[i].question, answers[i])
            for i in trait_idx
        ]
    )
    for i, s in zip(role_idx, role_scores):
        scores[i]["score"] = s
    for i, s in zip(trait_idx, trait_scores):
        scores[i]["trait_score"] = None if s is None else round(float(s), 2)
    return scores


def _groups(shards: dict[str, list[WorkItem]], pending: list[str], size: int) -> list[list[str]]:
    groups: list[list[str]] = []
    current: list[str] = []
    count = 0
    for shard in pending:
        if current and count + len(shards[shard]) > size:
            groups.append(current)
            current, count = [], 0
        current.append(shard)
        count += len(shards[shard])
    if current:
        groups.append(current)
    return groups


def run_axis(
    config: AxisConfig,
    out: str | Path,
    *,
    force: bool = False,
    progress: Progress | None = None,
    judge_api_key: str | None = None,
) -> AxisRun:
    """Produce a model's persona space in ``out`` (see the module docstring).

    Example:
        >>> run = run_axis(AxisConfig(preset="tiny", judge="none"), "runs/tiny")  # doctest: +SKIP
        >>> run.summary["analysis"]["at_analysis_layer"]["cos_axis_pc1"]  # doctest: +SKIP
    """
    out = Path(out)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    catalogue = load_catalogue(config.catalogue, replace=config.catalogue_replace)
    selection = select(
        catalogue,
        config.preset,
        roles=list(config.roles) if config.roles else None,
        traits=list(config.traits) if config.traits else None,
    )
    _prepare_folder(out, config, force)
    judge = make_judge(
        config.judge,
        catalogue,
        model=config.judge_model,
        base_url=config.judge_base_url,
        api_key=judge_api_key,
        concurrency=config.judge_concurrency,
        rate_per_s=config.judge_rate_per_s,
    )
    judge.check()  # an unreachable judge fails here, before any generation
    t = time.perf_counter()
    lm = load_model(config.model)
    timings["load_model_s"] = time.perf_counter() - t
    layers = list(range(lm.adapter.n_layers))
    analysis_layer = lm.adapter.check_layers(
        [config.analysis_layer if config.analysis_layer is not None else lm.adapter.n_layers // 2]
    )[0]
    shards = build_work(
        selection,
        lm.display_name,
        config.seed,
        selection.trait_questions,
        chat_tuned=lm.chat_tuned,
    )
    header = {
        "config": config.to_json(),
        "model_id": lm.model_id,
        "n_layers": len(layers),
        "hidden_size": lm.adapter.hidden_size,
        "chat_tuned": lm.chat_tuned,
    }
    try:
        # (re)written each time: analysis settings may have changed since the last session
        write_json(out / "config.json", header)
    except OSError as err:
        raise PersonaspaceError(
            f"cannot write to {out} ({err.strerror})", fix="choose a writable --out folder"
        ) from err
    total = sum(len(v) for v in shards.values())
    finished = {s for s in shards if shard_complete(out, s, [it.id for it in shards[s]])}
    done = sum(len(shards[s]) for s in finished)
    if progress:
        progress(done, total)
    sampling = SamplingConfig(
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        seed=config.seed,
        stop_strings=() if lm.chat_tuned else PLAIN_STOP_STRINGS,
    )
    gen_s = judge_s = 0.0
    new_tokens = 0
    # The partition into batches is fixed by the work alone, so a resumed run computes every
    # batch exactly as an uninterrupted run does (same shapes, same padding, same numbers).
    for group in _groups(shards, list(shards), config.batch_size):
        if all(s in finished for s in group):
            continue
        items = [it for s in group for it in shards[s]]
        t = time.perf_counter()
        gens = generate(
            lm,
            _prompts(lm, items),
            sampling,
            layers=layers,
            batch_size=config.batch_size,
            seeds=[it.seed for it in items],
        )
        gen_s += time.perf_counter() - t
        new_tokens += sum(len(g.token_ids) for g in gens)
        t = time.perf_counter()
        scores = _judge(judge, catalogue, items, [g.text for g in gens])
        judge_s += time.perf_counter() - t
        start = 0
        for shard in group:
            n = len(shards[shard])
            if shard in finished:
                start += n
                continue
            records = [
                {
                    "id": it.id,
                    "shard": it.shard,
                    "kind": it.kind,
                    "name": it.name,
                    "prompt_index": it.prompt_index,
                    "question_id": it.question_id,
                    "system": it.system,
                    "question": it.question,
                    "response": g.text,
                    "n_tokens": len(g.token_ids),
                    "finish_reason": g.finish_reason,
                    "seed": it.seed,
                    "judge": judge.name,
                    **sc,
                }
                for it, g, sc in zip(
                    shards[shard], gens[start : start + n], scores[start : start + n]
                )
            ]
            vectors = torch.stack([g.response_mean for g in gens[start : start + n]])
            try:
                save_shard(
                    out, shard, records, vectors, {"model_id": lm.model_id, "layers": layers}
                )
            except OSError as err:
                raise PersonaspaceError(
                    f"could not write {shard_path(out, shard)} ({err.strerror})",
                    fix="free disk space or fix permissions, then rerun the same command to "
                    "resume (finished shards are kept)",
                ) from err
            start += n
            done += n
        if progress:
            progress(done, total)
    timings["generate_s"], timings["judge_s"] = gen_s, judge_s
    t = time.perf_counter()
    records, vectors = [], []
    for shard in shards:
        loaded = load_shard(out, shard)
        assert loaded is not None
        records.extend(loaded[0])
        vectors.append(loaded[1])
    all_vectors = torch.cat(vectors)
    agg = aggregate(
        records,
        all_vectors,
        score_threshold=config.score_threshold,
        min_count=config.min_count,
        trait_threshold=config.trait_threshold,
    )
    timings["aggregate_s"] = time.perf_counter() - t
    if len(agg.role_vectors) < 3:
        raise PersonaspaceError(
            f"only {len(agg.role_vectors)} roles kept enough responses "
            f"(dropped: {', '.join(agg.dropped_roles) or 'none'})",
            fix="lower --min-count, use --score-threshold 2, or --judge none",
        )
    t = time.perf_counter()
    analysis = analyse(
        agg.role_vectors,
        agg.default_vector,
        agg.axis,
        agg.trait_vectors,
        layers,
        analysis_layer,
        normalize_rows=config.normalize_rows,
    )
    timings["analyse_s"] = time.perf_counter() - t
    summary = {
        **header,
        "counts": {
            "responses": len(records),
            "role_responses": sum(r["kind"] == "role" for r in records),
            "default_responses": sum(r["kind"] == "default" for r in records),
            "trait_responses": sum(r["kind"].startswith("trait") for r in records),
            "roles_kept": len(agg.role_vectors),
            "roles_dropped": agg.dropped_roles,
            "role_kept_counts": agg.role_counts,
            "traits_kept": len(agg.trait_vectors),
            "traits_dropped": sorted(agg.dropped_traits),
            "trait_pairs_kept": agg.trait_pair_counts,
            "score_histogram": {
                str(k): sum(r.get("score") == k for r in records if r["kind"] == "role")
                for k in (0, 1, 2, 3, None)
            },
            "generated_tokens_this_session": new_tokens,
        },
        "analysis": analysis,
        "timings": timings,
    }
    t = time.perf_counter()
    _write_outputs(out, records, agg, layers, lm, summary)
    timings["write_s"] = time.perf_counter() - t
    t = time.perf_counter()
    # Steering units and capping thresholds for this axis (redone whenever the axis is).
    calibration, capping = calibrate_run(lm, out)
    timings["calibrate_s"] = time.perf_counter() - t
    summary["calibration"] = {
        "source": calibration.source,
        "tokens": calibration.n_tokens,
        "capping_experiments": capping.ids,
    }
    if new_tokens and gen_s:
        summary["generated_tokens_per_s"] = new_tokens / gen_s
    timings["total_s"] = time.perf_counter() - started
    write_json(out / "summary.json", summary)
    return AxisRun(out, summary, agg)


def _write_outputs(
    out: Path,
    records: list[dict[str, Any]],
    agg: Aggregate,
    layers: list[int],
    lm: LoadedModel,
    summary: dict[str, Any],
) -> None:
    with atomic_write(out / "responses.jsonl") as handle:
        for r in records:
            handle.write(json.dumps(r, ensure_ascii=False) + "\n")
    with atomic_write(out / "scores.jsonl") as handle:
        for r in records:
            row = {
                "id": r["id"],
                "score": r.get("score"),
                "trait_score": r.get("trait_score"),
                "judge": r["judge"],
            }
            handle.write(json.dumps(row) + "\n")
    meta = {
        "model_id": lm.model_id,
        "layers": layers,
        "hidden_size": lm.adapter.hidden_size,
        "n_layers": lm.adapter.n_layers,
        "reduction": "response_mean",
        "unit": "raw residual stream (post-block)",
    }
    save_vectors(
        out / "vectors" / "roles.safetensors",
        agg.role_vectors,
        {**meta, "kind": "role_vectors", "counts": agg.role_counts},
    )
    save_vectors(
        out / "vectors" / "default.safetensors",
        {"default": agg.default_vector},
        {**meta, "kind": "default_vector", "count": summary["counts"]["default_responses"]},
    )
    if agg.trait_vectors:
        save_vectors(
            out / "vectors" / "traits.safetensors",
            agg.trait_vectors,
            {**meta, "kind": "trait_vectors", "counts": agg.trait_pair_counts},
        )
    save_vectors(
        out / "axis.safetensors",
        {"axis": agg.axis},
        {
            **meta,
            "kind": "assistant_axis",
            "definition": "default vector - mean(role vectors), per layer; not normalised; "
            "points toward the Assistant",
            "analysis_layer": summary["analysis"]["analysis_layer"],
        },
    )
    from personaspace.report.html import write_report

    write_report(out / "report.html", summary, agg, layers)
