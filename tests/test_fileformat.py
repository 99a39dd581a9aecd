"""The vector file format: round trips, safe loading, atomic writes."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from personaspace import PersonaspaceError
from personaspace.fileformat import (
    _UMASK,
    atomic_write,
    load_vectors,
    save_vectors,
    write_json,
)


def test_round_trip_keeps_tensors_and_metadata(tmp_path) -> None:  # type: ignore[no-untyped-def]
    axis = torch.randn(4, 8)
    path = save_vectors(
        tmp_path / "a.safetensors",
        {"axis": axis},
        {"model_id": "m", "layers": [0, 1, 2, 3], "hidden_size": 8},
    )
    tensors, meta = load_vectors(path)
    assert torch.equal(tensors["axis"], axis)
    assert meta["layers"] == [0, 1, 2, 3] and meta["personaspace_version"]


def test_pt_files_load_through_weights_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    raw = torch.randn(3, 5)
    torch.save(raw, tmp_path / "axis.pt")
    tensors, meta = load_vectors(tmp_path / "axis.pt")
    assert torch.equal(tensors["vector"], raw) and meta == {"source": "pt"}
    torch.save({"a": raw, "b": raw * 2}, tmp_path / "two.pt")
    assert set(load_vectors(tmp_path / "two.pt")[0]) == {"a", "b"}


class Payload:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("this must never run",))


def test_pickled_objects_are_refused_not_executed(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump(Payload(), handle)
    with pytest.raises(PersonaspaceError, match="not a plain tensor file"):
        load_vectors(path)
    assert "must never run" not in capsys.readouterr().out


def test_corrupt_safetensors_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 20)
    with pytest.raises(PersonaspaceError, match="not a readable safetensors file"):
        load_vectors(bad)


def test_failed_write_leaves_nothing_behind(tmp_path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "out.json"
    write_json(target, {"kept": True})
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text().strip().startswith("{") and "kept" in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_write_json_writes_null_for_nan_and_infinity(tmp_path) -> None:  # type: ignore[no-untyped-def]
    nan, inf = float("nan"), float("inf")
    data = {"ci": [nan, 0.5], "deep": {"x": (inf, -inf)}, "ok": 1, "s": "NaN"}
    write_json(tmp_path / "x.json", data)
    text = (tmp_path / "x.json").read_text()

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} written")

    back = json.loads(text, parse_constant=refuse)
    assert back == {"ci": [None, 0.5], "deep": {"x": [None, None]}, "ok": 1, "s": "NaN"}


def test_atomic_writes_get_the_usual_file_mode(tmp_path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~_UMASK


def test_refusing_a_pickle_prints_one_line_and_no_torch_warning(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump(Payload(), handle)
    (tmp_path / "x.json").write_text(
        '[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]'
    )
    result = subprocess.run(
        [sys.executable, "-m", "personaspace.cli.main", "monitor", "x.json", "--axis", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**__import__("os").environ, "PYTHONWARNINGS": "default"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "Warning" not in result.stderr


def test_load_pt_swallows_torch_warnings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import warnings

    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump(Payload(), handle)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(PersonaspaceError, match="not a plain tensor file"):
            load_vectors(path)
    assert caught == []
