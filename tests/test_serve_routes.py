"""The HTTP layer of ``personaspace serve`` on a scripted engine (no model): routes, checks,
error bodies and the order of server-sent events, exactly."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from personaspace.errors import PersonaspaceError
from personaspace.serve import APIError, Limits, ServerThread, create_app

MODEL = "fake"
LIMITS = Limits(max_messages=3, max_tokens=8, default_max_tokens=5, max_body_bytes=4096)


@dataclass(frozen=True)
class FakeSampling:
    max_new_tokens: int
    seed: int


@dataclass(frozen=True)
class FakeResult:
    text: str
    finish_reason: str
    token_ids: list[int]


@dataclass
class FakeEngine:
    """Replies to the last user message by script: ``TURNS[content]``, else "Hello"."""

    names: list[str] = field(default_factory=lambda: [MODEL, "alias"])
    cancelled: threading.Event = field(default_factory=threading.Event)

    def plan(self, options: Any) -> dict[str, Any]:
        if options.cap == "nope":
            raise PersonaspaceError("no capping experiment 'nope'", fix="pick one")
        return {"cap": options.cap}

    def sampling(
        self, temperature: Any, top_p: Any, seed: Any, max_tokens: int, stop: Any = ()
    ) -> FakeSampling:
        return FakeSampling(max_tokens, 0 if seed is None else seed)

    def turn(
        self,
        messages: Any,
        plan: Any,
        sampling: FakeSampling,
        *,
        on_start: Callable[[int], None] | None = None,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> FakeResult:
        script = TURNS.get(messages[-1].content, TURNS["default"])
        return script(self, on_start or (lambda n: None), on_text or (lambda t: None), cancel)

    def extension(self, result: FakeResult, plan: Any, seed: int) -> dict[str, Any]:
        return {"plan": plan, "seed": seed, "n": len(result.token_ids)}

    def info(self) -> dict[str, Any]:
        return {"model": MODEL}

    def project(self, transcript: Any, layers: Any, per_token: bool) -> dict[str, Any]:
        return {"n": len(transcript.messages), "layers": layers, "per_token": per_token}


Start = Callable[[int], None]
Text = Callable[[str], None]


def _hello(engine: FakeEngine, start: Start, text: Text, cancel: Any) -> FakeResult:
    start(7)
    text("Hel")
    text("lo")
    return FakeResult("Hello", "stop", [1, 2, 3])


def _refuse(engine: FakeEngine, start: Start, text: Text, cancel: Any) -> FakeResult:
    raise PersonaspaceError("the prompt is refused", fix="ask otherwise")


def _bug(engine: FakeEngine, start: Start, text: Text, cancel: Any) -> FakeResult:
    raise ZeroDivisionError("oops")


def _late(error: Exception) -> Callable[[FakeEngine, Start, Text, Any], FakeResult]:
    def script(engine: FakeEngine, start: Start, text: Text, cancel: Any) -> FakeResult:
        start(7)
        text("Hel")
        raise error

    return script


def _until_cancelled(engine: FakeEngine, start: Start, text: Text, cancel: Any) -> FakeResult:
    start(7)
    text("Hel")
    if cancel.wait(20):
        engine.cancelled.set()
    return FakeResult("Hel", "length", [1])


TURNS = {
    "default": _hello,
    "refuse": _refuse,
    "bug": _bug,
    "refuse late": _late(PersonaspaceError("stopped halfway", fix="retry")),
    "api late": _late(APIError(400, "too long after all", code="context_length_exceeded")),
    "bug late": _late(KeyError("x")),
    "wait": _until_cancelled,
}


def _app(**kw: Any) -> Any:
    return create_app(FakeEngine(), limits=LIMITS, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def app() -> Any:
    return _app()


@pytest.fixture(scope="module")
def server(app: Any) -> Iterator[ServerThread]:
    with ServerThread(app) as running:
        yield running


def _request(
    server: ServerThread,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _json(server: ServerThread, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    status, _, data = _request(server, method, path, body)
    return status, json.loads(data)


def _chat(content: str = "Hi", **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **fields}


def _error(message: str, type: str = "invalid_request_error", param: Any = None, code: Any = None):  # type: ignore[no-untyped-def]
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _events(data: bytes) -> list[Any]:
    text = data.decode()
    assert text.endswith("\n\n")
    events = text[:-2].split("\n\n")
    assert all(e.startswith("data: ") for e in events)
    return [e[6:] if e == "data: [DONE]" else json.loads(e[6:]) for e in events]


def _chunk(first: dict[str, Any], delta: dict[str, Any], finish: Any = None) -> dict[str, Any]:
    return {
        "id": first["id"],
        "object": "chat.completion.chunk",
        "created": first["created"],
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def test_models_health_and_info(server: ServerThread) -> None:
    status, models = _json(server, "GET", "/v1/models")
    assert status == 200 and [m["id"] for m in models["data"]] == [MODEL, "alias"]
    created = models["data"][0]["created"]
    assert models == {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "personaspace"}
            for name in (MODEL, "alias")
        ],
    }
    assert _json(server, "GET", "/v1/models/alias") == (200, models["data"][1])
    assert _json(server, "GET", "/v1/models/a/b") == (
        404,
        _error(
            "the model 'a/b' is not served here; this server serves 'fake', 'alias'",
            param="model",
            code="model_not_found",
        ),
    )
    assert _json(server, "GET", "/health") == (200, {"status": "ok", "model": MODEL, "pending": 0})
    assert _json(server, "GET", "/personaspace/info") == (
        200,
        {
            "model": MODEL,
            "limits": {
                "max_body_bytes": 4096,
                "max_messages": 3,
                "max_tokens": 8,
                "default_max_tokens": 5,
            },
        },
    )


def test_unknown_routes_and_methods(server: ServerThread) -> None:
    assert _json(server, "GET", "/v1/nothing") == (404, _error("Not Found", "not_found_error"))
    assert _json(server, "GET", "/docs") == (404, _error("Not Found", "not_found_error"))
    assert _json(server, "GET", "/v1/chat/completions") == (405, _error("Method Not Allowed"))
    assert _json(server, "DELETE", "/health") == (405, _error("Method Not Allowed"))
    status, _, page = _request(server, "GET", "/")
    assert status == 200 and b"personaspace" in page
    table = [
        (route.path, sorted(getattr(route, "methods", None) or []), route.name)
        for route in server.app.routes
    ]
    assert table == [
        ("/openapi.json", ["GET", "HEAD"], "openapi"),
        ("/health", ["GET"], "health"),
        ("/v1/models", ["GET"], "list_models"),
        ("/v1/models/{name:path}", ["GET"], "get_model"),
        ("/personaspace/info", ["GET"], "info"),
        ("/personaspace/project", ["POST"], "project"),
        ("/v1/chat/completions", ["POST"], "chat_completions"),
        ("/static", [], "static"),
        ("/", ["GET"], "index"),
    ]


def test_completion_body_and_max_tokens(server: ServerThread) -> None:
    status, body = _json(server, "POST", "/v1/chat/completions", _chat(seed=4))
    assert status == 200
    assert body == {
        "id": body["id"],
        "object": "chat.completion",
        "created": body["created"],
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        "personaspace": {"plan": {"cap": None}, "seed": 4, "n": 3},
    }
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) == 41


CHECKS = [
    (
        "unknown model before everything",
        _chat(model="gpt", max_tokens=99, messages=[{"role": "user", "content": "a"}] * 9),
        404,
        _error(
            "the model 'gpt' is not served here; this server serves 'fake', 'alias'",
            param="model",
            code="model_not_found",
        ),
    ),
    (
        "message count before max_tokens",
        _chat(max_tokens=99, messages=[{"role": "user", "content": "a"}] * 4),
        400,
        _error(
            "4 messages; this server accepts at most 3",
            param="messages",
            code="too_many_messages",
        ),
    ),
    (
        "max_tokens",
        _chat(max_tokens=9),
        400,
        _error(
            "max_tokens is 9; this server allows at most 8",
            param="max_tokens",
            code="max_tokens_too_large",
        ),
    ),
    (
        "max_completion_tokens",
        _chat(max_tokens=2, max_completion_tokens=10),
        400,
        _error(
            "max_tokens is 10; this server allows at most 8",
            param="max_tokens",
            code="max_tokens_too_large",
        ),
    ),
    (
        "alternation before the last message",
        _chat(messages=[{"role": "assistant", "content": "a"}]),
        400,
        _error(
            "message 0 is an assistant turn where a user turn belongs: put an optional system "
            "message first, then alternate user and assistant"
        ),
    ),
    (
        "last message",
        _chat(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]),
        400,
        _error("the last message must be a user message", param="messages"),
    ),
    (
        "the plan",
        _chat(personaspace={"cap": "nope"}),
        400,
        _error("no capping experiment 'nope': pick one"),
    ),
    (
        "a refusal before the start",
        _chat("refuse"),
        400,
        _error("the prompt is refused: ask otherwise"),
    ),
    (
        "a bug before the start",
        _chat("bug"),
        500,
        _error("internal error (ZeroDivisionError): please report it", "server_error"),
    ),
    (
        "validation",
        _chat(temperature="hot"),
        400,
        _error("temperature: Input should be a valid number", param="temperature"),
    ),
    ("not JSON", b"{", 400, _error("Invalid JSON: EOF while parsing an object at line 1 column 1")),
]


@pytest.mark.parametrize(
    ("body", "status", "error"), [c[1:] for c in CHECKS], ids=[c[0] for c in CHECKS]
)
@pytest.mark.parametrize("stream", [False, True])
def test_refusals_are_plain_error_responses(
    server: ServerThread, body: Any, status: int, error: dict[str, Any], stream: bool
) -> None:
    if stream and isinstance(body, dict):
        body = {**body, "stream": True}
    got, headers, data = _request(server, "POST", "/v1/chat/completions", body)
    assert (got, json.loads(data)) == (status, error)
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize("include_usage", [None, False, True])
def test_stream_event_order_and_headers(server: ServerThread, include_usage: Any) -> None:
    options = None if include_usage is None else {"include_usage": include_usage}
    body = _chat(stream=True, stream_options=options, personaspace={"cap": "c"})
    status, headers, data = _request(server, "POST", "/v1/chat/completions", body)
    assert status == 200
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["cache-control"] == "no-cache" and headers["x-accel-buffering"] == "no"
    events = _events(data)
    first = events[0]
    expected = [
        _chunk(first, {"role": "assistant", "content": ""}),
        _chunk(first, {"content": "Hel"}),
        _chunk(first, {"content": "lo"}),
        {**_chunk(first, {}, "stop"), "personaspace": {"plan": {"cap": "c"}, "seed": 0, "n": 3}},
    ]
    if include_usage:
        usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        expected.append({**_chunk(first, {}), "choices": [], "usage": usage})
    assert events == [*expected, "[DONE]"]


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("refuse late", _error("stopped halfway: retry")),
        ("api late", _error("too long after all", code="context_length_exceeded")),
        ("bug late", _error("internal error (KeyError): please report it", "server_error")),
    ],
)
def test_errors_after_the_start_end_the_stream(
    server: ServerThread, content: str, error: dict[str, Any]
) -> None:
    status, _, data = _request(server, "POST", "/v1/chat/completions", _chat(content, stream=True))
    events = _events(data)
    assert status == 200
    assert events == [
        _chunk(events[0], {"role": "assistant", "content": ""}),
        _chunk(events[0], {"content": "Hel"}),
        error,
    ]


def test_a_client_going_away_cancels_the_generation(app: Any, server: ServerThread) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(_chat("wait", stream=True)))
    response = conn.getresponse()
    assert response.status == 200 and response.readline().startswith(b"data: ")
    conn.close()
    engine = app.state.engine
    assert engine.cancelled.wait(20)
    engine.cancelled.clear()


def test_project_checks_the_transcript(server: ServerThread) -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Ahoy."}]
    body = {"transcript": {"messages": messages}, "layers": [1], "per_token": True}
    assert _json(server, "POST", "/personaspace/project", body) == (
        200,
        {"n": 2, "layers": [1], "per_token": True},
    )
    assert _json(
        server, "POST", "/personaspace/project", {"transcript": {"messages": messages * 2}}
    ) == (
        400,
        _error("the transcript has 4 messages; the limit is 3", code="too_many_messages"),
    )
    assert _json(server, "POST", "/personaspace/project", {"x": 2}) == (
        400,
        _error("transcript: Field required (and 1 more)", param="transcript"),
    )


def test_body_limit_and_api_key() -> None:
    with ServerThread(_app(api_key="k")) as server:
        refused = _error(
            "missing or wrong API key: send the header 'Authorization: Bearer KEY'",
            code="invalid_api_key",
        )
        for method, path in [
            ("GET", "/v1/models"),
            ("GET", "/v1/models/fake"),
            ("GET", "/personaspace/info"),
            ("POST", "/personaspace/project"),
            ("POST", "/v1/chat/completions"),
        ]:
            assert _json(server, method, path, b"not json") == (401, refused)
        assert _json(server, "GET", "/health")[0] == 200
        assert _request(server, "GET", "/")[0] == 200
        status, _, _ = _request(server, "GET", "/v1/models", headers={"Authorization": "Bearer k"})
        assert status == 200
        big = _chat("x" * 5000)
        assert _json(server, "POST", "/v1/chat/completions", big) == (
            413,
            _error("the request body is larger than 4096 bytes", code="request_too_large"),
        )


def test_no_web_app() -> None:
    with ServerThread(_app(web_app=False)) as server:
        assert _json(server, "GET", "/") == (404, _error("Not Found", "not_found_error"))
        assert _request(server, "GET", "/static/index.html")[0] == 404


def test_a_full_queue_refuses_a_stream_before_it_starts() -> None:
    app = create_app(FakeEngine(), limits=Limits(max_pending=1))  # type: ignore[arg-type]
    with ServerThread(app) as server:
        release = threading.Event()
        blocker = app.state.worker.submit(release.wait)
        try:
            status, headers, data = _request(
                server, "POST", "/v1/chat/completions", _chat(stream=True)
            )
        finally:
            release.set()
        blocker.result(timeout=10)
        assert headers["content-type"] == "application/json"
        assert (status, json.loads(data)) == (
            429,
            _error(
                "the server is busy (1 generations queued); retry shortly",
                "rate_limit_error",
                code="queue_full",
            ),
        )
        assert _request(server, "POST", "/v1/chat/completions", _chat(stream=True))[0] == 200
