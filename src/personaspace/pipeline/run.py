"""Run the axis pipeline end to end, resumably, as named stages.

``run_axis`` = prepare (settings, catalogue, judge, folder) -> load the model -> generate
and judge (shard by shard) -> collect the shards -> aggregate -> analyse -> write -> calibrate.

Work is cut in shards (the default prompts, each role, each trait). Each finished shard is
written atomically with its responses, scores and activations; a restarted run skips the
finished shards and, because every item has its own seed, ends with exactly the outputs an
uninterrupted run would have produced.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import torch

from personaspace.analysis import PersonaSpace, analyse
from personaspace.analysis.diagnostics import best_layer, held_out_auc
from personaspace.capture import Generation, generate, response_means
from personaspace.capture.sampling import SAMPLER
from personaspace.catalogue import Catalogue, Selection, load_catalogue, select
from personaspace.conversation.prompts import format_prompt
from personaspace.errors import PersonaspaceError
from personaspace.judge import Judge, RoleItem, TraitItem, make_judge
from personaspace.models import LoadedModel, load_model
from personaspace.models.device import resolve_placement
from personaspace.monitor.validate import read_validation_set, validate_axis
from personaspace.pipeline.aggregate import Aggregate, aggregate
from personaspace.pipeline.calibrate import calibrate_run
from personaspace.pipeline.config import AxisConfig
from personaspace.pipeline.diagnose import random_init_null, reply_diagnostics, reply_set, verdict
from personaspace.pipeline.work import WorkItem, build_work
from personaspace.report.axis_report import axis_report
from personaspace.runfolder import (
    AXIS_FILE,
    CALIBRATION_FILE,
    CAPPING_FILE,
    REPORT_FILE,
    VALIDATION_FILE,
    ResponseRecord,
    RunFolder,
)
from personaspace.vectors.axis import Axis

Progress = Callable[[int, int], None]  # (items done so far, items in total)
MIN_ROLES = 3  # a persona space needs at least three role vectors
PROMPT_ROOM = 256  # tokens allowed for a prompt when choosing an automatic batch size


class RunCounts(TypedDict):
    responses: int
    role_responses: int
    default_responses: int
    trait_responses: int
    roles_kept: int
    roles_dropped: dict[str, int]
    role_kept_counts: dict[str, int]
    traits_kept: int
    traits_dropped: list[str]
    trait_pairs_kept: dict[str, int]
    score_histogram: dict[str, int]
    generated_tokens_this_session: int


class CalibrationInfo(TypedDict):
    source: str
    tokens: int
    capping_experiments: list[str]


class _Summary(TypedDict):
    config: dict[str, Any]
    model_id: str
    n_layers: int
    hidden_size: int
    chat_tuned: bool
    counts: RunCounts
    analysis: dict[str, Any] | None
    timings: dict[str, float]


class AxisSummary(_Summary, total=False):
    """What ``summary.json`` holds. ``analysis`` is ``None`` and ``verdict`` says why when
    too few roles were kept for a persona space; ``diagnostics`` says how trustworthy the
    axis is (with its nulls) and ``validation`` how it reads the validation set."""

    diagnostics: dict[str, Any]
    validation: dict[str, Any]
    calibration: CalibrationInfo
    generated_tokens_per_s: float
    verdict: str


@dataclass
class AxisRun:
    """A finished run: its folder, its summary, its vectors and (unless too few roles were
    kept) its persona space."""

    out: Path
    summary: AxisSummary
    aggregate: Aggregate
    analysis: PersonaSpace | None = None

    @property
    def verdict(self) -> str | None:
        return self.summary.get("verdict")


class _Timings:
    """Stage timings in seconds, accumulated under their names (``generate_s``...)."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.values[name] = self.values.get(name, 0.0) + time.perf_counter() - started


@dataclass
class _Setup:
    config: AxisConfig
    force: bool
    folder: RunFolder
    catalogue: Catalogue
    selection: Selection
    judge: Judge


@dataclass
class _Loaded:
    lm: LoadedModel
    layers: list[int]
    analysis_layer: int | None  # None: chosen from the replies (held-out AUC)
    shards: dict[str, list[WorkItem]]
    header: dict[str, Any]


def _prepare(config: AxisConfig, out: str | Path, force: bool, judge_api_key: str | None) -> _Setup:
    """Settings, catalogue and judge checked, and the folder made ready; no model yet."""
    catalogue = load_catalogue(config.catalogue, replace=config.catalogue_replace)
    selection = select(
        catalogue,
        config.preset,
        roles=list(config.roles) if config.roles else None,
        traits=list(config.traits) if config.traits else None,
    )
    resolve_placement(config.device, config.dtype)  # a bad device or dtype fails here
    folder = RunFolder(out)
    folder.check_new_or_own()
    if folder.file("config.json").is_file():
        # runs made before the character card existed asked the role prompts alone
        previous = AxisConfig.from_json({"role_card": False, **folder.settings()})
        changed = config.differences(previous, include_analysis=False)
        if changed and not force:
            raise PersonaspaceError(
                f"{folder.path} holds a run with different settings ({', '.join(changed)})",
                fix="rerun with the same settings to resume, use another folder, or force "
                "a fresh start (discarding it)",
            )
        if changed:
            folder.clear_outputs()
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
    return _Setup(config, force, folder, catalogue, selection, judge)


def _load(setup: _Setup) -> _Loaded:
    """The model, its layers, the run's work and the header written to ``config.json``."""
    config = setup.config
    placement = resolve_placement(config.device, config.dtype)
    engine = {"device": placement.device_name, "dtype": placement.dtype_name, "sampler": SAMPLER}
    _check_engine(setup.folder, engine, setup.force)
    lm = load_model(config.model, dtype=placement.dtype, device=placement.device)
    layers = list(range(lm.adapter.n_layers))
    chosen = config.analysis_layer
    if chosen is None:
        chosen = lm.adapter.n_layers // 2
    analysis_layer = None if chosen == "auto" else lm.adapter.check_layers([int(chosen)])[0]
    shards = build_work(
        setup.selection,
        lm.display_name,
        config.sampling.seed,
        setup.selection.trait_questions,
        chat_tuned=lm.chat_tuned,
        role_card=config.role_card,
    )
    header = {
        "config": config.to_json(),
        "model_id": lm.model_id,
        "n_layers": len(layers),
        "hidden_size": lm.adapter.hidden_size,
        "chat_tuned": lm.chat_tuned,
        "engine": engine,
    }
    # (re)written each time: analysis settings may have changed since the last session
    setup.folder.write_header(header)
    return _Loaded(lm, layers, analysis_layer, shards, header)


# What a run made before the engine recorded itself was made with.
ENGINE_BEFORE_RECORDS = {"device": "cpu", "dtype": "float32", "sampler": "exponential-race/v1"}


def _check_engine(folder: RunFolder, engine: dict[str, str], force: bool) -> None:
    """Refuse to resume shards made on another device, in another dtype or with another
    sampler: their replies would not be what this run makes (``force``: discard them)."""
    header = folder.header()
    if not header or not folder.file("shards").is_dir():
        return
    before = {**ENGINE_BEFORE_RECORDS, **header.get("engine", {})}
    changed = [k for k in ENGINE_BEFORE_RECORDS if before.get(k) != engine[k]]
    if changed and force:
        folder.clear_outputs()
    elif changed:
        was = ", ".join(f"{k} {before[k]} (now {engine[k]})" for k in changed)
        raise PersonaspaceError(
            f"{folder.path} holds replies made with another {', '.join(changed)}: {was}",
            fix="resume with the same device and dtype, use another folder, or force a fresh "
            "start (discarding it)",
        )


class Scores(TypedDict, total=False):
    """The judge's scores of one reply: ``score`` (0-3) for roles, ``trait_score`` for traits."""

    score: int | None
    trait_score: float | None


def _judge(
    judge: Judge, catalogue: Catalogue, items: list[WorkItem], answers: list[str]
) -> list[Scores]:
    scores: list[Scores] = [{} for _ in items]
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
    for i, t in zip(trait_idx, trait_scores):
        scores[i]["trait_score"] = None if t is None else round(float(t), 2)
    return scores


GROUP_BATCHES = 4  # shards are generated together up to this many full batches


def _groups(shards: dict[str, list[WorkItem]], pending: list[str], size: int) -> list[list[str]]:
    """Consecutive shards packed up to ``GROUP_BATCHES`` batches of ``size`` items, so that
    generation runs mostly full batches (a role's shard alone is smaller than a batch);
    the packing depends on the work alone, so a resumed run repeats it exactly."""
    size *= GROUP_BATCHES
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


def _record(item: WorkItem, reply: Generation, judge: str, scores: Scores) -> ResponseRecord:
    record: ResponseRecord = {
        "id": item.id,
        "shard": item.shard,
        "kind": item.kind,
        "name": item.name,
        "prompt_index": item.prompt_index,
        "question_id": item.question_id,
        "system": item.system,
        "question": item.question,
        "response": reply.text,
        "n_tokens": len(reply.token_ids),
        "finish_reason": reply.finish_reason,
        "seed": item.seed,
        "judge": judge,
    }
    if "score" in scores:
        record["score"] = scores["score"]
    if "trait_score" in scores:
        record["trait_score"] = scores["trait_score"]
    return record


def _generate_and_judge(
    setup: _Setup, loaded: _Loaded, timings: _Timings, progress: Progress | None
) -> int:
    """Every unfinished shard generated, judged and written; returns the new token count."""
    config, folder, lm, shards = setup.config, setup.folder, loaded.lm, loaded.shards
    total = sum(len(v) for v in shards.values())
    finished = {s for s in shards if folder.shard_complete(s, [it.id for it in shards[s]])}
    done = sum(len(shards[s]) for s in finished)
    if progress:
        progress(done, total)
    sampling = config.sampling.for_model(lm.chat_tuned)
    new_tokens = 0
    # The partition into batches is fixed by the work alone, so a resumed run computes every
    # batch exactly as an uninterrupted run does (same shapes, same padding, same numbers).
    # prompts of the catalogue are well under PROMPT_ROOM tokens
    batch_size = lm.batch_size(config.batch_size, PROMPT_ROOM + sampling.max_new_tokens)
    for group in _groups(shards, list(shards), batch_size):
        if all(s in finished for s in group):
            continue
        items = [it for s in group for it in shards[s]]
        with timings.stage("generate_s"):
            gens = generate(
                lm,
                [format_prompt(lm, it.question, it.system) for it in items],
                sampling,
                layers=loaded.layers,
                batch_size=batch_size,
                seeds=[it.seed for it in items],
            )
        new_tokens += sum(len(g.token_ids) for g in gens)
        with timings.stage("judge_s"):
            scores = _judge(setup.judge, setup.catalogue, items, [g.text for g in gens])
        start = 0
        for shard in group:
            n = len(shards[shard])
            if shard not in finished:
                part = slice(start, start + n)
                records = [
                    _record(it, g, setup.judge.name, sc)
                    for it, g, sc in zip(shards[shard], gens[part], scores[part])
                ]
                vectors = response_means(gens[part])
                meta = {"model_id": lm.model_id, "layers": loaded.layers}
                try:
                    folder.save_shard(shard, records, vectors, meta)
                except OSError as err:
                    raise PersonaspaceError(
                        f"could not write {folder.shard_path(shard)} ({err.strerror})",
                        fix="free disk space or fix permissions, then rerun the same command to "
                        "resume (finished shards are kept)",
                    ) from err
                done += n
            start += n
        if progress:
            progress(done, total)
    timings.values.setdefault("generate_s", 0.0)
    timings.values.setdefault("judge_s", 0.0)
    return new_tokens


def _collect(
    folder: RunFolder, shards: dict[str, list[WorkItem]]
) -> tuple[list[ResponseRecord], torch.Tensor]:
    records: list[ResponseRecord] = []
    vectors = []
    for shard in shards:
        loaded = folder.load_shard(shard)
        assert loaded is not None, shard  # every shard was finished above
        records.extend(loaded[0])
        vectors.append(loaded[1])
    return records, torch.cat(vectors)


def _counts(records: list[ResponseRecord], agg: Aggregate, new_tokens: int) -> RunCounts:
    return {
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
    }


def too_few_roles(agg: Aggregate, config: AxisConfig) -> str | None:
    """Why no persona space can be built from ``agg`` (fewer than three roles kept), or None.

    Example:
        >>> agg = Aggregate(torch.zeros(1, 2), {}, {}, torch.zeros(1, 2), {}, {"ghost": 1})
        >>> print(too_few_roles(agg, AxisConfig()))  # doctest: +ELLIPSIS
        only 0 roles kept at least 3 replies scored >= 3 (dropped: ghost); a persona space ...
    """
    if len(agg.role_vectors) >= MIN_ROLES:
        return None
    return (
        f"only {len(agg.role_vectors)} roles kept at least {config.kept_per_role} replies "
        f"scored >= {config.score_threshold} (dropped: {', '.join(agg.dropped_roles) or 'none'})"
        f"; a persona space needs {MIN_ROLES} or more: re-aggregate the stored replies with "
        "score_threshold 2 or a lower min_count (no new generation), or use the judge none"
    )


def _write(
    folder: RunFolder,
    loaded: _Loaded,
    records: list[ResponseRecord],
    agg: Aggregate,
    *,
    axis_layer: int | None,
) -> None:
    """Replies, scores and vectors, and the axis when there is a persona space (without one,
    an axis, calibration or report of other analysis settings is removed: it would not match
    the summary, and re-aggregating the stored replies rebuilds it)."""
    lm = loaded.lm
    folder.write_records(records)
    meta = {
        "model_id": lm.model_id,
        "layers": loaded.layers,
        "hidden_size": lm.adapter.hidden_size,
        "n_layers": lm.adapter.n_layers,
        "reduction": "response_mean",
        "unit": "raw residual stream (post-block)",
    }
    folder.save_vectors(
        meta,
        roles=agg.role_vectors,
        role_counts=agg.role_counts,
        default=agg.default_vector,
        default_count=sum(r["kind"] == "default" for r in records),
        traits=agg.trait_vectors,
        trait_counts=agg.trait_pair_counts,
    )
    folder.file(VALIDATION_FILE).unlink(missing_ok=True)  # it read the axis this replaces
    if axis_layer is not None:
        folder.save_axis(agg.axis, meta, axis_layer)
    else:
        for stale in (AXIS_FILE, CALIBRATION_FILE, CAPPING_FILE, REPORT_FILE):
            folder.file(stale).unlink(missing_ok=True)


def _persona_space(
    config: AxisConfig,
    loaded: _Loaded,
    folder: RunFolder,
    records: list[ResponseRecord],
    vectors: torch.Tensor,
    agg: Aggregate,
    summary: AxisSummary,
    timings: _Timings,
) -> PersonaSpace:
    """Diagnose, analyse, validate, write the vectors, axis and report, and calibrate."""
    layers = loaded.layers
    with timings.stage("diagnose_s"):
        replies, index = reply_set(records, vectors, agg, config.score_threshold)
        auc = held_out_auc(replies)
        layer = loaded.analysis_layer
        chosen_by = "given" if config.analysis_layer is not None else "middle"
        if layer is None:
            layer = best_layer(auc, layers) if auc else layers[len(layers) // 2]
            chosen_by = "held-out default-vs-role AUC (auto)" if auc else "middle (no AUC)"
        diagnostics: dict[str, Any] = {
            "analysis_layer": {"layer": layer, "chosen_by": chosen_by},
            **reply_diagnostics(replies, layers, layer, auc, seed=config.sampling.seed),
        }
        null = None
        if config.null == "random-init":
            null = random_init_null(loaded.lm, records, replies, index, layers, layer)
            diagnostics["random_init_null"] = null
    with timings.stage("analyse_s"):
        space = analyse(
            agg.role_vectors,
            agg.default_vector,
            agg.axis,
            agg.trait_vectors,
            layers,
            layer,
            normalize_rows=config.normalize_rows,
        )
    diagnostics["verdict"] = verdict(
        diagnostics, null, space.at_analysis_layer.cos_axis_pc1, layers.index(layer)
    )
    summary["analysis"] = space.to_json()
    summary["diagnostics"] = diagnostics
    with timings.stage("validate_s"):
        summary["validation"] = _validate(loaded, agg, layer)
    with timings.stage("write_s"):
        _write(folder, loaded, records, agg, axis_layer=layer)
        folder.write_report(axis_report(summary, space))
    with timings.stage("calibrate_s"):
        # Steering units and capping thresholds for this axis (redone whenever it is).
        calibration, capping = calibrate_run(loaded.lm, folder.path)
    summary["calibration"] = {
        "source": calibration.source,
        "tokens": calibration.n_tokens,
        "capping_experiments": capping.ids,
    }
    return space


def _validate(loaded: _Loaded, agg: Aggregate, layer: int) -> dict[str, Any]:
    """The validation set projected on the new axis (``personaspace validate``)."""
    lm, row = loaded.lm, loaded.layers.index(layer)
    axis = Axis(lm.model_id, loaded.layers, agg.axis.float(), lm.adapter.n_layers, "this run")
    roles = torch.stack([v[row] for v in agg.role_vectors.values()])
    try:
        report = validate_axis(
            lm, axis, layer, agg.default_vector[row], roles, read_validation_set()
        )
    except PersonaspaceError as error:  # the run stands; its validation says why it failed
        return {"passed": False, "error": str(error)}
    return report.to_json()


def run_axis(
    config: AxisConfig,
    out: str | Path,
    *,
    force: bool = False,
    progress: Progress | None = None,
    judge_api_key: str | None = None,
) -> AxisRun:
    """Produce a model's persona space in ``out`` (see the module docstring).

    When fewer than three roles keep enough replies, the replies, scores and vectors are
    still written, and the summary carries the ``verdict`` instead of an analysis.

    Example:
        >>> run = run_axis(AxisConfig(preset="tiny", judge="none"), "runs/tiny")  # doctest: +SKIP
        >>> run.analysis.at_analysis_layer.cos_axis_pc1  # doctest: +SKIP
    """
    timings = _Timings()
    started = time.perf_counter()
    setup = _prepare(config, out, force, judge_api_key)
    with timings.stage("load_model_s"):
        loaded = _load(setup)
    new_tokens = _generate_and_judge(setup, loaded, timings, progress)
    folder = setup.folder
    with timings.stage("aggregate_s"):
        records, vectors = _collect(folder, loaded.shards)
        agg = aggregate(
            records,
            vectors,
            score_threshold=config.score_threshold,
            min_count=config.kept_per_role,
            trait_threshold=config.trait_threshold,
        )
    header = loaded.header
    summary: AxisSummary = {
        "config": header["config"],
        "model_id": header["model_id"],
        "n_layers": header["n_layers"],
        "hidden_size": header["hidden_size"],
        "chat_tuned": header["chat_tuned"],
        "counts": _counts(records, agg, new_tokens),
        "analysis": None,
        "timings": timings.values,
    }
    verdict = too_few_roles(agg, config)
    space = None
    if verdict is None:
        space = _persona_space(config, loaded, folder, records, vectors, agg, summary, timings)
    else:
        summary["verdict"] = verdict
        with timings.stage("write_s"):
            _write(folder, loaded, records, agg, axis_layer=None)
    generation_s = timings.values["generate_s"]
    if new_tokens and generation_s:
        summary["generated_tokens_per_s"] = new_tokens / generation_s
    timings.values["total_s"] = time.perf_counter() - started
    folder.write_summary(summary)
    return AxisRun(folder.path, summary, agg, space)
