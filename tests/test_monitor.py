"""Monitoring: transcript readers, `personaspace monitor`, the live API and `personaspace chat`."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_lm
from pipeline_fixtures import make_tiny_model

from personaspace.capture import SamplingConfig, capture_conversations, with_reply
from personaspace.cli.main import main
from personaspace.conversation import Message, format_conversation
from personaspace.errors import PersonaspaceError
from personaspace.fileformat import save_vectors
from personaspace.interventions import calibrate, cap
from personaspace.models import load_model
from personaspace.monitor import (
    LiveChat,
    chat_turn,
    monitor_transcripts,
    project_turns,
    read_transcripts,
    run_conversation,
    write_transcript,
)
from personaspace.monitor.transcripts import parse_transcript
from personaspace.runfolder import RunFolder, load_axis, run_folder_for
from personaspace.vectors import (
    Axis,
    build_capping_config,
    save_calibration,
    save_capping_config,
    steer_along_axis,
)

CHAT = [
    {"role": "user", "content": "Hello there"},
    {"role": "assistant", "content": "Storm tonight."},
    {"role": "user", "content": "And tomorrow?"},
    {"role": "assistant", "content": "Calm seas, I hope."},
]
SYSTEM = {"role": "system", "content": "Be a lighthouse keeper."}


def _write(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value))
    return path


def _axis(lm, seed: int = 1) -> Axis:  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    n, h = lm.adapter.n_layers, lm.adapter.hidden_size
    return Axis(lm.model_id, list(range(n)), torch.randn(n, h, generator=g), n, "test")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# --- transcript readers --------------------------------------------------------------------


def test_reads_our_format_with_exact_messages(tmp_path: Path) -> None:
    path = _write(tmp_path / "ours.json", {"messages": [SYSTEM, *CHAT], "domain": "sea", "id": 7})
    [t] = read_transcripts(path)
    assert t.messages == [
        Message("system", "Be a lighthouse keeper."),
        Message("user", "Hello there"),
        Message("assistant", "Storm tonight."),
        Message("user", "And tomorrow?"),
        Message("assistant", "Calm seas, I hope."),
    ]
    assert (t.format, t.name, t.domain, t.model, t.meta) == (
        "personaspace",
        "ours",
        "sea",
        None,
        {"id": 7},
    )
    assert t.n_assistant_turns == 2


def test_reads_openai_message_list_and_text_parts(tmp_path: Path) -> None:
    parts = [{"type": "text", "text": "Storm "}, {"type": "text", "text": "tonight."}]
    chat = [CHAT[0], {"role": "assistant", "content": parts}]
    [t] = read_transcripts(_write(tmp_path / "oa.json", chat))
    assert t.format == "openai" and t.domain is None
    assert t.messages == [Message("user", "Hello there"), Message("assistant", "Storm tonight.")]


def test_reads_reference_transcript_and_keeps_its_fields(tmp_path: Path) -> None:
    ref = {
        "model": "Qwen/Qwen3-32B",
        "turns": 2,
        "conversation": CHAT,
        "steering_config": {"experiment_id": "layers_46:54-p25", "num_interventions": 8},
        "domain": "therapy",
        "persona": "grieving widow",
        "topic": "loss",
        "auditor_model": "claude",
    }
    [t] = read_transcripts(_write(tmp_path / "ref.json", ref))
    assert (t.format, t.model, t.domain) == ("reference", "Qwen/Qwen3-32B", "therapy")
    assert t.meta == {
        "turns": 2,
        "steering_config": {"experiment_id": "layers_46:54-p25", "num_interventions": 8},
        "persona": "grieving widow",
        "topic": "loss",
        "auditor_model": "claude",
    }
    assert [m.content for m in t.messages] == [m["content"] for m in CHAT]


def test_reads_jsonl_of_mixed_formats(tmp_path: Path) -> None:
    lines = [
        json.dumps({"messages": CHAT[:2], "domain": "a"}),
        "",
        json.dumps(CHAT),
        json.dumps({"conversation": CHAT[:2], "model": "m"}),
    ]
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(lines) + "\n")
    ts = read_transcripts(path)
    assert [t.format for t in ts] == ["personaspace", "openai", "reference"]
    assert [t.name for t in ts] == ["many:1", "many:3", "many:4"]
    assert [t.source for t in ts] == [f"{path}:1", f"{path}:3", f"{path}:4"]
    assert {t.file for t in ts} == {str(path)}
    assert [t.n_assistant_turns for t in ts] == [1, 2, 1]
    # The same lines in a .json file are read as JSONL too.
    (tmp_path / "lines.json").write_text("\n".join(lines))
    assert [t.format for t in read_transcripts(tmp_path / "lines.json")] == [
        "personaspace",
        "openai",
        "reference",
    ]


def test_reads_json_list_of_transcripts(tmp_path: Path) -> None:
    path = _write(tmp_path / "two.json", [{"messages": CHAT}, {"conversation": CHAT[:2]}])
    ts = read_transcripts(path)
    assert [t.name for t in ts] == ["two:1", "two:2"]
    assert [t.source for t in ts] == [f"{path}[0]", f"{path}[1]"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("empty.json", "", "is empty"),
        ("blank.jsonl", "\n  \n", "is empty"),
        ("empty_list.json", "[]", "is empty"),
        ("bad.json", '{"messages": [', "is not valid JSON (Expecting value at line 1 column 15)"),
        ("bad.jsonl", json.dumps(CHAT) + "\n{oops\n", "bad.jsonl line 2 is not valid JSON"),
        (
            "tool.json",
            json.dumps([*CHAT[:2], {"role": "tool", "content": "x"}]),
            "message 2 has unknown role 'tool'",
        ),
        ("no_reply.json", json.dumps({"messages": [CHAT[0]]}), "has no assistant turns"),
        ("order.json", json.dumps([CHAT[1], CHAT[0]]), "message 0 is an assistant turn"),
        ("other.json", json.dumps({"text": "hi"}), "neither 'messages' nor 'conversation'"),
        ("number.json", "3", "holds a JSON int"),
    ],
)
def test_bad_transcripts_give_one_line_errors(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PersonaspaceError) as err:
        read_transcripts(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(path) in str(err.value)


def test_write_transcript_round_trips(tmp_path: Path) -> None:
    t = parse_transcript({"messages": CHAT, "domain": "sea", "persona": "keeper"}, "in.json")
    out = write_transcript(tmp_path / "out.json", [t])
    [back] = read_transcripts(out)
    assert (back.messages, back.domain, back.meta) == (t.messages, "sea", {"persona": "keeper"})
    assert len(read_transcripts(write_transcript(tmp_path / "two.json", [t, t]))) == 2


# --- a tiny run folder ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A saved tiny model and a calibrated run folder with a random axis for it."""
    root = tmp_path_factory.mktemp("monitor")
    folder = make_tiny_model(root / "model")
    lm = load_model(str(folder))
    run = root / "run"
    g = torch.Generator().manual_seed(3)
    save_vectors(
        run / "axis.safetensors",
        {"axis": torch.randn(3, 64, generator=g)},
        {"model_id": lm.model_id, "layers": [0, 1, 2], "n_layers": 3, "hidden_size": 64},
    )
    axis = load_axis(run, lm)
    convs = [
        format_conversation(lm.tokenizer, [SYSTEM, *CHAT]),
        format_conversation(lm.tokenizer, CHAT[:2]),
    ]
    cal = calibrate(lm, axis, convs, source="test conversations")
    save_calibration(run / "calibration.safetensors", cal)
    save_capping_config(
        run / "capping.safetensors", build_capping_config(axis, cal, [(0, 2)], [25, 50])
    )
    return folder, run


def _uncalibrated(tmp_path: Path, run: Path) -> Path:
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "axis.safetensors").write_bytes((run / "axis.safetensors").read_bytes())
    return bare


def test_monitor_cli_writes_what_the_library_computes(
    tiny_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, run = tiny_run
    a = _write(tmp_path / "a.json", {"messages": [SYSTEM, *CHAT], "domain": "sea"})
    b = _write(tmp_path / "b.jsonl", CHAT[:2])
    out = tmp_path / "out"
    args = ["monitor", str(a), str(b), "--axis", str(run), "--layers", "0,2", "--out", str(out)]
    assert main([*args, "--per-token", "--color-by", "domain", "--dtype", "float32"]) == 0
    printed = capsys.readouterr().out
    lm = load_model(str(folder))
    axis, cal = load_axis(run, lm), RunFolder(run).calibration()
    convs = [
        format_conversation(lm.tokenizer, [SYSTEM, *CHAT]),
        format_conversation(lm.tokenizer, CHAT[:2]),
    ]
    expected = project_turns(lm, axis, convs, layers=[0, 2], per_token=True)

    data = json.loads((out / "monitor.json").read_text())
    assert data["layers"] == [0, 2] and data["model_id"] == lm.model_id
    assert data["calibration"]["thresholds"] == {"0": cal.tau(0, 25), "2": cal.tau(2, 25)}
    got = [[list(t["projection"].values()) for t in tr["turns"]] for tr in data["transcripts"]]
    assert got == [traj.turns.tolist() for traj in expected]
    turn = data["transcripts"][0]["turns"][1]
    span = expected[0].spans[1]
    assert turn["tokens"]["text"] == list("Calm seas, I hope.")
    assert (
        turn["tokens"]["projection"]["2"] == expected[0].tokens[span.start : span.end, 1].tolist()
    )
    assert [t["domain"] for t in data["transcripts"]] == ["sea", None]

    rows = list(csv.DictReader(io.StringIO((out / "monitor.csv").read_text())))
    assert len(rows) == (2 + 1) * 2
    assert [float(r["projection"]) for r in rows[:4]] == expected[0].turns.flatten().tolist()
    assert rows[1]["threshold"] == repr(cal.tau(2, 25)) and rows[0]["domain"] == "sea"
    assert rows[4]["transcript"] == "b" and rows[4]["n_tokens"] == str(len(expected[1].spans[0]))

    assert (out / "monitor.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "p25 floor" in printed and f"{float(expected[0].turns[1, 1]):.3f}" in printed


def test_monitor_report_without_calibration(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    folder, run = tiny_run
    lm = load_model(str(folder))
    transcripts = [parse_transcript(CHAT, "c.json")]
    report = monitor_transcripts(lm, load_axis(_uncalibrated(tmp_path, run)), transcripts)
    assert report.layers == [1] and report.thresholds == {}
    assert report.to_json()["calibration"] is None
    assert "floor" not in report.table()
    assert report.table().splitlines()[1].split() == [
        "c",
        "1",
        str(len("Storm tonight.")),
        f"{float(report.items[0].trajectory.turns[0, 0]):.3f}",
    ]


def _bad_axis(run: Path, tmp_path: Path, vectors: torch.Tensor) -> Path:
    path = tmp_path / "axis.safetensors"
    save_vectors(path, {"axis": vectors}, {"layers": list(range(vectors.shape[0]))})
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("hidden", "hidden size 32"),
        ("layers", "built on a model with 5 layers"),
        ("nan", "NaN or infinite"),
        ("zero", "zero vectors at rows [1]"),
        ("layer_out", "layer 7 is out of range"),
        ("no_reply", "has no assistant turns"),
        ("role", "message 1 has unknown role 'bot'"),
        ("percentile", "--percentile is 120"),
    ],
)
def test_monitor_cli_bad_input_exits_2_and_writes_nothing(
    tiny_run: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    message: str,
) -> None:
    folder, run = tiny_run
    transcript = _write(tmp_path / "t.json", CHAT)
    axis, extra = str(run), ["--model", str(folder)]
    good = torch.randn(3, 64)
    if case == "hidden":
        axis = str(_bad_axis(run, tmp_path, torch.randn(3, 32)))
    elif case == "layers":
        axis = str(_bad_axis(run, tmp_path, torch.randn(5, 64)))
    elif case in {"nan", "zero"}:
        good[1] = float("nan") if case == "nan" else 0.0
        axis = str(_bad_axis(run, tmp_path, good))
    elif case == "layer_out":
        extra += ["--layers", "7"]
    elif case == "no_reply":
        _write(transcript, CHAT[:1])
    elif case == "role":
        _write(transcript, [CHAT[0], {"role": "bot", "content": "x"}])
    elif case == "percentile":
        extra += ["--percentile", "120"]
    out = tmp_path / "out"
    assert main(["monitor", str(transcript), "--axis", axis, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("personaspace: error:")
    assert message in err
    assert not out.exists()


# --- the live API --------------------------------------------------------------------------


def test_live_projection_equals_teacher_forced_projection() -> None:
    lm = tiny_lm()
    axis = _axis(lm)
    messages = [SYSTEM, CHAT[0]]
    config = SamplingConfig(max_new_tokens=10)
    turn = chat_turn(lm, axis, messages, layers=[0, 1, 2], sampling=config, per_token=True)
    assert len(turn.token_ids) > 0 and turn.layers == [0, 1, 2]
    [forced] = project_turns(
        lm, axis, [with_reply(turn.prompt, turn.token_ids)], layers=[0, 1, 2], per_token=True
    )
    live = torch.tensor([turn.projection[layer] for layer in (0, 1, 2)])
    assert _rel(live, forced.turns[-1]) < 1e-4
    assert turn.token_projections is not None and forced.tokens is not None
    span = forced.spans[-1]
    assert _rel(turn.token_projections, forced.tokens[span.start : span.end]) < 1e-4
    assert turn.token_texts == [lm.tokenizer.decode([i]) for i in turn.token_ids]
    assert turn.messages[-1] == Message("assistant", turn.text)
    assert turn.cap_engaged == {} and not turn.capped


def test_live_cap_counts_split_prompt_and_reply() -> None:
    lm = tiny_lm()
    axis = _axis(lm)
    u = axis.unit(1)
    prompt = format_conversation(lm.tokenizer, [CHAT[0]], add_generation_prompt=True)
    config = SamplingConfig(max_new_tokens=6)
    always = chat_turn(lm, axis, [CHAT[0]], interventions=[cap(1, u, 1e6)], sampling=config)
    fed = len(always.token_ids) + (always.finish_reason == "length")  # tokens fed back in
    assert always.cap_engaged_prompt == {1: len(prompt.input_ids)}
    assert always.cap_engaged == {1: min(fed, config.max_new_tokens)} and always.capped
    never = chat_turn(lm, axis, [CHAT[0]], interventions=[cap(1, u, -1e6)], sampling=config)
    assert never.cap_engaged == {1: 0} and never.cap_engaged_prompt == {1: 0}
    # A cap at the median prompt projection engages at exactly the prompt tokens below it.
    [plain] = capture_conversations(lm, [prompt], layers=[1], all_tokens=True)
    below = plain.tokens[:, 0] @ u
    tau = float(below.median())
    turn = chat_turn(lm, axis, [CHAT[0]], interventions=[cap(1, u, tau)], sampling=config)
    assert turn.cap_engaged_prompt == {1: int((below < tau).sum())}


def test_live_capped_projection_equals_teacher_forced_under_same_cap() -> None:
    lm = tiny_lm()
    axis = _axis(lm)
    floor = cap(1, axis.unit(1), tau=0.05)
    turn = chat_turn(
        lm,
        axis,
        [CHAT[0]],
        layers=[1, 2],
        interventions=[floor],
        sampling=SamplingConfig(max_new_tokens=8),
    )
    from personaspace.interventions import intervene

    with intervene(lm, [floor]):
        [forced] = project_turns(lm, axis, [with_reply(turn.prompt, turn.token_ids)], layers=[1, 2])
    assert _rel(torch.tensor(list(turn.projection.values())), forced.turns[-1]) < 1e-4
    assert turn.projection[1] >= 0.05 - 1e-6  # measured after the cap: at or above the floor


def test_run_conversation_yields_each_turn_as_it_completes() -> None:
    lm = tiny_lm()
    axis = _axis(lm)
    turns = run_conversation(
        lm,
        axis,
        ["Hello there", "And tomorrow?"],
        system="Be brief.",
        sampling=SamplingConfig(max_new_tokens=4),
    )
    first = next(turns)
    assert [m.role for m in first.messages] == ["system", "user", "assistant"]
    second = next(turns)
    assert second.messages[:3] == first.messages
    assert [m.content for m in second.messages[3:]] == ["And tomorrow?", second.text]
    assert list(turns) == []
    chat = LiveChat(lm, axis, sampling=SamplingConfig(max_new_tokens=4))
    chat.send("Hello there")
    chat.reset()
    assert chat.messages == [] and chat.turns == []
    with pytest.raises(PersonaspaceError, match="empty"):
        chat.send("  ")


def test_steering_needs_calibration_and_uses_its_norm(
    tiny_run: tuple[Path, Path], tmp_path: Path
) -> None:
    _, run = tiny_run
    with pytest.raises(PersonaspaceError, match="personaspace calibrate"):
        run_folder_for(_uncalibrated(tmp_path, run), "steering").calibration()
    with pytest.raises(PersonaspaceError, match="axis file"):
        run_folder_for(run / "axis.safetensors", "steering").calibration()
    cal = run_folder_for(run, "steering").calibration()
    axis = load_axis(run)
    items = steer_along_axis(axis, cal, -0.25, [0, 2])
    assert [(i.layer, i.amount) for i in items] == [
        (0, -0.25 * cal.norm(0)),
        (2, -0.25 * cal.norm(2)),
    ]
    assert torch.equal(items[1].direction, axis.unit(2))


# --- personaspace chat ---------------------------------------------------------------------


def test_chat_reads_piped_lines_and_commands(
    tiny_run: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder, run = tiny_run
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\n\n/cap off\nAgain\n/quit\nnever sent\n"))
    saved = tmp_path / "chat.json"
    args = ["chat", "--axis", str(run), "--cap", "layers_0:2-p50", "--max-new-tokens", "5"]
    assert main([*args, "--system", "Be brief.", "--save", str(saved)]) == 0
    out = capsys.readouterr().out
    assert out.count("projection at layer 1:") == 2
    assert out.count("cap layers_0:2-p50:") == 1  # shown for the first reply only
    assert "(cap layers_0:2-p50 off)" in out
    [t] = read_transcripts(saved)
    assert [m.content for m in t.messages if m.role == "user"] == ["Hello", "Again"]
    assert t.messages[0] == Message("system", "Be brief.")
    replies = [m.content for m in t.messages if m.role == "assistant"]
    assert all(r in out for r in replies) and t.model == load_model(str(folder)).model_id
    first = t.meta["turns"][0]
    assert set(first["cap_engaged"]) == {"0", "1"} and first["projection"].keys() == {"1"}


def test_chat_exits_cleanly_at_end_of_input(
    tiny_run: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, run = tiny_run
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["chat", "--axis", str(run)]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cap", "layers_9:12-p25"], "no capping experiment 'layers_9:12-p25'"),
        (["--steer", "0.1", "--bare"], "has not been calibrated"),
        (["--cap", "layers_0:2-p25", "--bare"], "has no capping.safetensors"),
        (["--layer", "1,2"], "--layer takes one layer"),
        (["--capping-config", "x.safetensors"], "no experiment"),
    ],
)
def test_chat_bad_input_exits_2(
    tiny_run: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    _, run = tiny_run
    axis = str(_uncalibrated(tmp_path, run)) if "--bare" in extra else str(run)
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\n"))
    assert main(["chat", "--axis", axis, *[e for e in extra if e != "--bare"]]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_chat_command_with_stdin_piped(tiny_run: tuple[Path, Path]) -> None:
    _, run = tiny_run
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "personaspace.cli.main",
            "chat",
            "--axis",
            str(run),
            "--max-new-tokens",
            "4",
        ],
        input="Hi\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("projection at layer 1:") == 1


# --- the real model ------------------------------------------------------------------------


@pytest.mark.integration
def test_smollm2_live_turn_matches_monitoring_of_the_same_reply(smollm2, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    axis = _axis(smollm2, seed=5)
    config = SamplingConfig(max_new_tokens=10)
    turn = chat_turn(smollm2, axis, [CHAT[0]], layers=[10, 20], sampling=config)
    live = torch.tensor([turn.projection[10], turn.projection[20]])
    [forced] = project_turns(
        smollm2, axis, [with_reply(turn.prompt, turn.token_ids)], layers=[10, 20]
    )
    assert _rel(live, forced.turns[-1]) < 1e-4
    # Saved as a transcript and monitored from text, the greedy reply re-tokenizes to the same
    # tokens, so `personaspace monitor` reports the value the live chat showed.
    path = write_transcript(tmp_path / "t.json", [parse_transcript(turn.messages, "live")])
    report = monitor_transcripts(smollm2, axis, read_transcripts(path), layers=[10, 20])
    assert report.items[0].trajectory.spans[0].end - report.items[0].trajectory.spans[0].start == (
        len(turn.token_ids)
    )
    assert _rel(live, report.items[0].trajectory.turns[0]) < 1e-4


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_an_axis_with_too_few_layers_is_refused(
    tiny_run: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    suffix: str,
) -> None:
    # A raw [2, hidden] tensor (no layer list) for the 3-layer model: the reference layout is
    # one row per layer, so a shorter one is another model's axis.
    folder, _ = tiny_run
    path = tmp_path / f"short{suffix}"
    if suffix == ".pt":
        torch.save(torch.randn(2, 64), path)
    else:
        save_vectors(path, {"axis": torch.randn(2, 64)}, {})
    transcript = _write(tmp_path / "t.json", CHAT)
    out = tmp_path / "out"
    args = ["monitor", str(transcript), "--axis", str(path), "--model", str(folder)]
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "built on a model with 2 layers" in err and "has 3" in err
    assert not out.exists()


def test_a_transcript_beyond_the_context_is_refused_before_any_forward_pass(
    tiny_run: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder, run = tiny_run  # the tiny model reads at most 512 tokens (one per character)
    long_reply = {"role": "assistant", "content": "a" * 600}
    transcript = _write(tmp_path / "long.json", [CHAT[0], long_reply])

    def no_forward(*args: object, **kwargs: object) -> None:
        raise AssertionError("a forward pass ran")

    monkeypatch.setattr("personaspace.capture.teacher.teacher_forward", no_forward)
    out = tmp_path / "out"
    args = ["monitor", str(transcript), "--axis", str(run), "--model", str(folder)]
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "long.json: the transcript has" in err and "reads at most 512" in err
    n_tokens = int(err.split("has ")[1].split(" tokens")[0])
    assert n_tokens > 600 and not out.exists()
