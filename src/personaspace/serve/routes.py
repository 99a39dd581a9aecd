"""The API routes: OpenAI's (models, chat completions) and the web app's (info, project).

``add_api_routes`` is the route table. Every route but ``/health`` needs the API key when
the app has one. The endpoints have no docstrings: FastAPI would publish them in
``/openapi.json``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse

from personaspace.monitor.transcripts import parse_transcript
from personaspace.serve.checks import check_model_name, check_transcript_length
from personaspace.serve.completions import ChatTurn, complete
from personaspace.serve.dependencies import (
    NEEDS_API_KEY,
    ChatBody,
    Engine,
    ProjectBody,
    ServedLimits,
    StartedAt,
    Worker,
)
from personaspace.serve.schemas import models_body
from personaspace.serve.sse import stream_completion


async def health(engine: Engine, worker: Worker) -> dict[str, Any]:
    return {"status": "ok", "model": engine.names[0], "pending": worker.pending}


async def list_models(engine: Engine, started_at: StartedAt) -> dict[str, Any]:
    return models_body(engine.names, started_at)


async def get_model(name: str, engine: Engine, started_at: StartedAt) -> dict[str, Any]:
    check_model_name(name, engine.names)
    return models_body([name], started_at)["data"][0]


async def info(engine: Engine, limits: ServedLimits) -> dict[str, Any]:
    return {
        **engine.info(),
        "limits": {
            "max_body_bytes": limits.max_body_bytes,
            "max_messages": limits.max_messages,
            "max_tokens": limits.max_tokens,
            "default_max_tokens": limits.default_max_tokens,
        },
    }


async def project(
    body: ProjectBody, engine: Engine, worker: Worker, limits: ServedLimits
) -> dict[str, Any]:
    transcript = parse_transcript(body.transcript, "the posted transcript", "posted")
    check_transcript_length(transcript, limits)
    return await worker.run(lambda: engine.project(transcript, body.layers, body.per_token))


async def chat_completions(
    req: ChatBody, engine: Engine, worker: Worker, limits: ServedLimits
) -> JSONResponse | StreamingResponse:
    turn = ChatTurn.from_request(req, engine, limits)
    if not req.stream:
        return await complete(turn, worker)
    return await stream_completion(turn, worker, req.include_usage)


def add_api_routes(app: FastAPI) -> None:
    """Register the API routes on ``app``."""
    auth = NEEDS_API_KEY
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/v1/models", list_models, methods=["GET"], dependencies=auth)
    app.add_api_route("/v1/models/{name:path}", get_model, methods=["GET"], dependencies=auth)
    app.add_api_route("/personaspace/info", info, methods=["GET"], dependencies=auth)
    app.add_api_route("/personaspace/project", project, methods=["POST"], dependencies=auth)
    app.add_api_route(
        "/v1/chat/completions",
        chat_completions,
        methods=["POST"],
        dependencies=auth,
        response_model=None,
    )
