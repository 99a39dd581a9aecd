"""One chat completion: a checked request turned into a turn, run in the worker, answered
as a single ``chat.completion`` (the streamed answer is ``serve.sse``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse

from personaspace.capture.sampling import SamplingConfig
from personaspace.conversation.messages import Message
from personaspace.monitor.live import TurnResult
from personaspace.serve.checks import check_chat
from personaspace.serve.engine import ServeEngine, TurnPlan
from personaspace.serve.guard import Limits
from personaspace.serve.schemas import ChatCompletionRequest, completion_body, completion_id
from personaspace.serve.worker import GenerationWorker


@dataclass(frozen=True)
class ChatTurn:
    """A checked chat request: its conversation, plan and sampling, and the reply's id."""

    engine: ServeEngine
    history: list[Message]
    plan: TurnPlan
    sampling: SamplingConfig
    id: str
    model: str

    @classmethod
    def from_request(
        cls, req: ChatCompletionRequest, engine: ServeEngine, limits: Limits
    ) -> ChatTurn:
        """Check ``req`` and build its plan and sampling; refusals raise (a 4xx)."""
        history, max_tokens = check_chat(req, engine.names, limits)
        plan = engine.plan(req.personaspace)
        sampling = engine.sampling(
            req.temperature, req.top_p, req.seed, max_tokens, req.stop_strings
        )
        return cls(engine, history, plan, sampling, completion_id(), req.model)

    def run(
        self,
        *,
        on_start: Callable[[int], None] | None = None,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> TurnResult:
        """Generate and measure the reply (in the worker thread; see ``ServeEngine.turn``)."""
        return self.engine.turn(
            self.history,
            self.plan,
            self.sampling,
            on_start=on_start,
            on_text=on_text,
            cancel=cancel,
        )

    def extension(self, result: TurnResult) -> dict[str, Any]:
        """The ``personaspace`` field of the reply."""
        return self.engine.extension(result, self.plan, self.sampling.seed)


async def complete(turn: ChatTurn, worker: GenerationWorker) -> JSONResponse:
    """Run ``turn`` in the worker and answer with the whole ``chat.completion``."""
    counts: dict[str, int] = {}
    result = await worker.run(lambda: turn.run(on_start=lambda n: counts.update(prompt=n)))
    return JSONResponse(
        completion_body(
            id=turn.id,
            model=turn.model,
            text=result.text,
            finish_reason=result.finish_reason,
            prompt_tokens=counts["prompt"],
            completion_tokens=len(result.token_ids),
            extension=turn.extension(result),
        )
    )
