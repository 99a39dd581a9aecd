"""An axis run's shard groups on Ray actors: model replicas (``replicas.ModelPool``) that
hold the judge too, fed group by group.

Each actor loads the model and builds its judge once, and computes whole groups with
``shards.compute_group``, the function the single-process path runs, with the same items,
seeds and batch size (the smallest automatic one any worker chose, unless one was given),
so a group's bytes do not depend on the worker. The driver writes every returned shard to
the run folder itself, atomically, as one process does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from personaspace.capture import SamplingConfig
from personaspace.catalogue import Catalogue, Rubric
from personaspace.judge import make_judge
from personaspace.pipeline.distributed import first_line
from personaspace.pipeline.replicas import (
    Event,
    ModelFacts,
    ModelPool,
    ModelSpec,
    ModelWorker,
    WorkerFailure,
)
from personaspace.pipeline.shards import PROMPT_ROOM, GroupOutput, catalogue_for, compute_group
from personaspace.pipeline.work import WorkItem


@dataclass(frozen=True)
class JudgeSpec:
    """The judge every worker builds when it starts (the roles and traits it judges come
    with each group)."""

    rubrics: dict[str, Rubric]
    judge: str
    judge_model: str | None = None
    judge_base_url: str | None = None
    judge_api_key: str | None = None
    judge_concurrency: int = 4
    judge_rate_per_s: float = 5.0


class ShardWorker(ModelWorker):
    """The Ray actor of an axis run: one model replica and one judge, computing whole groups
    of shards.

    Example:
        >>> worker = ShardWorker(spec, JudgeSpec({}, "none"), batch_size=4,
        ...                      max_new_tokens=64)  # doctest: +SKIP
        >>> worker.batch_size()  # doctest: +SKIP
        4
    """

    def __init__(
        self, spec: ModelSpec, judge: JudgeSpec, batch_size: int | None, max_new_tokens: int
    ) -> None:
        super().__init__(spec)
        self.chosen_batch_size = 0
        if self.failure is not None:
            return
        try:
            self.judge = make_judge(
                judge.judge,
                Catalogue({}, {}, {}, {}, {}, {}, (), judge.rubrics),
                model=judge.judge_model,
                base_url=judge.judge_base_url,
                api_key=judge.judge_api_key,
                concurrency=judge.judge_concurrency,
                rate_per_s=judge.judge_rate_per_s,
            )
            self.chosen_batch_size = self.lm.batch_size(batch_size, PROMPT_ROOM + max_new_tokens)
        except Exception as err:  # reported, with the node, by facts()
            self.failure = WorkerFailure(self.node, first_line(err))

    def batch_size(self) -> int:
        return self.chosen_batch_size

    def run_group(
        self,
        group: list[list[WorkItem]],
        sampling: SamplingConfig,
        layers: list[int],
        batch_size: int,
        catalogue: Catalogue,
    ) -> GroupOutput | WorkerFailure:
        return self.guarded(
            compute_group, self.lm, self.judge, catalogue, group, sampling, layers, batch_size
        )


class ShardPool:
    """Started shard workers, all using one batch size, and the loop that feeds them groups.

    Example:
        >>> pool = ShardPool.start(spec, JudgeSpec({}, "none"), count=2, gpus=False,
        ...                        batch_size=4, max_new_tokens=64)  # doctest: +SKIP
        >>> pool.batch_size  # doctest: +SKIP
        4
    """

    def __init__(self, pool: ModelPool, batch_size: int) -> None:
        self.pool = pool
        self.batch_size = batch_size

    @property
    def facts(self) -> ModelFacts:
        return self.pool.facts

    @classmethod
    def start(
        cls,
        spec: ModelSpec,
        judge: JudgeSpec,
        *,
        count: int,
        gpus: bool,
        batch_size: int | None,
        max_new_tokens: int,
        max_attempts: int = 3,
    ) -> ShardPool:
        """Start ``count`` workers and wait until each has loaded the model and its judge;
        one that could not stops everything with one error naming its node."""
        pool = ModelPool.start(
            spec,
            count=count,
            gpus=gpus,
            max_attempts=max_attempts,
            worker=ShardWorker,
            args=(judge, batch_size, max_new_tokens),
        )
        # The smallest automatic batch fits every worker; all use it, so batches are identical.
        return cls(pool, min(pool.call("batch_size")))

    def run(
        self,
        groups: Sequence[list[list[WorkItem]]],
        catalogue: Catalogue,
        sampling: SamplingConfig,
        layers: list[int],
        on_done: Callable[[int, GroupOutput], None],
        on_event: Event | None = None,
    ) -> None:
        """Compute every group on the first idle worker; ``on_done(index, output)`` runs in
        this process as each arrives (in the order they finish). A group whose worker died
        goes back to the front of the queue, for another worker."""

        def submit(handle: Any, index: int) -> Any:
            part = catalogue_for(catalogue, groups[index])
            return handle.run_group.remote(groups[index], sampling, layers, self.batch_size, part)

        def what(index: int) -> str:
            return "shards " + ", ".join(items[0].shard for items in groups[index])

        for index, output in self.pool.feed(len(groups), submit, what, on_event):
            on_done(index, output)

    def close(self) -> None:
        """Stop the workers (their devices are free again)."""
        self.pool.close()
