"""Independent work items mapped over Ray actors that each hold one model replica.

A command whose work splits into independent items (an axis run's shard groups, a drift
run's conditions, a cap-eval's settings) computes each with one module-level function
``fn(lm, item)``. In one process that is a loop (``map_items`` on a ``LoadedModel``); with
``--ray`` the driver starts the actors (``model_replicas``: one per GPU, or ``workers`` CPU
actors), each loads the model once on its own device, and ``ModelPool.map`` hands every
idle actor the next item and yields ``(index, result)`` as results arrive, so that the
driver alone writes the outputs, as one process does. A result depends on its item alone
(its own seeds, its own batches), never on the worker or the order, so the outputs are
byte for byte those of one process.

Faults: an actor that dies (killed, out of memory, its node lost) is restarted by Ray (up
to ``RESTARTS`` times; it reloads the model) and its item goes back to the front of the
queue for the next idle actor; an item whose worker died ``max_attempts`` times stops the
run. An actor that cannot load the model reports it, and the run stops with one error
naming the node, before any item is computed.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from personaspace.capture import engine_of
from personaspace.capture.sampling import SAMPLER
from personaspace.errors import PersonaspaceError
from personaspace.models import ArchitectureAdapter, LoadedModel, load_model
from personaspace.models.device import resolve_placement
from personaspace.pipeline.distributed import (
    RayOptions,
    check_placement_names,
    first_line,
    import_ray,
    plan_workers,
    ray_cluster,
)

Item = TypeVar("Item")
Result = TypeVar("Result")
Event = Callable[[str], None]  # a one-line note for the user (a worker died, a retry)
Submit = Callable[[Any, int], Any]  # (actor handle, item index) -> the call's object ref
RESTARTS = 3  # how often Ray restarts one actor that died
RESTART_POLL_S = 0.5  # wait before handing an item again to an actor that is restarting


def _unavailable(ray: Any) -> tuple[type[BaseException], ...]:
    """Ray's error for a call refused while its actor restarts (Ray >= 2.10), if it has one."""
    found = getattr(ray.exceptions, "ActorUnavailableError", None)
    return (found,) if isinstance(found, type) else ()


@dataclass(frozen=True)
class ModelSpec:
    """What every worker loads: the model, on which kind of device (``cuda``: the GPU Ray
    gave the actor), in which dtype, computing on how many CPU threads.

    Example:
        >>> ModelSpec("smollm2-135m-instruct", "cpu", "float32").threads
        1
    """

    model: str
    device: str
    dtype: str
    threads: int = 1


@dataclass(frozen=True)
class ModelFacts:
    """What the driver knows of the model without loading it: its identity and shape, and
    where it runs.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> lm = NS(model_id="m", display_name="M", chat_tuned=True, adapter=None,
        ...         device=torch.device("cpu"), dtype=torch.float32)
        >>> facts = ModelFacts.of(lm)
        >>> facts.node, facts.engine["device"], facts.engine["dtype"]
        ('this process', 'cpu', 'float32')
    """

    model_id: str
    display_name: str
    chat_tuned: bool
    adapter: ArchitectureAdapter
    device: str
    dtype: str
    node: str = "this process"

    @classmethod
    def of(cls, lm: LoadedModel, node: str = "this process") -> ModelFacts:
        """The facts of a loaded model."""
        engine = engine_of(lm)
        return cls(
            lm.model_id,
            lm.display_name,
            lm.chat_tuned,
            lm.adapter,
            engine["device"],
            engine["dtype"],
            node,
        )

    @property
    def engine(self) -> dict[str, str]:
        """What a reply depends on besides its prompt and seed (``capture.engine_of``)."""
        return {"device": self.device, "dtype": self.dtype, "sampler": SAMPLER}


@dataclass(frozen=True)
class WorkerFailure:
    """Why a worker could not do its part: it could not load the model, or an item failed
    (``user_error``: a ``PersonaspaceError``, bad input, not a crash)."""

    node: str
    problem: str
    fix: str | None = None
    param: str | None = None
    user_error: bool = False

    @classmethod
    def of(cls, node: str, err: Exception) -> WorkerFailure:
        """The failure an item's error makes, keeping a ``PersonaspaceError``'s parts."""
        if isinstance(err, PersonaspaceError):
            return cls(node, err.problem, err.fix, err.param, user_error=True)
        return cls(node, traceback.format_exception_only(type(err), err)[-1].strip())

    def error(self, what: str) -> PersonaspaceError:
        """The error the driver raises for it; ``what`` names the item (``shards a, b``).

        Example:
            >>> print(WorkerFailure("10.0.0.7", "CUDA out of memory").error("condition none"))
            ... # doctest: +ELLIPSIS
            the worker on node 10.0.0.7 failed on condition none: CUDA out of memory: fix ...
        """
        if self.user_error:
            return PersonaspaceError(f"{self.problem} ({what})", fix=self.fix, param=self.param)
        return PersonaspaceError(
            f"the worker on node {self.node} failed on {what}: {self.problem}",
            fix="fix the cause on that node, then rerun the same command to resume from the "
            "finished work",
        )


def node_address() -> str:
    """This Ray worker's node address (the host name outside a Ray worker)."""
    import ray

    try:
        return str(ray.util.get_node_ip_address())
    except Exception:  # outside a Ray worker (a direct call in a test)
        return socket.gethostname()


class ModelWorker:
    """The Ray actor: one model replica, applying module-level functions to items.

    It never raises out of ``__init__`` (Ray would only say the actor died): a load failure
    is kept and returned by every call, with the node's address.

    Example:
        >>> worker = ModelWorker(ModelSpec("smollm2-135m-instruct", "cpu", "float32"))
        ... # doctest: +SKIP
        >>> worker.apply(vocab_size, None)  # doctest: +SKIP
        49152
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.node = node_address()
        self.failure: WorkerFailure | None = None
        torch.set_num_threads(spec.threads)
        try:
            placement = resolve_placement(spec.device, spec.dtype)
            self.lm = load_model(spec.model, dtype=placement.dtype, device=placement.device)
            self.model_facts = ModelFacts.of(self.lm, self.node)
        except Exception as err:  # reported, with the node, by facts()
            self.failure = WorkerFailure(self.node, first_line(err))

    def facts(self) -> ModelFacts | WorkerFailure:
        return self.failure or self.model_facts

    def pid(self) -> int:
        return os.getpid()

    def apply(self, fn: Callable[[LoadedModel, Any], Any], item: Any) -> Any:
        """``fn(model, item)``, or the ``WorkerFailure`` it raised."""
        return self.guarded(fn, self.lm, item)

    def guarded(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, or the ``WorkerFailure`` it raised (or the load failure)."""
        if self.failure is not None:
            return self.failure
        try:
            return fn(*args)
        except Exception as err:
            return WorkerFailure.of(self.node, err)


@dataclass
class _Actor:
    index: int
    handle: Any
    node: str = "?"
    deaths: int = 0
    restarting: bool = False  # died; Ray is restarting it (it may refuse calls meanwhile)


class ModelPool:
    """Started actors, each holding the model, and the loop that feeds them items.

    Example:
        >>> spec = ModelSpec("smollm2-135m-instruct", "cpu", "float32")
        >>> pool = ModelPool.start(spec, count=2, gpus=False)  # doctest: +SKIP
        >>> dict(pool.map(reply_lengths, conversations))  # doctest: +SKIP
        {1: [48, 31], 0: [12, 48]}
    """

    def __init__(self, actors: list[_Actor], facts: ModelFacts, max_attempts: int) -> None:
        self.actors = actors
        self.facts = facts
        self.max_attempts = max_attempts

    @classmethod
    def start(
        cls,
        spec: ModelSpec,
        *,
        count: int,
        gpus: bool,
        max_attempts: int = 3,
        worker: type[ModelWorker] = ModelWorker,
        args: tuple[Any, ...] = (),
    ) -> ModelPool:
        """Start ``count`` actors (``worker(spec, *args)``) and wait until each has loaded the
        model; one that could not stops everything with one error naming its node."""
        ray = import_ray()
        remote = ray.remote(worker).options(
            num_cpus=spec.threads,
            num_gpus=1 if gpus else 0,
            max_restarts=RESTARTS,
            max_task_retries=0,  # the pool re-queues a dead worker's item itself
        )
        actors = [_Actor(i, remote.remote(spec, *args)) for i in range(count)]
        try:
            answers = _get(ray, [a.handle.facts.remote() for a in actors], spec.model)
            facts = _agree(answers, actors, spec.model)
        except BaseException:
            for actor in actors:
                ray.kill(actor.handle)
            raise
        return cls(actors, facts, max_attempts)

    def map(
        self,
        fn: Callable[[LoadedModel, Item], Result],
        items: Sequence[Item],
        *,
        label: Callable[[Item], str] | None = None,
        on_event: Event | None = None,
    ) -> Iterator[tuple[int, Result]]:
        """``(index, fn(model, items[index]))`` for every item, computed on the first idle
        actor and yielded in the order they finish. ``label`` names an item in messages
        (default: its position)."""

        def what(index: int) -> str:
            return label(items[index]) if label else f"item {index + 1} of {len(items)}"

        def submit(handle: Any, index: int) -> Any:
            return handle.apply.remote(fn, items[index])

        yield from self.feed(len(items), submit, what, on_event)

    def feed(
        self, count: int, submit: Submit, what: Callable[[int], str], on_event: Event | None
    ) -> Iterator[tuple[int, Any]]:
        """The loop under ``map``: item ``index`` is started by ``submit(handle, index)`` on
        an idle actor; a result is yielded as it arrives, once the next items are started
        (the workers compute while the caller writes). An item whose actor died goes back
        to the front of the queue, for another actor."""
        ray = import_ray()
        queue: deque[int] = deque(range(count))
        attempts = [0] * count
        idle = list(self.actors)
        running: dict[Any, tuple[_Actor, int]] = {}

        def start_idle() -> None:
            while queue and idle:
                actor, index = idle.pop(0), queue.popleft()
                attempts[index] += 1
                running[submit(actor.handle, index)] = (actor, index)

        while queue or running:
            start_idle()
            if not running:
                raise PersonaspaceError(
                    "every Ray worker died more often than it may be restarted",
                    fix="see why the workers die (ray logs on their nodes: memory?), then "
                    "rerun the same command to resume from the finished work",
                )
            ready, _ = ray.wait(list(running), num_returns=1)
            actor, index = running.pop(ready[0])
            try:
                output = ray.get(ready[0])
            except ray.exceptions.RayActorError as err:
                queue.appendleft(index)
                if actor.restarting and isinstance(err, _unavailable(ray)):
                    # refused by an actor still restarting from a death already counted: the
                    # item never ran; try again once Ray has had a moment to bring it back
                    attempts[index] -= 1
                    idle.append(actor)
                    time.sleep(RESTART_POLL_S)
                    continue
                self._died(actor, what(index), attempts[index], err, idle, on_event)
                continue
            if isinstance(output, WorkerFailure):
                raise output.error(what(index))
            actor.restarting = False
            idle.append(actor)
            start_idle()
            yield index, output

    def _died(
        self,
        actor: _Actor,
        what: str,
        attempt: int,
        err: Exception,
        idle: list[_Actor],
        on_event: Event | None,
    ) -> None:
        if attempt >= self.max_attempts:
            raise PersonaspaceError(
                f"the worker computing {what} died {attempt} times "
                f"(last on node {actor.node}: {first_line(err)})",
                fix="see why the workers die (memory?), then rerun the same command to resume "
                "from the finished work",
            )
        actor.deaths += 1
        actor.restarting = True
        if actor.deaths <= RESTARTS:  # Ray restarts it; it goes to the back of the line
            idle.append(actor)
        if on_event:
            on_event(
                f"worker {actor.index} on node {actor.node} died during {what}; retrying on "
                "the next free worker"
            )

    def call(self, method: str) -> list[Any]:
        """What every actor's ``method()`` returns, in the actors' order."""
        ray = import_ray()
        return list(ray.get([getattr(a.handle, method).remote() for a in self.actors]))

    def close(self) -> None:
        """Stop the actors (their devices are free again)."""
        ray = import_ray()
        for actor in self.actors:
            ray.kill(actor.handle, no_restart=True)


ModelOrPool = LoadedModel | ModelPool  # the model in this process, or replicas on Ray


def planned_spec(
    options: RayOptions, model: str, device: str, dtype: str, resources: dict[str, float]
) -> tuple[ModelSpec, int, bool]:
    """What each worker loads, how many to start and whether each takes a GPU, for a
    cluster's ``resources`` (``ray_cluster``).

    Example:
        >>> spec, count, gpus = planned_spec(RayOptions(workers=2), "m", "auto", "float32",
        ...                                  {"CPU": 16.0})
        >>> spec.device, count, gpus
        ('cpu', 2, False)
    """
    count, gpus = plan_workers(
        options, device, resources.get("GPU", 0.0), resources.get("CPU", 0.0)
    )
    spec = ModelSpec(model, "cuda" if gpus else "cpu", dtype, options.threads_per_worker)
    return spec, count, gpus


@contextmanager
def model_replicas(model: str, device: str, dtype: str, options: RayOptions) -> Iterator[ModelPool]:
    """Connected to the cluster ``options`` names, with its workers started (one per GPU, or
    ``options.workers`` CPU actors), each holding ``model`` in ``dtype``; stopped after.
    Bad input (a device name, an address, the workers for the cluster) fails before any
    worker starts.

    Example:
        >>> with model_replicas("smollm2-135m-instruct", "cpu", "float32",
        ...                     RayOptions(workers=2)) as pool:  # doctest: +SKIP
        ...     lengths = dict(pool.map(reply_lengths, conversations))
    """
    check_placement_names(device, dtype)
    with ray_cluster(options) as resources:
        spec, count, gpus = planned_spec(options, model, device, dtype, resources)
        pool = ModelPool.start(spec, count=count, gpus=gpus, max_attempts=options.max_attempts)
        try:
            yield pool
        finally:
            pool.close()


def map_items(
    model: ModelOrPool,
    fn: Callable[[LoadedModel, Item], Result],
    items: Sequence[Item],
    *,
    label: Callable[[Item], str] | None = None,
    on_event: Event | None = None,
) -> Iterator[tuple[int, Result]]:
    """``(index, fn(model, item))`` for every item: here, in order, when ``model`` is a
    loaded model; on the pool's workers, as they finish (``ModelPool.map``), when it is a
    pool. The same function computes each item either way.

    Example:
        >>> square = lambda lm, n: n * n  # fn(model, item); this one needs no model
        >>> list(map_items(None, square, [1, 2, 3]))
        [(0, 1), (1, 4), (2, 9)]
    """
    if isinstance(model, ModelPool):
        yield from model.map(fn, items, label=label, on_event=on_event)
        return
    for index, item in enumerate(items):
        yield index, fn(model, item)


def facts_of(model: ModelOrPool) -> ModelFacts:
    """What the driver knows of the model, here or on the pool's workers.

    Example:
        >>> facts_of(load_model("smollm2-135m-instruct")).chat_tuned  # doctest: +SKIP
        True
    """
    return model.facts if isinstance(model, ModelPool) else ModelFacts.of(model)


def _get(ray: Any, refs: list[Any], model: str) -> list[ModelFacts | WorkerFailure]:
    try:
        return list(ray.get(refs))
    except ray.exceptions.RayActorError as err:
        raise PersonaspaceError(
            f"a Ray worker died while loading the model {model} ({first_line(err)})",
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
    return first
