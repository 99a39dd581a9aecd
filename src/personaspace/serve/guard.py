"""What the server lets in: where it binds, who may call it, how big a request may be.

- ``check_bind``: loopback by default; any other host needs an API key, or we refuse to start.
- ``check_bearer``: with a key set, ``Authorization: Bearer KEY`` on every API route
  (compared in constant time).
- ``Limits`` and ``BodySizeLimit``: request body size (checked on the declared length and
  on the bytes actually received), message count, tokens per reply, queued generations.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from personaspace.errors import PersonaspaceError
from personaspace.serve.errors import APIError

API_KEY_ENV = "PERSONASPACE_API_KEY"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    """Per-request limits (refused with a 4xx) and the generation queue's length.

    Example:
        >>> Limits().max_body_bytes
        1048576
    """

    max_body_bytes: int = 1 << 20
    max_messages: int = 128
    max_tokens: int = 1024
    default_max_tokens: int = 256
    max_pending: int = 64

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_messages", "max_tokens", "max_pending"):
            if getattr(self, name) < 1:
                raise PersonaspaceError(f"{name} is {getattr(self, name)}", fix="use 1 or more")
        if not 1 <= self.default_max_tokens <= self.max_tokens:
            raise PersonaspaceError(
                f"the default max tokens {self.default_max_tokens} is outside 1..{self.max_tokens}",
                fix="lower the default or raise the limit",
            )


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
        (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond loopback without an API key.

    Example:
        >>> check_bind("127.0.0.1", None)  # fine
        >>> check_bind("0.0.0.0", None)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        personaspace.errors.PersonaspaceError: host 0.0.0.0 accepts connections ... no API key...
    """
    if not is_loopback(host) and not api_key:
        raise PersonaspaceError(
            f"host {host} accepts connections from other machines but no API key is set",
            fix=f"give an API key or set {API_KEY_ENV} (clients send it as a bearer token)",
            param="host",
        )


def check_bearer(authorization: str | None, api_key: str | None) -> None:
    """Raise a 401 unless ``authorization`` is ``Bearer <api_key>`` (no key: all pass).

    Example:
        >>> check_bearer("Bearer s3cret", "s3cret"), check_bearer(None, None)
        (None, None)
    """
    if not api_key:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), api_key.encode()
    ):
        raise APIError(
            401,
            "missing or wrong API key: send the header 'Authorization: Bearer KEY'",
            code="invalid_api_key",
        )


def body_too_large(max_bytes: int) -> APIError:
    return APIError(
        413, f"the request body is larger than {max_bytes} bytes", code="request_too_large"
    )


class BodySizeLimit:
    """ASGI middleware: a body over ``max_bytes`` is refused with a 413 (OpenAI error body).

    A declared ``Content-Length`` over the limit is refused before reading; a body that
    turns out longer (chunked uploads) raises ``APIError(413)`` from ``receive``, which the
    app's error handler turns into the same response.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.max_bytes + 1
                if declared > self.max_bytes:
                    data = json.dumps(body_too_large(self.max_bytes).body()).encode()
                    headers = [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"%d" % len(data)),
                    ]
                    await send({"type": "http.response.start", "status": 413, "headers": headers})
                    await send({"type": "http.response.body", "body": data})
                    return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise body_too_large(self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)
