"""The HTTP app: OpenAI-compatible routes, the web app's routes, and the static web app.

Routes:
- ``POST /v1/chat/completions`` (JSON, or server-sent events with ``stream: true``),
  ``GET /v1/models``, ``GET /v1/models/{id}``: what OpenAI clients call;
- ``GET /personaspace/info``: model, axis layers, calibrated thresholds, capping experiments;
- ``POST /personaspace/project``: a transcript's trajectory on the axis;
- ``GET /health``: liveness and queue length (no key needed);
- ``GET /``: the web app (static files under ``/static``).

Every refusal is an OpenAI-style error body with a 4xx status.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from personaspace.conversation.messages import as_messages
from personaspace.errors import PersonaspaceError
from personaspace.monitor.live import TurnResult
from personaspace.monitor.transcripts import parse_transcript
from personaspace.serve.engine import ServeEngine
from personaspace.serve.errors import APIError, from_personaspace, from_validation
from personaspace.serve.guard import BodySizeLimit, Limits, check_bearer
from personaspace.serve.schemas import (
    ChatCompletionRequest,
    check_model_name,
    chunk_body,
    completion_body,
    completion_id,
    models_body,
    usage,
)
from personaspace.serve.worker import GenerationWorker

STATIC = Path(__file__).parent / "static"


class ProjectRequest(BaseModel):
    """``POST /personaspace/project``: a transcript in any format the monitor reads."""

    model_config = ConfigDict(strict=True, extra="forbid")
    transcript: Any
    layers: list[int] | None = Field(default=None, min_length=1, max_length=64)
    per_token: bool = False


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def _error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def _parse(model: type[BaseModel], raw: bytes) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError as err:
        raise from_validation(err) from None


def create_app(
    engine: ServeEngine,
    *,
    limits: Limits | None = None,
    api_key: str | None = None,
    web_app: bool = True,
) -> FastAPI:
    """The app serving ``engine``; ``api_key`` turns on bearer auth for the API routes.

    Example:
        >>> app = create_app(ServeEngine(lm, axis), api_key="s3cret")  # doctest: +SKIP
        >>> with ServerThread(app) as server:  # doctest: +SKIP
        ...     print(server.url)
        http://127.0.0.1:38211
    """
    limits = limits or Limits()
    worker = GenerationWorker(limits.max_pending)
    started_at = int(time.time())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        worker.close()

    app = FastAPI(
        title="personaspace",
        description="OpenAI-compatible chat with Assistant-Axis monitoring and capping.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.engine, app.state.worker, app.state.limits = engine, worker, limits
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)

    @app.exception_handler(APIError)
    async def _api_error(_r: Request, err: APIError) -> JSONResponse:
        return _error_response(err)

    @app.exception_handler(PersonaspaceError)
    async def _library_error(_r: Request, err: PersonaspaceError) -> JSONResponse:
        return _error_response(from_personaspace(err))

    @app.exception_handler(RequestValidationError)
    async def _validation(_r: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error_response(APIError(400, f"{where}: {first['msg']}"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, err: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        return _error_response(APIError(err.status_code, str(err.detail), type=kind))

    @app.exception_handler(Exception)
    async def _bug(_r: Request, err: Exception) -> JSONResponse:
        message = f"internal error ({type(err).__name__}): please report it"
        return _error_response(APIError(500, message, type="server_error"))

    def auth(request: Request) -> None:
        check_bearer(request.headers.get("authorization"), api_key)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": engine.names[0], "pending": worker.pending}

    @app.get("/v1/models", dependencies=[Depends(auth)])
    async def list_models() -> dict[str, Any]:
        return models_body(engine.names, started_at)

    @app.get("/v1/models/{name:path}", dependencies=[Depends(auth)])
    async def get_model(name: str) -> dict[str, Any]:
        check_model_name(name, engine.names)
        return models_body([name], started_at)["data"][0]

    @app.get("/personaspace/info", dependencies=[Depends(auth)])
    async def info() -> dict[str, Any]:
        return {
            **engine.info(),
            "limits": {
                "max_body_bytes": limits.max_body_bytes,
                "max_messages": limits.max_messages,
                "max_tokens": limits.max_tokens,
                "default_max_tokens": limits.default_max_tokens,
            },
        }

    @app.post("/personaspace/project", dependencies=[Depends(auth)])
    async def project(request: Request) -> dict[str, Any]:
        body: ProjectRequest = _parse(ProjectRequest, await request.body())
        transcript = parse_transcript(body.transcript, "the posted transcript", "posted")
        if len(transcript.messages) > limits.max_messages:
            raise APIError(
                400,
                f"the transcript has {len(transcript.messages)} messages; the limit is "
                f"{limits.max_messages}",
                code="too_many_messages",
            )
        return await worker.run(lambda: engine.project(transcript, body.layers, body.per_token))

    @app.post("/v1/chat/completions", dependencies=[Depends(auth)], response_model=None)
    async def chat_completions(request: Request) -> JSONResponse | StreamingResponse:
        req: ChatCompletionRequest = _parse(ChatCompletionRequest, await request.body())
        check_model_name(req.model, engine.names)
        if len(req.messages) > limits.max_messages:
            raise APIError(
                400,
                f"{len(req.messages)} messages; this server accepts at most {limits.max_messages}",
                code="too_many_messages",
                param="messages",
            )
        max_tokens = req.requested_max_tokens or limits.default_max_tokens
        if max_tokens > limits.max_tokens:
            raise APIError(
                400,
                f"max_tokens is {max_tokens}; this server allows at most {limits.max_tokens}",
                code="max_tokens_too_large",
                param="max_tokens",
            )
        history = as_messages([m.as_dict() for m in req.messages])
        if history[-1].role != "user":
            raise APIError(400, "the last message must be a user message", param="messages")
        plan = engine.plan(req.personaspace)
        sampling = engine.sampling(
            req.temperature, req.top_p, req.seed, max_tokens, req.stop_strings
        )
        cid, model = completion_id(), req.model

        if not req.stream:
            counts: dict[str, int] = {}

            def job() -> TurnResult:
                return engine.turn(
                    history, plan, sampling, on_start=lambda n: counts.update(prompt=n)
                )

            result = await worker.run(job)
            return JSONResponse(
                completion_body(
                    id=cid,
                    model=model,
                    text=result.text,
                    finish_reason=result.finish_reason,
                    prompt_tokens=counts["prompt"],
                    completion_tokens=len(result.token_ids),
                    extension=engine.extension(result, plan, sampling.seed),
                )
            )

        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancel = threading.Event()

        def put(item: tuple[str, Any]) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, item)
            except RuntimeError:  # the event loop is gone (shutdown): stop generating
                cancel.set()

        future = worker.submit(
            lambda: engine.turn(
                history,
                plan,
                sampling,
                on_start=lambda n: put(("start", n)),
                on_text=lambda text: put(("text", text)),
                cancel=cancel,
            )
        )
        future.add_done_callback(lambda _f: put(("done", None)))
        kind, n_prompt = await events.get()
        if kind == "done":  # refused before generating: a plain error response
            future.result()
            raise APIError(500, "the generation ended before it started", type="server_error")
        created = int(time.time())
        include_usage = bool(req.stream_options and req.stream_options.include_usage)

        async def stream() -> AsyncGenerator[str, None]:
            try:
                yield _sse(
                    chunk_body(
                        id=cid,
                        model=model,
                        created=created,
                        delta={"role": "assistant", "content": ""},
                    )
                )
                while True:
                    kind, payload = await events.get()
                    if kind == "done":
                        break
                    yield _sse(
                        chunk_body(id=cid, model=model, created=created, delta={"content": payload})
                    )
                try:
                    result = future.result()
                except PersonaspaceError as err:
                    yield _sse(from_personaspace(err).body())
                    return
                except APIError as err:
                    yield _sse(err.body())
                    return
                except Exception as err:  # a bug: say so in the stream, do not hang
                    message = f"internal error ({type(err).__name__}): please report it"
                    yield _sse(APIError(500, message, type="server_error").body())
                    return
                yield _sse(
                    chunk_body(
                        id=cid,
                        model=model,
                        created=created,
                        delta={},
                        finish_reason=result.finish_reason,
                        extension=engine.extension(result, plan, sampling.seed),
                    )
                )
                if include_usage:
                    yield _sse(
                        chunk_body(
                            id=cid,
                            model=model,
                            created=created,
                            delta={},
                            usage_counts=usage(n_prompt, len(result.token_ids)),
                        )
                    )
                yield _sse("[DONE]")
            finally:
                if not future.done():
                    cancel.set()

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    if web_app:
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

        @app.get("/", include_in_schema=False)
        async def index() -> FileResponse:
            return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    return app
