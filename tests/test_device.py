"""--device, --dtype and --batch-size: resolution, refusals in one line, the slow-bf16 warning."""

from __future__ import annotations

import pytest
import torch

from personaspace import PersonaspaceError
from personaspace.cli.main import main
from personaspace.models import device as device_mod
from personaspace.models.device import (
    auto_batch_size,
    check_batch_size,
    resolve_device,
    resolve_dtype,
    resolve_placement,
    slow_bf16_warning,
)


def test_auto_resolves_to_what_is_here() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_refused() -> None:
    with pytest.raises(PersonaspaceError, match="no CUDA GPU is available") as err:
        resolve_device("cuda")
    assert err.value.param == "device"


def test_unknown_device_and_dtype_are_refused() -> None:
    with pytest.raises(PersonaspaceError, match="device is 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(PersonaspaceError, match="dtype is 'int8'"):
        resolve_dtype("int8", torch.device("cpu"))
    with pytest.raises(PersonaspaceError, match="float16 is not supported on the CPU"):
        resolve_dtype("float16", torch.device("cpu"))


def test_auto_dtype_on_the_cpu_follows_the_measured_bf16_speed(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(device_mod, "cpu_bf16_speedup", lambda: 2.5)
    assert resolve_dtype("auto", torch.device("cpu"))[0] == torch.bfloat16
    monkeypatch.setattr(device_mod, "cpu_bf16_speedup", lambda: 0.3)
    dtype, reason = resolve_dtype("auto", torch.device("cpu"))
    assert dtype == torch.float32 and "0.30x" in reason
    warning = slow_bf16_warning(resolve_placement("cpu", "bfloat16"))
    assert warning is not None and "3.3x slower than float32 (measured)" in warning
    assert slow_bf16_warning(resolve_placement("cpu", "float32")) is None


def test_batch_size() -> None:
    check_batch_size(None)
    check_batch_size(3)
    with pytest.raises(PersonaspaceError, match="batch_size is 0") as err:
        check_batch_size(0)
    assert err.value.param == "batch_size"
    assert auto_batch_size(torch.device("cpu"), 10**9) == device_mod.CPU_BATCH


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu"], "--device is 'tpu': use auto, cpu, cuda"),
        (["--batch-size", "0"], "--batch-size is 0: use 1 or more, or leave it automatic"),
    ],
)
def test_the_cli_refuses_in_one_line_naming_the_option(capsys, args, message) -> None:  # type: ignore[no-untyped-def]
    assert main(["capture", "--out", "x.safetensors", *args, "hi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_an_unknown_dtype_is_an_argument_error(capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exit_code:
        main(["capture", "--out", "x.safetensors", "--dtype", "int8", "hi"])
    assert exit_code.value.code == 2
    assert "invalid choice: 'int8'" in capsys.readouterr().err


def test_slow_bf16_is_warned_about_on_stderr(monkeypatch, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pipeline_fixtures import make_tiny_model

    monkeypatch.setattr(device_mod, "cpu_bf16_speedup", lambda: 0.5)
    model = make_tiny_model(tmp_path / "model")
    out = tmp_path / "c.safetensors"
    args = ["capture", "--model", str(model), "--dtype", "bfloat16", "--max-new-tokens", "2"]
    assert main([*args, "--device", "cpu", "--out", str(out), "hi"]) == 0
    err = capsys.readouterr().err
    assert "warning: bfloat16 on this CPU is emulated: its matmuls run 2.0x slower" in err
