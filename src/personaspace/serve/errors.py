"""Errors as the OpenAI API reports them: a status code and ``{"error": {...}}``.

Every refusal of a request is a 4xx with ``message``, ``type``, ``param`` and ``code``, so
OpenAI clients raise their usual exceptions (``BadRequestError``, ``AuthenticationError``,
``NotFoundError``, ``RateLimitError``...) with our message.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from personaspace.errors import PersonaspaceError


class APIError(Exception):
    """A request the server refuses, with its HTTP status and OpenAI error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = (
            status,
            message,
            type,
            code,
            param,
        )

    def body(self) -> dict[str, Any]:
        """The JSON body of the response.

        Example:
            >>> APIError(404, "no such model", code="model_not_found").body()["error"]["code"]
            'model_not_found'
        """
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def from_personaspace(err: PersonaspaceError, code: str | None = None) -> APIError:
    """A library refusal (problem and fix) as a 400."""
    return APIError(400, str(err), code=code)


def internal_error(err: Exception) -> APIError:
    """A bug as a 500 that names the exception's type (never its text or traceback).

    Example:
        >>> internal_error(KeyError("x")).message
        'internal error (KeyError): please report it'
    """
    message = f"internal error ({type(err).__name__}): please report it"
    return APIError(500, message, type="server_error")


def as_api_error(err: Exception) -> APIError:
    """Any failure of a generation as the error it reports: a refusal as a 400, a bug as a 500."""
    if isinstance(err, PersonaspaceError):
        return from_personaspace(err)
    if isinstance(err, APIError):
        return err
    return internal_error(err)


def from_validation(err: ValidationError) -> APIError:
    """The first pydantic complaint as a 400 naming the field.

    Example:
        >>> from pydantic import BaseModel
        >>> class M(BaseModel):
        ...     n: int
        >>> try:
        ...     M.model_validate({"n": "x"})
        ... except ValidationError as e:
        ...     from_validation(e).message
        'n: Input should be a valid integer, unable to parse string as an integer'
    """
    first = err.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    message = f"{where}: {first['msg']}" if where else str(first["msg"])
    extra = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return APIError(400, message + extra, param=where or None)
