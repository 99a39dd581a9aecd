"""The requests we accept (OpenAI chat completions with our extension, transcripts to
project) and the response shapes.

Types are checked strictly (a string where a number belongs is refused, not converted).
Unknown top-level fields of a chat request are ignored, as OpenAI-compatible servers
usually do; fields we cannot honour (``n > 1``, tools, logprobs, JSON response formats) are
refused. Our own extension, the ``personaspace`` object, and the projection request refuse
unknown keys so a typo never passes silently.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_STOP_STRINGS = 4
# Request fields whose explicit null means "use the default".
NULL_IS_DEFAULT = frozenset({"stream", "n", "personaspace", "stream_options"})


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One message; ``developer`` is read as ``system``; content parts must be text."""

    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def as_dict(self) -> dict[str, str]:
        content = self.content
        if isinstance(content, list):
            content = "".join(p.text for p in content)
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": content or ""}


class SteerOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    coef_frac: float
    layers: list[int] | None = Field(default=None, min_length=1, max_length=64)


class PersonaspaceOptions(BaseModel):
    """The ``personaspace`` extension of a request.

    ``cap``: a capping experiment id, ``null`` for none; left out, the server's default.
    ``steer``: ``coef_frac`` along the axis (a multiple of the mean residual norm) at the
    projection layers, or ``{"coef_frac", "layers"}``. ``layers``: where to project.
    ``per_token``: also return each reply token's projection. ``scope``: positions the
    interventions touch (``all`` or ``generated``).
    """

    model_config = ConfigDict(strict=True, extra="forbid")
    cap: str | None = None
    steer: float | SteerOptions | None = None
    layers: list[int] | None = Field(default=None, min_length=1, max_length=64)
    per_token: bool = False
    scope: Literal["all", "generated"] = "all"

    @property
    def cap_given(self) -> bool:
        return "cap" in self.model_fields_set


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``: the fields we read (others are ignored)."""

    model_config = ConfigDict(strict=True, extra="ignore")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    logprobs: bool | None = None
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    personaspace: PersonaspaceOptions = Field(default_factory=PersonaspaceOptions)

    @model_validator(mode="before")
    @classmethod
    def _nulls_mean_defaults(cls, data: Any) -> Any:
        # Some clients send every field, unset ones as null: read those as left out.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None or k not in NULL_IS_DEFAULT}
        return data

    @model_validator(mode="after")
    def _supported(self) -> ChatCompletionRequest:
        if self.n != 1:
            raise ValueError("only n=1 is supported")
        if self.logprobs:
            raise ValueError("logprobs are not supported")
        if self.tools:
            raise ValueError("tools are not supported")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise ValueError("only the text response format is supported")
        stops = self.stop_strings
        if len(stops) > MAX_STOP_STRINGS or any(not s or len(s) > 64 for s in stops):
            raise ValueError(f"stop: up to {MAX_STOP_STRINGS} non-empty strings of <= 64 chars")
        return self

    @property
    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk (``stream_options.include_usage``)."""
        return bool(self.stream_options and self.stream_options.include_usage)


class ProjectRequest(BaseModel):
    """``POST /personaspace/project``: a transcript in any format the monitor reads."""

    model_config = ConfigDict(strict=True, extra="forbid")
    transcript: Any
    layers: list[int] | None = Field(default=None, min_length=1, max_length=64)
    per_token: bool = False


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def completion_body(
    *,
    id: str,
    model: str,
    text: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    extension: dict[str, Any],
) -> dict[str, Any]:
    """A ``chat.completion`` object with our ``personaspace`` field."""
    return {
        "id": id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": usage(prompt_tokens, completion_tokens),
        "personaspace": extension,
    }


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chunk_body(
    *,
    id: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    extension: dict[str, Any] | None = None,
    usage_counts: dict[str, int] | None = None,
) -> dict[str, Any]:
    """A ``chat.completion.chunk``; the last one carries ``finish_reason`` and ``personaspace``.

    Example:
        >>> chunk_body(id="c", model="m", created=0, delta={"content": "Hi"})["choices"]
        [{'index': 0, 'delta': {'content': 'Hi'}, 'finish_reason': None, 'logprobs': None}]
    """
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }
    if usage_counts is not None:
        body["choices"] = []
        body["usage"] = usage_counts
    if extension is not None:
        body["personaspace"] = extension
    return body


def models_body(names: list[str], created: int) -> dict[str, Any]:
    """``GET /v1/models``."""
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "personaspace"}
            for name in names
        ],
    }
