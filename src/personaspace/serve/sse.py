"""A streamed chat completion: server-sent ``chat.completion.chunk`` events.

The turn runs in the worker thread; its callbacks (``start``, each text delta, ``done``)
reach the event loop through ``TurnEvents``. A refusal before the turn starts (a full queue,
a prompt too long) is a plain error response; once it has started, the stream is: the
role, the text deltas, the last chunk (``finish_reason`` and our ``personaspace`` field),
the usage when asked, ``[DONE]``. A failure after the start ends the stream with an error
event instead. A client that goes away cancels the generation.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import Future
from typing import Any, Literal

from fastapi.responses import StreamingResponse

from personaspace.monitor.live import TurnResult
from personaspace.serve.completions import ChatTurn
from personaspace.serve.errors import APIError, as_api_error
from personaspace.serve.schemas import chunk_body, usage
from personaspace.serve.worker import GenerationWorker

EventKind = Literal["start", "text", "done"]
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(data: dict[str, Any] | str) -> str:
    """One server-sent event.

    Example:
        >>> sse("[DONE]")
        'data: [DONE]\\n\\n'
    """
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


class TurnEvents:
    """Callbacks from the worker thread as a queue on the event loop, and a cancel flag."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[EventKind, Any]] = asyncio.Queue()
        self.cancel = threading.Event()

    def put(self, kind: EventKind, payload: Any = None) -> None:
        """Queue an event (from any thread); with the event loop gone, stop generating."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, payload))
        except RuntimeError:  # the event loop is gone (shutdown): stop generating
            self.cancel.set()

    async def get(self) -> tuple[EventKind, Any]:
        """The next event."""
        return await self.queue.get()


class CompletionStream:
    """The events of a started turn, as server-sent ``chat.completion.chunk`` objects."""

    def __init__(
        self,
        turn: ChatTurn,
        events: TurnEvents,
        future: Future[TurnResult],
        prompt_tokens: int,
        include_usage: bool,
    ) -> None:
        self.turn, self.events, self.future = turn, events, future
        self.prompt_tokens, self.include_usage = prompt_tokens, include_usage
        self.created = int(time.time())

    def chunk(
        self,
        delta: dict[str, Any],
        finish_reason: str | None = None,
        extension: dict[str, Any] | None = None,
        usage_counts: dict[str, int] | None = None,
    ) -> str:
        """One chunk of this completion, as an event."""
        body = chunk_body(
            id=self.turn.id,
            model=self.turn.model,
            created=self.created,
            delta=delta,
            finish_reason=finish_reason,
            extension=extension,
            usage_counts=usage_counts,
        )
        return sse(body)

    async def body(self) -> AsyncGenerator[str, None]:
        """The role, the text as it comes, then the ending; cancels the turn if abandoned."""
        try:
            yield self.chunk({"role": "assistant", "content": ""})
            kind, text = await self.events.get()
            while kind != "done":
                yield self.chunk({"content": text})
                kind, text = await self.events.get()
            for event in self.ending():
                yield event
        finally:
            if not self.future.done():
                self.events.cancel.set()

    def ending(self) -> Iterator[str]:
        """The last chunk, the usage when asked and ``[DONE]``; or the error that ended it."""
        try:
            result = self.future.result()
        except Exception as err:  # a refusal, or a bug: say so in the stream, do not hang
            yield sse(as_api_error(err).body())
            return
        extension = self.turn.extension(result)
        yield self.chunk({}, finish_reason=result.finish_reason, extension=extension)
        if self.include_usage:
            counts = usage(self.prompt_tokens, len(result.token_ids))
            yield self.chunk({}, usage_counts=counts)
        yield sse("[DONE]")


async def stream_completion(
    turn: ChatTurn, worker: GenerationWorker, include_usage: bool
) -> StreamingResponse:
    """Queue ``turn``; once it has started, stream it (a refusal before that raises)."""
    events = TurnEvents()
    future = worker.submit(
        lambda: turn.run(
            on_start=lambda n: events.put("start", n),
            on_text=lambda text: events.put("text", text),
            cancel=events.cancel,
        )
    )
    future.add_done_callback(lambda _f: events.put("done"))
    kind, prompt_tokens = await events.get()
    if kind == "done":  # refused before generating: a plain error response
        future.result()
        raise APIError(500, "the generation ended before it started", type="server_error")
    stream = CompletionStream(turn, events, future, prompt_tokens, include_usage)
    return StreamingResponse(stream.body(), media_type="text/event-stream", headers=HEADERS)
