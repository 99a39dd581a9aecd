"""One generation at a time: a single worker thread runs every job that touches the model.

Interventions and capture are forward hooks on the one shared model, so two generations
running at once would read and move each other's residual streams. Every job that runs
the model (generation, projection of a transcript) goes through this worker's queue and
runs alone, in arrival order; a greedy reply is therefore the same whether or not other
requests are waiting. The queue is bounded: past ``max_pending`` jobs, new ones are
refused with a 429 (the client may retry).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from personaspace.serve.errors import APIError

T = TypeVar("T")


class GenerationWorker:
    """A single thread and a bounded queue of jobs.

    Example:
        >>> worker = GenerationWorker(max_pending=2)
        >>> worker.submit(lambda: 6 * 7).result()
        42
        >>> worker.close()
    """

    def __init__(self, max_pending: int = 64) -> None:
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="personaspace-gen")
        self._lock = threading.Lock()
        self._pending = 0
        self.completed = 0

    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        return self._pending

    def _done(self, _future: Future) -> None:
        with self._lock:
            self._pending -= 1
            self.completed += 1

    def submit(self, job: Callable[[], T]) -> Future[T]:
        """Queue ``job``; a 429 ``APIError`` when the queue is full."""
        with self._lock:
            if self._pending >= self.max_pending:
                raise APIError(
                    429,
                    f"the server is busy ({self._pending} generations queued); retry shortly",
                    type="rate_limit_error",
                    code="queue_full",
                )
            self._pending += 1
        try:
            future = self._executor.submit(job)
        except RuntimeError:
            with self._lock:
                self._pending -= 1
            raise APIError(
                429, "the server is shutting down", type="rate_limit_error", code="shutting_down"
            ) from None
        future.add_done_callback(self._done)
        return future

    async def run(self, job: Callable[[], T]) -> T:
        """Queue ``job`` and wait for its result without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(job))

    def close(self) -> None:
        """Drop queued jobs and wait for the running one."""
        self._executor.shutdown(wait=True, cancel_futures=True)
