"""The app's exception handlers: every failure becomes an OpenAI-style error response.

``APIError`` keeps its status; a library refusal (``PersonaspaceError``) is a 400; FastAPI's
validation errors are a 400 naming the field; Starlette's HTTP errors (unknown route, wrong
method) keep their status; anything else is a bug, reported as a 500 without its details.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from personaspace.errors import PersonaspaceError
from personaspace.serve.errors import APIError, from_personaspace, internal_error

Handler = Callable[[Request, Any], Coroutine[Any, Any, Response]]


def error_response(err: APIError) -> JSONResponse:
    """``err`` as a JSON response with its status."""
    return JSONResponse(err.body(), status_code=err.status)


async def api_error(_request: Request, err: APIError) -> JSONResponse:
    """A refusal raised by the server's own checks."""
    return error_response(err)


async def library_error(_request: Request, err: PersonaspaceError) -> JSONResponse:
    """A refusal raised by the library (problem and fix)."""
    return error_response(from_personaspace(err))


async def validation_error(_request: Request, err: RequestValidationError) -> JSONResponse:
    """A request FastAPI could not validate: the first complaint, as a 400."""
    first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return error_response(APIError(400, f"{where}: {first['msg']}"))


async def http_error(_request: Request, err: StarletteHTTPException) -> JSONResponse:
    """An unknown route (404) or a method the route does not take (405)."""
    kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
    return error_response(APIError(err.status_code, str(err.detail), type=kind))


async def unexpected_error(_request: Request, err: Exception) -> JSONResponse:
    """A bug: a 500 that says so."""
    return error_response(internal_error(err))


def exception_handlers() -> dict[int | type[Exception], Handler]:
    """The handlers to give ``FastAPI(exception_handlers=...)``."""
    return {
        APIError: api_error,
        PersonaspaceError: library_error,
        RequestValidationError: validation_error,
        StarletteHTTPException: http_error,
        Exception: unexpected_error,
    }
