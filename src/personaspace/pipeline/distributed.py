"""An axis run's shard groups on Ray actors: one model replica per actor, fed group by group.

The driver (the process that called ``run_axis``) connects to a Ray cluster, starts the
actors (one per GPU when the cluster has GPUs, else ``workers`` CPU actors of
``threads_per_worker`` threads), hands each idle actor the next unfinished group of shards
and writes every returned shard to the run folder itself, atomically, as one process does.
A group is computed by ``shards.compute_group``, the function the single-process path runs,
with the same items, seeds and batch size, so its bytes do not depend on the worker.

Faults: an actor that dies (killed, out of memory, its node lost) is restarted by Ray and
the group it held goes back to the front of the queue for the next idle actor; a shard is
written once, when its group's result arrives, so nothing is duplicated. An actor that
cannot load the model reports it, and the run stops with one error naming the node.

Ray is an optional extra (``pip install 'personaspace[ray]'``): nothing here imports it
until a run asks for it.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from personaspace.capture import SamplingConfig
from personaspace.catalogue import Catalogue, Rubric
from personaspace.errors import PersonaspaceError
from personaspace.judge import make_judge
from personaspace.models import ArchitectureAdapter, LoadedModel, load_model
from personaspace.models.device import DEVICE_CHOICES, DTYPE_CHOICES, resolve_placement
from personaspace.pipeline.shards import PROMPT_ROOM, GroupOutput, catalogue_for, compute_group
from personaspace.pipeline.work import WorkItem

Event = Callable[[str], None]  # a one-line note for the user (a worker died, a retry)
INSTALL_FIX = "install the extra: pip install 'personaspace[ray]'"
CONNECT_TIMEOUT_S = 5.0  # how long an address may take to accept a connection
RESTARTS = 3  # how often Ray restarts one actor that died


@dataclass(frozen=True)
class RayOptions:
    """Where and on how many workers a run's shards are generated.

    ``address``: ``"local"`` starts a Ray instance on this machine for the run (and stops it
    after), ``"auto"`` joins the one already running here (``ray start --head``), and
    ``HOST:PORT`` or ``ray://HOST:PORT`` joins a cluster's head. ``workers``: how many model
    replicas (default: one per GPU of the cluster, or one CPU worker where it has none).

    Example:
        >>> RayOptions(workers=2).address
        'local'
        >>> RayOptions(workers=0)
        Traceback (most recent call last):
        personaspace.errors.PersonaspaceError: workers is 0: use 1 or more
    """

    address: str = "local"
    workers: int | None = None
    threads_per_worker: int = 1
    max_attempts: int = 3  # times one group is tried (its workers dying) before the run stops

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise PersonaspaceError(
                f"workers is {self.workers}", fix="use 1 or more", param="workers"
            )
        if self.threads_per_worker < 1:
            raise PersonaspaceError(
                f"threads_per_worker is {self.threads_per_worker}",
                fix="use 1 or more",
                param="threads_per_worker",
            )
        if self.max_attempts < 1:
            raise PersonaspaceError(
                f"max_attempts is {self.max_attempts}", fix="use 1 or more", param="max_attempts"
            )
        if not self.address.strip():
            raise PersonaspaceError(
                "the Ray address is empty", fix="give HOST:PORT, auto, or local", param="ray"
            )


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker builds when it starts: the model on its device, and the judge."""

    model: str
    device: str  # "cuda" (the GPU Ray gave the actor) or "cpu"
    dtype: str
    threads: int
    rubrics: dict[str, Rubric]  # the judge's; the roles and traits come with each group
    judge: str
    judge_model: str | None = None
    judge_base_url: str | None = None
    judge_api_key: str | None = None
    judge_concurrency: int = 4
    judge_rate_per_s: float = 5.0


@dataclass(frozen=True)
class ModelFacts:
    """What the driver needs to know of the model without loading it: its identity and
    shape, where it runs, and the batch size it was given (or chose) there."""

    model_id: str
    display_name: str
    chat_tuned: bool
    adapter: ArchitectureAdapter
    device: str
    dtype: str
    batch_size: int
    node: str

    @classmethod
    def of(cls, lm: LoadedModel, batch_size: int, node: str) -> ModelFacts:
        """The facts of a loaded model."""
        dtype = str(lm.dtype).removeprefix("torch.")
        return cls(
            lm.model_id,
            lm.display_name,
            lm.chat_tuned,
            lm.adapter,
            lm.device.type,
            dtype,
            batch_size,
            node,
        )


@dataclass(frozen=True)
class WorkerFailure:
    """Why a worker could not do its part (it could not load the model, or a group failed)."""

    node: str
    problem: str
    user_error: bool = False  # a PersonaspaceError (bad input), not a crash


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


class ShardWorker:
    """The Ray actor: one model replica and one judge, computing whole groups of shards.

    It never raises out of ``__init__`` (Ray would only say the actor died): a load failure
    is kept and returned by every call, with the node's address.

    Example:
        >>> worker = ShardWorker(spec, batch_size=4, max_new_tokens=64)  # doctest: +SKIP
        >>> worker.facts().node  # doctest: +SKIP
        '10.0.0.7'
    """

    def __init__(self, spec: WorkerSpec, batch_size: int | None, max_new_tokens: int) -> None:
        self.node = _node_address()
        self.failure: WorkerFailure | None = None
        torch.set_num_threads(spec.threads)
        try:
            placement = resolve_placement(spec.device, spec.dtype)
            self.lm = load_model(spec.model, dtype=placement.dtype, device=placement.device)
            self.judge = make_judge(
                spec.judge,
                _rubrics_only(spec.rubrics),
                model=spec.judge_model,
                base_url=spec.judge_base_url,
                api_key=spec.judge_api_key,
                concurrency=spec.judge_concurrency,
                rate_per_s=spec.judge_rate_per_s,
            )
            size = self.lm.batch_size(batch_size, PROMPT_ROOM + max_new_tokens)
            self.model_facts = ModelFacts.of(self.lm, size, self.node)
        except Exception as err:  # reported, with the node, by facts()
            self.failure = WorkerFailure(self.node, _first_line(err))

    def facts(self) -> ModelFacts | WorkerFailure:
        return self.failure or self.model_facts

    def pid(self) -> int:
        return os.getpid()

    def run_group(
        self,
        group: list[list[WorkItem]],
        sampling: SamplingConfig,
        layers: list[int],
        batch_size: int,
        catalogue: Catalogue,
    ) -> GroupOutput | WorkerFailure:
        if self.failure is not None:
            return self.failure
        try:
            return compute_group(
                self.lm, self.judge, catalogue, group, sampling, layers, batch_size
            )
        except PersonaspaceError as err:
            return WorkerFailure(self.node, str(err), user_error=True)
        except Exception as err:
            detail = traceback.format_exception_only(type(err), err)[-1].strip()
            return WorkerFailure(self.node, detail)


def _rubrics_only(rubrics: dict[str, Rubric]) -> Catalogue:
    return Catalogue({}, {}, {}, {}, {}, {}, (), rubrics)


def _node_address() -> str:
    import ray

    try:
        return str(ray.util.get_node_ip_address())
    except Exception:  # outside a Ray worker (a direct call in a test)
        return socket.gethostname()


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error saying how to install it.

    Example:
        >>> import_ray().__name__  # doctest: +SKIP
        'ray'
    """
    try:
        import ray
    except ImportError as err:
        raise PersonaspaceError("Ray is not installed", fix=INSTALL_FIX, param="ray") from err
    return ray


def check_placement_names(device: str, dtype: str) -> None:
    """Refuse a device or dtype no worker could resolve (which one is chosen, and whether
    it exists, is up to each worker's node).

    Example:
        >>> check_placement_names("cuda:1", "auto")
        >>> check_placement_names("tpu", "auto")
        Traceback (most recent call last):
        personaspace.errors.PersonaspaceError: device is 'tpu': use auto, cpu or cuda with Ray
    """
    kind = device.strip().lower().split(":")[0]
    if kind not in DEVICE_CHOICES or kind == "mps":
        raise PersonaspaceError(
            f"device is {device!r}", fix="use auto, cpu or cuda with Ray", param="device"
        )
    if dtype.strip().lower() not in {*DTYPE_CHOICES, "fp32", "bf16", "fp16"}:
        raise PersonaspaceError(
            f"dtype is {dtype!r}", fix="use auto, float32, bfloat16 or float16", param="dtype"
        )


def plan_workers(
    options: RayOptions, device: str, cluster_gpus: float, cluster_cpus: float
) -> tuple[int, bool]:
    """How many workers to start and whether each takes a GPU, for the cluster's resources.

    Example:
        >>> plan_workers(RayOptions(), "auto", cluster_gpus=8, cluster_cpus=96)
        (8, True)
        >>> plan_workers(RayOptions(workers=2), "cpu", cluster_gpus=8, cluster_cpus=96)
        (2, False)
        >>> plan_workers(RayOptions(workers=4), "cuda", cluster_gpus=2, cluster_cpus=96)
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        personaspace.errors.PersonaspaceError: workers is 4 but the Ray cluster has 2 GPUs: ...
    """
    kind = device.strip().lower().split(":")[0]
    gpus, cpus = int(cluster_gpus), int(cluster_cpus)
    if kind == "cuda" or (kind == "auto" and gpus >= 1):
        if gpus < 1:
            raise PersonaspaceError(
                f"device {device} asks for GPU workers but the Ray cluster has no GPU",
                fix="use --device cpu (or auto) for CPU workers, or join a cluster with GPUs",
                param="device",
            )
        count = options.workers or gpus
        if count > gpus:
            raise PersonaspaceError(
                f"workers is {count} but the Ray cluster has {gpus} GPUs",
                fix=f"ask for at most {gpus} (one per GPU), add GPU nodes, or use --device cpu",
                param="workers",
            )
        return count, True
    count = options.workers or 1
    need = count * options.threads_per_worker
    if need > cpus:
        raise PersonaspaceError(
            f"workers is {count} but the Ray cluster has {cpus} CPUs "
            f"({need} needed at {options.threads_per_worker} thread(s) per worker)",
            fix=f"ask for at most {cpus // options.threads_per_worker}, or add nodes",
            param="workers",
        )
    return count, False


def _check_reachable(address: str) -> None:
    """A quick TCP connect to ``HOST:PORT`` (Ray itself would retry for a minute)."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise PersonaspaceError(
            f"the Ray address {address!r} is not HOST:PORT",
            fix="give the head node's HOST:PORT (e.g. 10.0.0.1:6379), ray://HOST:10001, auto "
            "or local",
            param="ray",
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise PersonaspaceError(
            f"the Ray cluster at {address} is unreachable ({err.strerror or err})",
            fix="check the head node's address and port (ray status on the head shows it), "
            "or use --ray alone for a local one",
            param="ray",
        ) from err


@contextmanager
def ray_cluster(options: RayOptions) -> Iterator[dict[str, float]]:
    """Connected to the cluster ``options`` names (or the one this process is connected to
    already, as a test's local instance); yields its total resources (``CPU``, ``GPU``...);
    disconnects after, unless the caller had connected.

    Example:
        >>> with ray_cluster(RayOptions(address="auto")) as resources:  # doctest: +SKIP
        ...     resources["GPU"]
        8.0
    """
    ray = import_ray()
    address = options.address.strip()
    if address not in ("local", "auto"):
        _check_reachable(address)  # even when connected already: a wrong address is an error
    joined = not ray.is_initialized()
    if joined:
        settings: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.ERROR,
        }
        try:
            ray.init(address=address, **settings)
        except ConnectionError as err:
            raise PersonaspaceError(
                f"no Ray cluster to join at {address} ({_first_line(err)})",
                fix="start one with `ray start --head`, give its HOST:PORT, or use --ray "
                "alone for a local one",
                param="ray",
            ) from err
        except Exception as err:
            raise PersonaspaceError(
                f"could not connect to Ray at {address} ({_first_line(err)})",
                fix="check the address and that this Ray matches the cluster's version",
                param="ray",
            ) from err
    try:
        yield {k: float(v) for k, v in ray.cluster_resources().items()}
    finally:
        if joined:
            ray.shutdown()


@dataclass
class _Actor:
    index: int
    handle: Any
    node: str = "?"
    deaths: int = 0


class WorkerPool:
    """Started actors, each holding the model, and the loop that feeds them groups.

    Example:
        >>> pool = WorkerPool.start(spec, count=2, gpus=False, batch_size=4,  # doctest: +SKIP
        ...                         max_new_tokens=64)
        >>> pool.facts.batch_size  # doctest: +SKIP
        4
    """

    def __init__(self, actors: list[_Actor], facts: ModelFacts, max_attempts: int) -> None:
        self.actors = actors
        self.facts = facts
        self.max_attempts = max_attempts

    @classmethod
    def start(
        cls,
        spec: WorkerSpec,
        *,
        count: int,
        gpus: bool,
        batch_size: int | None,
        max_new_tokens: int,
        max_attempts: int = 3,
    ) -> WorkerPool:
        """Start ``count`` actors and wait until each has loaded the model; one that could
        not stops everything with one error naming its node."""
        ray = import_ray()
        remote = ray.remote(ShardWorker).options(
            num_cpus=spec.threads,
            num_gpus=1 if gpus else 0,
            max_restarts=RESTARTS,
            max_task_retries=0,  # the pool re-queues a dead worker's group itself
        )
        actors = [_Actor(i, remote.remote(spec, batch_size, max_new_tokens)) for i in range(count)]
        try:
            answers = _get(ray, [a.handle.facts.remote() for a in actors], spec.model)
            facts = _agree(answers, actors, spec.model)
        except BaseException:
            for actor in actors:
                ray.kill(actor.handle)
            raise
        return cls(actors, facts, max_attempts)

    def run(
        self,
        groups: Sequence[list[list[WorkItem]]],
        catalogue: Catalogue,
        sampling: SamplingConfig,
        layers: list[int],
        on_done: Callable[[int, GroupOutput], None],
        on_event: Event | None = None,
    ) -> None:
        """Compute every group on the first idle actor; ``on_done(index, output)`` runs in
        this process as each arrives (in the order they finish). A group whose actor died
        goes back to the front of the queue, for another actor."""
        ray = import_ray()
        queue: deque[int] = deque(range(len(groups)))
        attempts = [0] * len(groups)
        idle = list(self.actors)
        running: dict[Any, tuple[_Actor, int]] = {}
        batch_size = self.facts.batch_size
        while queue or running:
            while queue and idle:
                actor, index = idle.pop(0), queue.popleft()
                attempts[index] += 1
                part = catalogue_for(catalogue, groups[index])
                ref = actor.handle.run_group.remote(
                    groups[index], sampling, layers, batch_size, part
                )
                running[ref] = (actor, index)
            if not running:
                raise PersonaspaceError(
                    "every Ray worker died more often than it may be restarted",
                    fix="see why the workers die (ray logs on their nodes: memory?), then "
                    "rerun the same command to resume from the finished shards",
                )
            ready, _ = ray.wait(list(running), num_returns=1)
            actor, index = running.pop(ready[0])
            try:
                output = ray.get(ready[0])
            except ray.exceptions.RayActorError as err:
                self._died(actor, index, groups[index], attempts[index], err, idle, on_event)
                queue.appendleft(index)
                continue
            if isinstance(output, WorkerFailure):
                shards = ", ".join(items[0].shard for items in groups[index])
                if output.user_error:
                    raise PersonaspaceError(f"{output.problem} (shards {shards})")
                raise PersonaspaceError(
                    f"the worker on node {output.node} failed on shards {shards}: {output.problem}",
                    fix="fix the cause on that node, then rerun the same command to resume "
                    "from the finished shards",
                )
            idle.append(actor)
            on_done(index, output)

    def _died(
        self,
        actor: _Actor,
        index: int,
        group: list[list[WorkItem]],
        attempt: int,
        err: Exception,
        idle: list[_Actor],
        on_event: Event | None,
    ) -> None:
        shards = ", ".join(items[0].shard for items in group)
        if attempt >= self.max_attempts:
            raise PersonaspaceError(
                f"shards {shards} were tried {attempt} times and each time their worker died "
                f"(last on node {actor.node}: {_first_line(err)})",
                fix="see why the workers die (memory?), then rerun the same command to resume "
                "from the finished shards",
            )
        actor.deaths += 1
        if actor.deaths <= RESTARTS:  # Ray restarts it; it goes to the back of the line
            idle.append(actor)
        if on_event:
            on_event(
                f"worker {actor.index} on node {actor.node} died during shards {shards}; "
                "they go to the next free worker"
            )

    def close(self) -> None:
        """Stop the actors (their devices are free again)."""
        ray = import_ray()
        for actor in self.actors:
            ray.kill(actor.handle, no_restart=True)


def _get(ray: Any, refs: list[Any], model: str) -> list[ModelFacts | WorkerFailure]:
    try:
        return list(ray.get(refs))
    except ray.exceptions.RayActorError as err:
        raise PersonaspaceError(
            f"a Ray worker died while loading the model {model} ({_first_line(err)})",
            fix="check that every node has the memory for one replica and the same "
            "personaspace installed",
        ) from err


def _agree(
    answers: list[ModelFacts | WorkerFailure], actors: list[_Actor], model: str
) -> ModelFacts:
    """The workers' model facts, refused unless every worker loaded the same model in the
    same way (a run's replies must all come from one engine)."""
    facts: list[ModelFacts] = []
    for actor, answer in zip(actors, answers):
        actor.node = answer.node
        if isinstance(answer, WorkerFailure):
            raise PersonaspaceError(
                f"the worker on node {answer.node} could not load the model {model}: "
                f"{answer.problem}",
                fix="make the model reachable on every node (the same path, shared storage, "
                "or a hub id) with personaspace installed there",
            )
        facts.append(answer)
    first = facts[0]
    for other in facts[1:]:
        seen = (other.model_id, other.adapter, other.device, other.dtype)
        if seen != (first.model_id, first.adapter, first.device, first.dtype):
            raise PersonaspaceError(
                f"the workers on nodes {first.node} and {other.node} run the model differently "
                f"({first.device}/{first.dtype} vs {other.device}/{other.dtype})",
                fix="give --device and --dtype explicitly so every worker runs alike",
            )
    # The smallest automatic batch fits every worker; all use it, so batches are identical.
    size = min(f.batch_size for f in facts)
    return ModelFacts(
        first.model_id,
        first.display_name,
        first.chat_tuned,
        first.adapter,
        first.device,
        first.dtype,
        size,
        first.node,
    )
