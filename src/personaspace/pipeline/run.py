"""Run the axis pipeline end to end, resumably, as named stages.

``run_axis`` = prepare (settings, catalogue, judge, folder) -> load the model -> generate
and judge (shard by shard) -> collect the shards -> aggregate -> analyse -> write -> calibrate.

Work is cut in shards (the default prompts, each role, each trait). Each finished shard is
written atomically with its responses, scores and activations; a restarted run skips the
finished shards and, because every item has its own seed, ends with exactly the outputs an
uninterrupted run would have produced. With ``ray``, the same groups of shards are
computed on Ray workers (``shard_workers.py``) and this process alone writes them, so the
outputs are again exactly those of one uninterrupted process.
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
from personaspace.capture import SamplingConfig
from personaspace.capture.sampling import SAMPLER
from personaspace.catalogue import Catalogue, Selection, load_catalogue, select
from personaspace.errors import PersonaspaceError
from personaspace.judge import Judge, make_judge
from personaspace.models import LoadedModel, load_model
from personaspace.models.device import Placement, resolve_placement
from personaspace.monitor.validate import read_validation_set, validate_axis
from personaspace.pipeline.aggregate import Aggregate, aggregate, save_aggregate
from personaspace.pipeline.calibrate import calibrate_run
from personaspace.pipeline.config import AxisConfig
from personaspace.pipeline.diagnose import random_init_null, reply_diagnostics, reply_set, verdict
from personaspace.pipeline.distributed import RayOptions, check_placement_names, ray_cluster
from personaspace.pipeline.replicas import Event, ModelFacts, planned_spec
from personaspace.pipeline.shard_workers import JudgeSpec, ShardPool
from personaspace.pipeline.shards import PROMPT_ROOM, GroupOutput, compute_group, shard_groups
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

    def add(self, name: str, seconds: float) -> None:
        self.values[name] = self.values.get(name, 0.0) + seconds

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)


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
    facts: ModelFacts
    batch_size: int  # of every generation batch (the smallest any Ray worker chose)
    layers: list[int]
    analysis_layer: int | None  # None: chosen from the replies (held-out AUC)
    shards: dict[str, list[WorkItem]]
    header: dict[str, Any]
    sampling: SamplingConfig  # the run's decoding with the model's stop strings
    config: AxisConfig
    lm: LoadedModel | None  # None in a Ray run until the workers are done

    def model(self) -> LoadedModel:
        """The model in this process: loaded before generation in one process; in a Ray run
        (the workers hold the replicas) only now, for the null, validation and calibration."""
        if self.lm is None:
            placement = _driver_placement(self.config)
            self.lm = load_model(self.config.model, dtype=placement.dtype, device=placement.device)
        return self.lm


def _driver_placement(config: AxisConfig) -> Placement:
    """Where a Ray run's driver runs its own passes: the run's device if this machine has it,
    else the best it has (the workers' devices may exist only on their nodes)."""
    for device, dtype in ((config.device, config.dtype), ("auto", config.dtype)):
        try:
            return resolve_placement(device, dtype)
        except PersonaspaceError:
            continue
    return resolve_placement("auto", "auto")


def _prepare(
    config: AxisConfig,
    out: str | Path,
    force: bool,
    judge_api_key: str | None,
    *,
    distributed: bool = False,
) -> _Setup:
    """Settings, catalogue and judge checked, and the folder made ready; no model yet."""
    catalogue = load_catalogue(config.catalogue, replace=config.catalogue_replace)
    selection = select(
        catalogue,
        config.preset,
        roles=list(config.roles) if config.roles else None,
        traits=list(config.traits) if config.traits else None,
    )
    if distributed:  # the device is resolved on each worker's node
        check_placement_names(config.device, config.dtype)
    else:
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


def _load(setup: _Setup, workers: ShardPool | None = None) -> _Loaded:
    """The model (here, or the facts of the one the ``workers`` loaded), its layers, the
    run's work and the header written to ``config.json``."""
    config = setup.config
    lm = None
    if workers is None:
        placement = resolve_placement(config.device, config.dtype)
        engine = {"device": placement.device_name, "dtype": placement.dtype_name}
        _check_engine(setup.folder, {**engine, "sampler": SAMPLER}, setup.force)
        lm = load_model(config.model, dtype=placement.dtype, device=placement.device)
        sampling = config.sampling.for_model(lm.chat_tuned)
        # prompts of the catalogue are well under PROMPT_ROOM tokens
        batch_size = lm.batch_size(config.batch_size, PROMPT_ROOM + sampling.max_new_tokens)
        facts = ModelFacts.of(lm)
    else:
        facts, batch_size = workers.facts, workers.batch_size
        engine = {"device": facts.device, "dtype": facts.dtype}
        _check_engine(setup.folder, {**engine, "sampler": SAMPLER}, setup.force)
        sampling = config.sampling.for_model(facts.chat_tuned)
    layers = list(range(facts.adapter.n_layers))
    chosen = config.analysis_layer
    if chosen is None:
        chosen = facts.adapter.n_layers // 2
    analysis_layer = None if chosen == "auto" else facts.adapter.check_layers([int(chosen)])[0]
    shards = build_work(
        setup.selection,
        facts.display_name,
        config.sampling.seed,
        setup.selection.trait_questions,
        chat_tuned=facts.chat_tuned,
        role_card=config.role_card,
    )
    header = {
        "config": config.to_json(),
        "model_id": facts.model_id,
        "n_layers": len(layers),
        "hidden_size": facts.adapter.hidden_size,
        "chat_tuned": facts.chat_tuned,
        "engine": {**engine, "sampler": SAMPLER},
    }
    # (re)written each time: analysis settings may have changed since the last session
    setup.folder.write_header(header)
    return _Loaded(facts, batch_size, layers, analysis_layer, shards, header, sampling, config, lm)


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


def _generate_and_judge(
    setup: _Setup,
    loaded: _Loaded,
    timings: _Timings,
    progress: Progress | None,
    pool: ShardPool | None = None,
    on_event: Event | None = None,
) -> int:
    """Every unfinished shard generated, judged and written (here, or on the ``pool``'s
    workers); returns the new token count."""
    folder, shards = setup.folder, loaded.shards
    total = sum(len(v) for v in shards.values())
    finished = {s for s in shards if folder.shard_complete(s, [it.id for it in shards[s]])}
    done = sum(len(shards[s]) for s in finished)
    if progress:
        progress(done, total)
    new_tokens = 0
    # The partition into groups and batches is fixed by the work alone, so a resumed run and
    # every worker compute each batch exactly as an uninterrupted single process does (same
    # shapes, same padding, same numbers); a group is recomputed whole, finished shards too.
    batch_size = loaded.batch_size
    groups = [
        [shards[s] for s in group]
        for group in shard_groups({s: len(v) for s, v in shards.items()}, batch_size)
        if not all(s in finished for s in group)
    ]

    def write(output: GroupOutput) -> None:
        nonlocal done, new_tokens
        new_tokens += output.new_tokens
        timings.add("generate_s", output.generate_s)
        timings.add("judge_s", output.judge_s)
        for shard in output.shards:
            if shard.shard in finished:
                continue
            meta = {"model_id": loaded.facts.model_id, "layers": loaded.layers}
            try:
                folder.save_shard(shard.shard, shard.records, shard.vectors, meta)
            except OSError as err:
                raise PersonaspaceError(
                    f"could not write {folder.shard_path(shard.shard)} ({err.strerror})",
                    fix="free disk space or fix permissions, then rerun the same command to "
                    "resume (finished shards are kept)",
                ) from err
            finished.add(shard.shard)
            done += len(shard.records)
        if progress:
            progress(done, total)

    if pool is None:
        lm, judge = loaded.model(), setup.judge
        for group in groups:
            write(
                compute_group(
                    lm, judge, setup.catalogue, group, loaded.sampling, loaded.layers, batch_size
                )
            )
    else:
        with timings.stage("workers_s"):  # wall time; generate_s and judge_s sum the workers'
            pool.run(
                groups,
                setup.catalogue,
                loaded.sampling,
                loaded.layers,
                lambda _, out: write(out),
                on_event,
            )
    timings.values.setdefault("generate_s", 0.0)
    timings.values.setdefault("judge_s", 0.0)
    return new_tokens


def _generate_on_ray(
    config: AxisConfig,
    out: str | Path,
    force: bool,
    judge_api_key: str | None,
    options: RayOptions,
    timings: _Timings,
    progress: Progress | None,
    on_event: Event | None,
) -> tuple[_Setup, _Loaded, int]:
    """Connect, check the resources, start the workers (each loads the model), generate
    and judge every unfinished shard on them, stop them. Nothing is written before the
    workers have all loaded the model."""
    with ray_cluster(options) as resources:
        spec, count, gpus = planned_spec(
            options, config.model, config.device, config.dtype, resources
        )
        setup = _prepare(config, out, force, judge_api_key, distributed=True)
        judge = JudgeSpec(
            rubrics=setup.catalogue.rubrics,
            judge=config.judge,
            judge_model=config.judge_model,
            judge_base_url=config.judge_base_url,
            judge_api_key=judge_api_key,
            judge_concurrency=config.judge_concurrency,
            judge_rate_per_s=config.judge_rate_per_s,
        )
        with timings.stage("load_model_s"):
            pool = ShardPool.start(
                spec,
                judge,
                count=count,
                gpus=gpus,
                batch_size=config.batch_size,
                max_new_tokens=config.sampling.max_new_tokens,
                max_attempts=options.max_attempts,
            )
        try:
            loaded = _load(setup, pool)
            new_tokens = _generate_and_judge(setup, loaded, timings, progress, pool, on_event)
        finally:
            pool.close()
    return setup, loaded, new_tokens


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
    facts = loaded.facts
    folder.write_records(records)
    folder.file(VALIDATION_FILE).unlink(missing_ok=True)  # it read the axis this replaces
    save_aggregate(
        folder,
        agg,
        records,
        model_id=facts.model_id,
        layers=loaded.layers,
        hidden_size=facts.adapter.hidden_size,
        n_layers=facts.adapter.n_layers,
        axis_layer=axis_layer,
    )
    if axis_layer is None:
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
            null = random_init_null(loaded.model(), records, replies, index, layers, layer)
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
        calibration, capping = calibrate_run(loaded.model(), folder.path)
    summary["calibration"] = {
        "source": calibration.source,
        "tokens": calibration.n_tokens,
        "capping_experiments": capping.ids,
    }
    return space


def _validate(loaded: _Loaded, agg: Aggregate, layer: int) -> dict[str, Any]:
    """The validation set projected on the new axis (``personaspace validate``)."""
    lm, row = loaded.model(), loaded.layers.index(layer)
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
    ray: RayOptions | None = None,
    on_event: Event | None = None,
) -> AxisRun:
    """Produce a model's persona space in ``out`` (see the module docstring).

    When fewer than three roles keep enough replies, the replies, scores and vectors are
    still written, and the summary carries the ``verdict`` instead of an analysis.

    ``ray`` generates and judges the shards on Ray workers (``pipeline.distributed``); the
    outputs are byte for byte those of one process with the same settings (the summary's
    timings aside). ``on_event`` hears of workers that died and the shards they retried.

    Example:
        >>> run = run_axis(AxisConfig(preset="tiny", judge="none"), "runs/tiny")  # doctest: +SKIP
        >>> run.analysis.at_analysis_layer.cos_axis_pc1  # doctest: +SKIP
        >>> run = run_axis(AxisConfig(preset="tiny", judge="none"), "runs/tiny",  # doctest: +SKIP
        ...                ray=RayOptions(address="auto"))
    """
    timings = _Timings()
    started = time.perf_counter()
    if ray is None:
        setup = _prepare(config, out, force, judge_api_key)
        with timings.stage("load_model_s"):
            loaded = _load(setup)
        new_tokens = _generate_and_judge(setup, loaded, timings, progress)
    else:
        setup, loaded, new_tokens = _generate_on_ray(
            config, out, force, judge_api_key, ray, timings, progress, on_event
        )
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
