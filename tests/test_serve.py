"""``personaspace serve``: the OpenAI-compatible API on a tiny model, through the real client."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
import torch
from pipeline_fixtures import make_tiny_model
from serve_fixtures import CAP, tiny_app, tiny_setup, write_tiny_run

from personaspace.capture import SamplingConfig, generate
from personaspace.conversation import format_conversation
from personaspace.errors import PersonaspaceError
from personaspace.monitor import project_turns
from personaspace.monitor.live import chat_turn
from personaspace.serve import Limits, ServeEngine, ServerThread, check_bind, create_app
from personaspace.serve.streaming import GenerationCancelled, ReplyText, fed_tokens
from personaspace.serve.worker import GenerationWorker

MODEL = "tiny-llama"
KEY = "test-key-123"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(
        tiny_app(limits=Limits(max_messages=6, max_tokens=64, default_max_tokens=16))
    ) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def ask(client: openai.OpenAI, text: str, max_tokens: int = 12, **extension: Any) -> Any:
    return client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": text}],
        max_tokens=max_tokens,
        extra_body={"personaspace": extension} if extension else None,
    )


def streamed(client: openai.OpenAI, text: str, max_tokens: int = 12, **extension: Any):  # type: ignore[no-untyped-def]
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": text}],
            max_tokens=max_tokens,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"personaspace": extension} if extension else None,
        )
    )
    text_out = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text_out, chunks


def test_models_and_completion_match_the_library(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    reply = ask(client, "Hello there", layers=[0, 2])
    lm, axis, _, _ = tiny_setup()
    alone = chat_turn(
        lm,
        axis,
        [{"role": "user", "content": "Hello there"}],
        layers=[0, 2],
        sampling=SamplingConfig(max_new_tokens=12),
    )
    assert reply.choices[0].message.content == alone.text
    assert reply.choices[0].finish_reason == alone.finish_reason
    assert reply.usage.completion_tokens == len(alone.token_ids)
    prompt = format_conversation(
        lm.tokenizer, [{"role": "user", "content": "Hello there"}], add_generation_prompt=True
    )
    assert reply.usage.prompt_tokens == len(prompt.input_ids)
    ext = reply.personaspace  # type: ignore[attr-defined]
    assert ext["layers"] == [0, 2] and ext["cap"] is None and ext["seed"] == 0
    assert ext["projection"] == {str(k): v for k, v in alone.projection.items()}


def test_stream_equals_non_stream_and_ends_properly(client: openai.OpenAI) -> None:
    for extension in ({}, {"cap": CAP, "per_token": True}):
        whole = ask(client, "Tell me more", max_tokens=20, **extension)
        text, chunks = streamed(client, "Tell me more", max_tokens=20, **extension)
        assert text == whole.choices[0].message.content
        assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2
        assert chunks[0].choices[0].delta.role == "assistant"
        final = chunks[-2]
        assert final.choices[0].finish_reason == whole.choices[0].finish_reason
        assert final.personaspace == whole.personaspace  # type: ignore[attr-defined]
        assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
        assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_cap_engages_changes_the_reply_and_reports_taus(client: openai.OpenAI) -> None:
    _, _, _, capping = tiny_setup()
    plain = ask(client, "Hello there", max_tokens=16)
    capped = ask(client, "Hello there", max_tokens=16, cap=CAP, per_token=True)
    assert capped.choices[0].message.content != plain.choices[0].message.content
    cap_info = capped.personaspace["cap"]  # type: ignore[attr-defined]
    assert cap_info["experiment"] == CAP and cap_info["engaged"] is True
    assert set(cap_info["engaged_tokens"]) == {"0", "1", "2"}
    assert all(0 <= n <= 16 for n in cap_info["engaged_tokens"].values())
    expected = {str(s.layer): s.tau for s in capping.experiment(CAP).steps}
    assert cap_info["tau"] == expected
    # Capped at layer 1 (the projection layer): every reply token sits on or above the floor.
    tokens = capped.personaspace["tokens"]  # type: ignore[attr-defined]
    assert len(tokens["text"]) == capped.usage.completion_tokens
    assert min(tokens["projection"]["1"]) >= expected["1"] - 1e-5


def test_steering_is_reported_and_changes_the_reply(client: openai.OpenAI) -> None:
    plain = ask(client, "Hello there", max_tokens=16)
    steered = ask(client, "Hello there", max_tokens=16, steer={"coef_frac": 2.0, "layers": [1]})
    assert steered.personaspace["steer"] == {"coef_frac": 2.0, "layers": [1]}  # type: ignore[attr-defined]
    assert steered.choices[0].message.content != plain.choices[0].message.content


def test_concurrent_capped_and_uncapped_requests_equal_their_solo_answers(
    client: openai.OpenAI,
) -> None:
    jobs = [(f"Question {i}?", CAP if i % 2 else None, i % 3 == 0) for i in range(8)]

    def run(job: tuple[str, str | None, bool]) -> str:
        text, cap_id, stream = job
        extension = {"cap": cap_id}
        if stream:
            return streamed(client, text, **extension)[0]
        return ask(client, text, **extension).choices[0].message.content

    solo = [run(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(run, jobs * 2))
    assert together == solo * 2
    assert solo[0] != run((jobs[0][0], CAP, False))  # the cap matters for these prompts


def _raw(
    server: ServerThread,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    chunked: bool = False,
) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        if chunked:
            chunks = iter([body or b""])
            conn.request(method, path, body=chunks, headers=headers or {}, encode_chunked=True)
        else:
            conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def _chat(**fields: Any) -> bytes:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


BAD_REQUESTS = [
    ("malformed JSON", b'{"model": "tiny-llama", "messages": [', 400, None),
    ("empty body", b"", 400, None),
    ("a JSON array", b"[]", 400, None),
    ("messages is null", _chat(messages=None), 400, None),
    ("messages is a string", _chat(messages="Hi"), 400, None),
    ("content is a number", _chat(messages=[{"role": "user", "content": 5}]), 400, None),
    ("unknown role", _chat(messages=[{"role": "tool", "content": "x"}]), 400, None),
    ("temperature is a string", _chat(temperature="hot"), 400, None),
    ("max_tokens is a string", _chat(max_tokens="5"), 400, None),
    ("stream is a string", _chat(stream="yes"), 400, None),
    ("no messages", _chat(messages=[]), 400, None),
    ("missing model", _chat(model=...), 400, None),
    ("negative max_tokens", _chat(max_tokens=-1), 400, None),
    ("max_tokens too high", _chat(max_tokens=65), 400, "max_tokens_too_large"),
    (
        "too many messages",
        _chat(messages=[{"role": "user", "content": "a"}] * 7),
        400,
        "too_many_messages",
    ),
    (
        "ends with assistant",
        _chat(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]),
        400,
        None,
    ),
    ("two user turns", _chat(messages=[{"role": "user", "content": "a"}] * 2), 400, None),
    ("n=2", _chat(n=2), 400, None),
    (
        "unknown capping experiment",
        _chat(personaspace={"cap": "layers_9:99-p1"}),
        400,
        "unknown_capping_experiment",
    ),
    ("unknown extension key", _chat(personaspace={"capp": CAP}), 400, None),
    ("layer outside the model", _chat(personaspace={"layers": [7]}), 400, None),
    ("steer too strong", _chat(personaspace={"steer": 1e6}), 400, None),
    ("steer is a string", _chat(personaspace={"steer": "lots"}), 400, None),
    (
        "context exceeded",
        _chat(messages=[{"role": "user", "content": "x" * 500}]),
        400,
        "context_length_exceeded",
    ),
    ("unknown model", _chat(model="gpt-9"), 404, "model_not_found"),
]


@pytest.mark.parametrize(
    ("body", "status", "code"), [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_requests_get_openai_style_4xx(
    server: ServerThread, body: bytes, status: int, code: str | None
) -> None:
    for stream in (False, True):
        payload = body
        if stream and body.startswith(b"{") and body.endswith(b"}"):
            data = json.loads(body)
            if isinstance(data.get("stream"), bool) or "stream" not in data:
                payload = json.dumps({**data, "stream": True}).encode()
        got, reply = _raw(
            server, "POST", "/v1/chat/completions", payload, {"Content-Type": "application/json"}
        )
        assert got == status, reply
        error = reply["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        if code is not None:
            assert error["code"] == code


def test_oversized_bodies_and_routes_are_4xx() -> None:
    limits = Limits(max_body_bytes=2000)
    with ServerThread(tiny_app(limits=limits)) as server:
        big = _chat(messages=[{"role": "user", "content": "x" * 3000}])
        status, reply = _raw(server, "POST", "/v1/chat/completions", big)
        assert (status, reply["error"]["code"]) == (413, "request_too_large")
        status, reply = _raw(server, "POST", "/v1/chat/completions", big, chunked=True)
        assert (status, reply["error"]["code"]) == (413, "request_too_large")
        status, reply = _raw(server, "POST", "/v1/chat/completions", _chat())  # under the limit
        assert status == 200 and reply["choices"][0]["message"]["role"] == "assistant"
        assert _raw(server, "GET", "/v1/chat/completions")[0] == 405
        assert _raw(server, "GET", "/v1/nothing-here")[0] == 404
        assert _raw(server, "GET", "/v1/models/gpt-9")[1]["error"]["code"] == "model_not_found"


def test_api_key_is_required_when_set_and_static_app_is_public() -> None:
    with ServerThread(tiny_app(api_key=KEY)) as server:
        good = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
        assert ask(good, "Hi", max_tokens=3).choices[0].message.role == "assistant"
        for key in ("wrong", ""):
            bad = openai.OpenAI(base_url=server.url + "/v1", api_key=key or "x", max_retries=0)
            with pytest.raises(openai.AuthenticationError, match="API key"):
                ask(bad, "Hi", max_tokens=3)
        status, reply = _raw(server, "GET", "/personaspace/info")
        assert (status, reply["error"]["code"]) == (401, "invalid_api_key")
        assert _raw(server, "POST", "/v1/chat/completions", _chat())[0] == 401
        assert _raw(server, "GET", "/health")[0] == 200
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/")
        page = conn.getresponse()
        assert page.status == 200 and b"personaspace" in page.read()
        conn.close()


def test_non_loopback_host_needs_a_key() -> None:
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("0.0.0.0", KEY)
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.org"):
        with pytest.raises(PersonaspaceError, match="no API key is set"):
            check_bind(host, None)


def test_cli_refuses_public_host_without_key(capsys: pytest.CaptureFixture[str]) -> None:
    from personaspace.cli.main import main

    assert main(["serve", "--host", "0.0.0.0", "--axis", "nowhere"]) == 2
    assert "no API key is set" in capsys.readouterr().err


def test_queue_full_is_429_and_queue_recovers() -> None:
    app = tiny_app(limits=Limits(max_pending=1))
    with ServerThread(app) as server:
        release = threading.Event()
        blocker = app.state.worker.submit(release.wait)
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.RateLimitError, match="busy"):
            ask(client, "Hi", max_tokens=3)
        release.set()
        blocker.result(timeout=10)
        assert ask(client, "Hi", max_tokens=3).choices[0].finish_reason in ("stop", "length")


def test_info_and_project_endpoints(server: ServerThread) -> None:
    status, info = _raw(server, "GET", "/personaspace/info")
    lm, axis, calibration, capping = tiny_setup()
    assert status == 200 and info["model"] == MODEL and info["layers"] == [1]
    assert info["capping"]["experiments"][0]["id"] == capping.ids[0]
    assert info["thresholds"]["p25"]["1"] == calibration.tau(1, 25)
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Ahoy."},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Storm tonight."},
    ]
    reference = {"model": "m", "turns": 2, "conversation": messages, "domain": "sea"}
    body = json.dumps({"transcript": reference, "layers": [0, 2], "per_token": True}).encode()
    status, result = _raw(server, "POST", "/personaspace/project", body)
    [expected] = project_turns(
        lm, axis, [format_conversation(lm.tokenizer, messages)], layers=[0, 2], per_token=True
    )
    assert status == 200 and result["messages"] == messages
    assert [[t["0"], t["2"]] for t in result["turns"]] == expected.turns.tolist()
    assert [len(t["text"]) for t in result["tokens"]] == [len("Ahoy."), len("Storm tonight.")]
    bad = json.dumps({"transcript": {"conversation": [{"role": "user", "content": "x"}]}})
    status, reply = _raw(server, "POST", "/personaspace/project", bad.encode())
    assert status == 400 and "no assistant turns" in reply["error"]["message"]
    status, _ = _raw(server, "POST", "/personaspace/project", b'{"transcript": []} trailing')
    assert status == 400


def test_fed_tokens_sees_each_generated_token_and_cancels_cleanly() -> None:
    lm, _, _, _ = tiny_setup()
    prompt = format_conversation(
        lm.tokenizer, [{"role": "user", "content": "Hi"}], add_generation_prompt=True
    )
    seen: list[int] = []
    with fed_tokens(lm.model, seen.append):
        [g] = generate(lm, [prompt], SamplingConfig(max_new_tokens=10), reductions=())
    assert seen == g.token_ids[: len(seen)] and len(seen) == len(g.token_ids)
    cancel = threading.Event()

    def stop_after_three(token: int) -> None:
        if len(seen) >= 3:
            cancel.set()
        seen.append(token)

    seen.clear()
    with pytest.raises(GenerationCancelled), fed_tokens(lm.model, stop_after_three, cancel):
        generate(lm, [prompt], SamplingConfig(max_new_tokens=10), reductions=())
    assert len(seen) == 4
    assert lm.model._forward_pre_hooks == {}  # nothing left behind
    [again] = generate(lm, [prompt], SamplingConfig(max_new_tokens=10), reductions=())
    assert again.token_ids == g.token_ids


def test_reply_text_deltas_add_up_to_the_cut_reply_with_stop_strings() -> None:
    lm, _, _, _ = tiny_setup()
    tok = lm.tokenizer
    ids = tok.encode("  Hello there, friend\nUser:", add_special_tokens=False)
    text = ReplyText(tok, ("\nUser:",))
    # The token completing the stop string is never fed, so never pushed.
    streamed_text = "".join(text.push(i) for i in ids[:-1])
    assert streamed_text == "Hello there, frien"  # 6 characters held back, none past the cut
    assert streamed_text + text.finish("Hello there, friend") == "Hello there, friend"
    plain = ReplyText(tok)
    assert "".join(plain.push(i) for i in tok.encode(" Hi  you ", add_special_tokens=False)) == (
        "Hi  you"
    )


def test_worker_runs_jobs_one_at_a_time_in_order() -> None:
    worker = GenerationWorker(max_pending=8)
    active, most, order = [0], [0], []
    lock = threading.Lock()

    def job(i: int) -> int:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        order.append(i)
        torch.randn(200, 200) @ torch.randn(200, 200)
        with lock:
            active[0] -= 1
        return i

    futures = [worker.submit(lambda i=i: job(i)) for i in range(8)]
    assert [f.result() for f in futures] == list(range(8))
    assert most[0] == 1 and order == list(range(8)) and worker.pending == 0
    worker.close()


def test_engine_refuses_unknown_default_cap_and_capping_without_config() -> None:
    lm, axis, _, capping = tiny_setup()
    with pytest.raises(PersonaspaceError, match="no capping experiment 'nope'"):
        ServeEngine(lm, axis, capping=capping, default_cap="nope")
    with pytest.raises(PersonaspaceError, match="needs a capping config"):
        ServeEngine(lm, axis, default_cap=CAP)
    app = create_app(ServeEngine(lm, axis))  # no calibration, no capping
    with ServerThread(app) as server:
        status, reply = _raw(
            server, "POST", "/v1/chat/completions", _chat(personaspace={"cap": CAP})
        )
        assert (status, reply["error"]["code"]) == (400, "capping_unavailable")
        status, reply = _raw(
            server, "POST", "/v1/chat/completions", _chat(personaspace={"steer": 0.1})
        )
        assert status == 400 and "calibration" in reply["error"]["message"]


def test_cli_serves_a_run_folder_and_stops_on_interrupt(tmp_path: Path) -> None:
    run = write_tiny_run(tmp_path / "run")
    model = make_tiny_model(tmp_path / "model", hidden=32)
    command = [sys.executable, "-m", "personaspace.cli.main", "serve", "--axis", str(run)]
    command += ["--model", str(model), "--port", "0", "--cap", CAP, "--no-access-log"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("web app and API at "):
                break
        url = lines[-1].split()[5].rstrip("/")
        assert f"(default cap {CAP})" in "".join(lines)
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(
            model=str(model), messages=[{"role": "user", "content": "Hi"}], max_tokens=3
        )
        assert reply.personaspace["cap"]["experiment"] == CAP  # type: ignore[attr-defined]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0


def test_server_layers_are_the_default_and_explicit_nulls_are_defaults() -> None:
    lm, axis, _, capping = tiny_setup()
    app = create_app(ServeEngine(lm, axis, capping=capping, layers=[0, 2]))
    with ServerThread(app) as server:
        status, reply = _raw(server, "POST", "/v1/chat/completions", _chat())
        assert status == 200 and reply["personaspace"]["layers"] == [0, 2]
        nulls = json.loads(_chat())
        nulls.update({"stream": None, "n": None, "personaspace": None, "stream_options": None})
        status, same = _raw(server, "POST", "/v1/chat/completions", json.dumps(nulls).encode())
        assert status == 200
        assert same["choices"][0]["message"] == reply["choices"][0]["message"]
        assert same["personaspace"]["projection"] == reply["personaspace"]["projection"]
        status, asked = _raw(
            server, "POST", "/v1/chat/completions", _chat(personaspace={"layers": [1]})
        )
        assert status == 200 and list(asked["personaspace"]["projection"]) == ["1"]
