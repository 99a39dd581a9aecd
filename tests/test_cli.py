"""The command line: version, help, listing, the demo, and exit status 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from personaspace import __version__
from personaspace.cli.main import main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "personaspace.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_version_and_help() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"personaspace {__version__}"
    assert "models" in run_cli("--help").stdout


def test_models_lists_both_bundled_models(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["models", "--json"]) == 0
    rows = {r["alias"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["smollm2-135m-instruct"]["kind"] == "chat"
    assert rows["smollm2-135m-instruct"]["layers"] == 30
    assert rows["smollm2-135m-instruct"]["hidden_size"] == 576
    assert rows["gemma-3-270m"]["kind"] == "base"
    assert rows["gemma-3-270m"]["layers"] == 18


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["capture", "--model", "nope", "--out", "x.safetensors", "hi"], "unknown model 'nope'"),
        (["capture", "--layers", "99", "--out", "x.safetensors", "hi"], "layer 99 is out of range"),
        (["capture", "--layers", "a,b", "--out", "x.safetensors", "hi"], "not a comma-separated"),
        (["capture", "--max-new-tokens", "0", "--out", "x.safetensors", "hi"], "max_new_tokens"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, message, tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = run_cli(*args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("personaspace: error")]
    assert len(lines) == 1 and message in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.integration
def test_demo_writes_outputs(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--max-new-tokens", "6"]) == 0
    from personaspace.fileformat import load_vectors

    tensors, meta = load_vectors(out / "activations.safetensors")
    assert tensors["response_mean"].shape == (12, 30, 576)
    assert meta["model_id"] == "smollm2-135m-instruct" and len(meta["personas"]) == 12
    assert len((out / "replies.jsonl").read_text().splitlines()) == 12
    assert "wrote" in capsys.readouterr().out
