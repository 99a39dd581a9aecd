"""The HTTP app: OpenAI-compatible routes, the web app's routes, and the static web app.

Routes:
- ``POST /v1/chat/completions`` (JSON, or server-sent events with ``stream: true``),
  ``GET /v1/models``, ``GET /v1/models/{id}``: what OpenAI clients call;
- ``GET /personaspace/info``: model, axis layers, calibrated thresholds, capping experiments;
- ``POST /personaspace/project``: a transcript's trajectory on the axis;
- ``GET /health``: liveness and queue length (no key needed);
- ``GET /``: the web app (static files under ``/static``).

Every refusal is an OpenAI-style error body with a 4xx status. The pieces: request checks
in ``serve.checks``, error responses in ``serve.handlers``, routes in ``serve.routes`` (with
``serve.dependencies``), completions in ``serve.completions`` and ``serve.sse``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from personaspace.serve.engine import ServeEngine
from personaspace.serve.guard import BodySizeLimit, Limits
from personaspace.serve.handlers import exception_handlers
from personaspace.serve.routes import add_api_routes
from personaspace.serve.webapp import add_web_app
from personaspace.serve.worker import GenerationWorker


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Close the generation worker when the server stops."""
    yield
    app.state.worker.close()


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
    app = FastAPI(
        title="personaspace",
        description="OpenAI-compatible chat with Assistant-Axis monitoring and capping.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        exception_handlers=exception_handlers(),
    )
    app.state.engine, app.state.limits = engine, limits
    app.state.worker = GenerationWorker(limits.max_pending)
    app.state.api_key, app.state.started_at = api_key, int(time.time())
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)
    add_api_routes(app)
    if web_app:
        add_web_app(app)
    return app
