"""FastAPI dependencies of the routes: what ``create_app`` put in the app's state, the API
key check, and request bodies parsed strictly.

Routes declare what they need as annotated parameters (``engine: Engine``); a body that
does not parse is refused with a 400 naming the field, before the route runs.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError

from personaspace.serve.engine import ServeEngine
from personaspace.serve.errors import from_validation
from personaspace.serve.guard import Limits, check_bearer
from personaspace.serve.schemas import ChatCompletionRequest, ProjectRequest
from personaspace.serve.worker import GenerationWorker

M = TypeVar("M", bound=BaseModel)


async def get_engine(request: Request) -> ServeEngine:
    """The served engine."""
    return request.app.state.engine


async def get_worker(request: Request) -> GenerationWorker:
    """The worker that runs every job touching the model."""
    return request.app.state.worker


async def get_limits(request: Request) -> Limits:
    """The server's request limits."""
    return request.app.state.limits


async def get_started_at(request: Request) -> int:
    """When the app was created (Unix time): the ``created`` of the served models."""
    return request.app.state.started_at


async def check_api_key(request: Request) -> None:
    """Refuse (401) a request without the app's API key, when it has one."""
    check_bearer(request.headers.get("authorization"), request.app.state.api_key)


def parse_body(model: type[M], raw: bytes) -> M:
    """``raw`` JSON as ``model``; a 400 ``APIError`` naming the first bad field."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as err:
        raise from_validation(err) from None


async def chat_request(request: Request) -> ChatCompletionRequest:
    """The body of ``POST /v1/chat/completions``."""
    return parse_body(ChatCompletionRequest, await request.body())


async def project_request(request: Request) -> ProjectRequest:
    """The body of ``POST /personaspace/project``."""
    return parse_body(ProjectRequest, await request.body())


Engine = Annotated[ServeEngine, Depends(get_engine)]
Worker = Annotated[GenerationWorker, Depends(get_worker)]
ServedLimits = Annotated[Limits, Depends(get_limits)]
StartedAt = Annotated[int, Depends(get_started_at)]
ChatBody = Annotated[ChatCompletionRequest, Depends(chat_request)]
ProjectBody = Annotated[ProjectRequest, Depends(project_request)]
NEEDS_API_KEY = [Depends(check_api_key)]
