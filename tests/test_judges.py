"""Judges: the local rule and markers, and the OpenAI-compatible client against a local server."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from personaspace import PersonaspaceError
from personaspace.catalogue import Role, load_catalogue
from personaspace.judge import RoleItem, TraitItem
from personaspace.judge.agreement import cohen_kappa, read_labels
from personaspace.judge.local import (
    AI_MARKERS,
    REFUSAL_MARKERS,
    LocalJudge,
    RoleFeatures,
    Thresholds,
    score_role,
)
from personaspace.judge.openai import OpenAIJudge

ROLE = Role("pirate", "profession", "A pirate captain.", ("p",) * 5, "Talks of ships and gold.")


@pytest.mark.parametrize(
    "text",
    [
        "As an AI, I don't have a favourite colour.",
        "I'm an AI language model.",
        "I am a large language model trained by Hugging Face.",
        "I don't have personal feelings.",
    ],
)
def test_ai_markers_match(text: str) -> None:
    assert AI_MARKERS.search(text)


@pytest.mark.parametrize(
    "text",
    [
        "Arr, the sea is my home and gold my only friend.",
        "I love the smell of bread at dawn.",
    ],
)
def test_in_character_text_has_no_ai_marker(text: str) -> None:
    assert not AI_MARKERS.search(text) and not REFUSAL_MARKERS.search(text)


def test_local_rule() -> None:
    t = Thresholds(in_role=0.3, some_role=0.2)
    assert score_role(RoleFeatures(ai=False, refusal=False, similarity=0.35), t) == 3
    assert score_role(RoleFeatures(ai=False, refusal=False, similarity=0.3), t) == 3
    assert score_role(RoleFeatures(ai=False, refusal=False, similarity=0.25), t) == 2
    assert score_role(RoleFeatures(ai=False, refusal=False, similarity=0.1), t) == 1
    assert score_role(RoleFeatures(ai=True, refusal=False, similarity=0.35), t) == 2
    assert score_role(RoleFeatures(ai=True, refusal=False, similarity=0.25), t) == 0
    assert score_role(RoleFeatures(ai=False, refusal=True, similarity=0.0), t) == 0


LABELS = Path(__file__).parent / "data" / "judge_labels.jsonl"
TRAIT_LABELS = LABELS.parent / "trait_labels.jsonl"


def test_hand_labels_are_complete() -> None:
    rows = [json.loads(line) for line in LABELS.read_text().splitlines()]
    assert len(rows) >= 350
    assert {r["model"] for r in rows} == {"smollm2-135m-instruct", "gemma-3-270m"}
    traits = [json.loads(x) for x in TRAIT_LABELS.read_text().splitlines()]
    assert len(traits) >= 150 and all(0 <= r["label"] <= 100 and r["note"] for r in traits)
    for second in ("judge_labels_second.jsonl", "trait_labels_second.jsonl"):
        ids = {json.loads(x)["id"] for x in (LABELS.parent / second).read_text().splitlines()}
        assert ids <= {r["id"] for r in rows + traits}, second
    assert all(r["label"] in (0, 1, 2, 3) and r["response"] and r["note"] for r in rows)
    assert len({r["id"] for r in rows}) == len(rows)


def test_local_judge_agrees_with_hand_labels() -> None:
    """The shipped thresholds against the stored labels (figures in BENCHMARKS.md).

    Floors sit a little under the measured values on the 536 labels (accuracy 0.815, kappa
    0.43, quadratic kappa 0.61 with the shipped thresholds; 0.81 / 0.42 / 0.60 with
    thresholds refit in role-grouped cross-validation): a change to the judge that loses
    agreement fails here.
    """
    items, labels = read_labels(LABELS)
    # an unscored (empty) reply counts as class 1
    predicted = [1 if p is None else p for p in LocalJudge().score_roles(items)]
    accuracy = sum(p == y for p, y in zip(predicted, labels)) / len(labels)
    majority = max(labels.count(k) for k in range(4)) / len(labels)
    assert accuracy > majority
    assert cohen_kappa(labels, predicted) >= 0.4
    assert cohen_kappa(labels, predicted, quadratic=True) >= 0.58


class FakeJudgeServer(BaseHTTPRequestHandler):
    """Answers /models; /chat/completions replies per a script: 429 first, then scores."""

    script: ClassVar[list[object]] = []

    def log_message(self, *args: object) -> None:
        return None

    def _send(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(200, {"data": [{"id": "fake"}]})

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        prompt = json.loads(self.rfile.read(length))["messages"][0]["content"]
        step = type(self).script.pop(0) if type(self).script else "3"
        if isinstance(step, int):
            self._send(step, {"error": "busy"})
        else:
            answer = "not a number" if "UNPARSEABLE" in prompt else step
            self._send(200, {"choices": [{"message": {"content": answer}}]})


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    httpd = HTTPServer(("127.0.0.1", 0), FakeJudgeServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def test_openai_judge_retries_and_records_unparseable_as_missing(server) -> None:  # type: ignore[no-untyped-def]
    FakeJudgeServer.script = [429, 503, "2"]
    judge = OpenAIJudge(
        load_catalogue().rubrics,
        model="fake",
        base_url=server,
        api_key="k",
        concurrency=1,
        rate_per_s=100,
    )
    judge.check()
    scores = judge.score_roles(
        [
            RoleItem(ROLE, "Q?", "Arr."),
            RoleItem(ROLE, "Q?", "UNPARSEABLE"),
            RoleItem(ROLE, "Q?", "Arr again."),
        ]
    )
    assert scores == [2, None, 3]


def test_openai_judge_unreachable_fails_fast() -> None:
    judge = OpenAIJudge(
        load_catalogue().rubrics, model="m", base_url="http://127.0.0.1:9/v1", api_key=None
    )
    with pytest.raises(PersonaspaceError, match="unreachable"):
        judge.check()


class StatusScriptServer(BaseHTTPRequestHandler):
    """Replies per a script of ``(status, headers)`` (a 200 answers "2"); records requests.

    Each request is recorded as ``(method, path, Authorization header or None)``.
    """

    script: ClassVar[list[tuple[int, dict[str, str]]]] = []
    seen: ClassVar[list[tuple[str, str, str | None]]] = []

    def log_message(self, *args: object) -> None:
        return None

    def _reply(self) -> None:
        cls = type(self)
        cls.seen.append((self.command, self.path, self.headers.get("Authorization")))
        status, headers = cls.script.pop(0) if cls.script else (200, {})
        if status == 200 and self.command == "GET":
            body: object = {"object": "list", "data": [{"id": "fake", "object": "model"}]}
        elif status == 200:
            body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "2"}}]}
        else:
            body = {"error": {"message": f"scripted {status}", "type": "server_error"}}
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._reply()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self._reply()


@contextmanager
def status_server(script: list[tuple[int, dict[str, str]]]) -> Iterator[str]:
    StatusScriptServer.script, StatusScriptServer.seen = list(script), []
    httpd = HTTPServer(("127.0.0.1", 0), StatusScriptServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


def scripted_judge(url: str, *, retries: int = 4, api_key: str | None = "k") -> OpenAIJudge:
    return OpenAIJudge(
        load_catalogue().rubrics,
        model="fake",
        base_url=url,
        api_key=api_key,
        concurrency=1,
        rate_per_s=0,
        retries=retries,
        timeout_s=5.0,
    )


def test_openai_judge_429_is_retried_after_retry_after() -> None:
    with status_server([(429, {"Retry-After": "1"})]) as url:
        t = time.monotonic()
        scores = scripted_judge(url).score_roles([RoleItem(ROLE, "Q?", "Arr.")])
        elapsed = time.monotonic() - t
    assert scores == [2]
    posts = [s for s in StatusScriptServer.seen if s[0] == "POST"]
    assert [p[1] for p in posts] == ["/v1/chat/completions"] * 2  # the 429, then the retry
    assert 0.9 <= elapsed < 5.0  # the client waited the server's Retry-After (1 s), no longer


def test_openai_judge_persistent_500_is_missing_after_the_retries() -> None:
    fast = {"retry-after-ms": "10"}  # keep the client's backoff short
    with status_server([(500, fast)] * 10) as url:
        t = time.monotonic()
        trait = next(iter(load_catalogue().traits.values()))
        scores = scripted_judge(url, retries=2).score_traits([TraitItem(trait, "Q?", "Well.")])
        elapsed = time.monotonic() - t
    assert scores == [None]  # recorded as missing, not guessed
    assert len(StatusScriptServer.seen) == 3  # the first try and 2 retries
    assert elapsed < 5.0


def test_openai_judge_sends_no_authorization_without_a_key(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with status_server([]) as url:
        judge = scripted_judge(url, api_key=None)
        judge.check()
        assert judge.score_roles([RoleItem(ROLE, "Q?", "Arr.")]) == [2]
        scripted_judge(url, api_key="s3cret").check()
    auth = [s[2] for s in StatusScriptServer.seen]
    assert auth == [None, None, "Bearer s3cret"]


def test_openai_judge_check_on_a_closed_port_fails_fast_in_one_line() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    url = f"http://127.0.0.1:{port}/v1"
    judge = scripted_judge(url, retries=4)
    t = time.monotonic()
    with pytest.raises(PersonaspaceError) as info:
        judge.check()
    assert time.monotonic() - t < 5.0  # no retries, no long timeout
    text = str(info.value)
    assert "\n" not in text
    assert f"the judge endpoint {url} is unreachable" in text
    assert text.endswith("check --judge-base-url and the API key, or use --judge local")


def test_openai_judge_check_reports_a_refusal_without_retrying() -> None:
    with status_server([(401, {})]) as url, pytest.raises(PersonaspaceError) as info:
        scripted_judge(url).check()
    assert len(StatusScriptServer.seen) == 1
    text = str(info.value)
    assert "\n" not in text
    assert f"the judge endpoint {url} refused the request (HTTP 401: scripted 401)" in text
    assert "check --judge-base-url and the API key" in text
