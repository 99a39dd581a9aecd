"""Where and in what precision a model runs: ``--device``, ``--dtype`` and ``--batch-size``.

``auto`` means: the first of CUDA, Apple's MPS and the CPU that is available; bfloat16 on
GPUs, and on a CPU bfloat16 only where it is measured to run matrix products faster than
float32 (CPUs with native bf16 units, e.g. AVX512-BF16 or AMX; elsewhere PyTorch emulates
bf16 and it is slower), else float32. The CPU measurement takes a fraction of a second
and is kept in the cache folder per CPU model.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from personaspace.errors import PersonaspaceError
from personaspace.models.cache import cache_root

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
BF16_FASTER = 1.3  # bf16 is chosen on a CPU when its matmuls are at least this much faster
CPU_BATCH = 64  # the best batch size measured for the bundled models here (BENCHMARKS.md)


@dataclass(frozen=True)
class Placement:
    """A resolved device and dtype, with why (``reason``) they were chosen."""

    device: torch.device
    dtype: torch.dtype
    reason: str

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    @property
    def device_name(self) -> str:
        return self.device.type


def resolve_device(spec: str = "auto") -> torch.device:
    """The device ``spec`` names (``auto``: CUDA, then MPS, then the CPU).

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    name = spec.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind not in DEVICE_CHOICES:
        raise PersonaspaceError(
            f"device is {spec!r}", fix="use auto, cpu, cuda (or cuda:N) or mps", param="device"
        )
    if kind == "cuda" and not torch.cuda.is_available():
        raise PersonaspaceError(
            f"device is {spec!r} but no CUDA GPU is available here",
            fix="use auto or cpu (or install a CUDA build of torch on a machine with a GPU)",
            param="device",
        )
    if kind == "mps" and not torch.backends.mps.is_available():
        raise PersonaspaceError(
            f"device is {spec!r} but MPS is not available here",
            fix="use auto or cpu",
            param="device",
        )
    return torch.device(name)


def _matmul_seconds(dtype: torch.dtype, reps: int = 4) -> float:
    a = torch.randn(64, 1024).to(dtype)
    b = torch.randn(1024, 1024).to(dtype)
    a @ b  # warm up
    best = float("inf")
    for _ in range(reps):
        started = time.perf_counter()
        for _ in range(8):
            a @ b
        best = min(best, time.perf_counter() - started)
    return best


def _cpu_key() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def cpu_bf16_speedup() -> float:
    """How much faster bf16 matmuls run than fp32 ones on this CPU (measured once per CPU
    model, kept in ``$PERSONASPACE_CACHE/cpu_bf16.json``)."""
    path = cache_root() / "cpu_bf16.json"
    key = f"{_cpu_key()}|torch {torch.__version__}|threads {torch.get_num_threads()}"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), float):
        return float(known[key])
    ratio = _matmul_seconds(torch.float32) / _matmul_seconds(torch.bfloat16)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**(known if isinstance(known, dict) else {}), key: ratio}))
    except OSError:
        pass  # an unwritable cache only costs the measurement next time
    return ratio


def resolve_dtype(spec: str, device: torch.device) -> tuple[torch.dtype, str]:
    """The dtype ``spec`` names on ``device`` (``auto`` as in the module docstring), and why.

    Example:
        >>> resolve_dtype("float32", torch.device("cpu"))
        (torch.float32, 'float32 as asked')
    """
    name = spec.strip().lower()
    if name != "auto":
        if name not in DTYPES:
            raise PersonaspaceError(
                f"dtype is {spec!r}", fix="use auto, float32, bfloat16 or float16", param="dtype"
            )
        dtype = DTYPES[name]
        if device.type == "cpu" and dtype == torch.float16:
            raise PersonaspaceError(
                "float16 is not supported on the CPU here",
                fix="use bfloat16 or float32",
                param="dtype",
            )
        return dtype, f"{str(dtype).removeprefix('torch.')} as asked"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "bfloat16 (auto: a CUDA GPU with bf16)"
        return torch.float16, "float16 (auto: a CUDA GPU without bf16)"
    if device.type == "mps":
        return torch.float32, "float32 (auto: MPS)"
    speedup = cpu_bf16_speedup()
    if speedup >= BF16_FASTER:
        return torch.bfloat16, f"bfloat16 (auto: this CPU's bf16 matmuls run {speedup:.1f}x fp32)"
    return torch.float32, f"float32 (auto: this CPU's bf16 matmuls run {speedup:.2f}x fp32)"


def slow_bf16_warning(placement: Placement) -> str | None:
    """A warning when bf16 was asked for on a CPU that emulates it (with the measured cost).

    Example:
        >>> slow_bf16_warning(Placement(torch.device("cpu"), torch.float32, "x")) is None
        True
    """
    if placement.device.type != "cpu" or placement.dtype != torch.bfloat16:
        return None
    speedup = cpu_bf16_speedup()
    if speedup >= 1.0:
        return None
    return (
        f"bfloat16 on this CPU is emulated: its matmuls run {1 / speedup:.1f}x slower than "
        "float32 (measured); --dtype float32 is faster here"
    )


def resolve_placement(device: str = "auto", dtype: str = "auto") -> Placement:
    """Device and dtype for ``--device`` and ``--dtype`` (both ``auto`` by default).

    Example:
        >>> resolve_placement("cpu", "float32").dtype
        torch.float32
    """
    where = resolve_device(device)
    precision, reason = resolve_dtype(dtype, where)
    return Placement(where, precision, reason)


def check_batch_size(batch_size: int | None) -> None:
    """Refuse a batch size below 1 (``None`` means automatic)."""
    if batch_size is not None and batch_size < 1:
        raise PersonaspaceError(
            f"batch_size is {batch_size}",
            fix="use 1 or more, or leave it automatic",
            param="batch_size",
        )


def auto_batch_size(
    device: torch.device, bytes_per_row: int, limit: int = 256, floor: int = 8
) -> int:
    """A batch size for ``device``: ``CPU_BATCH`` on a CPU; on a GPU as many rows as fit in
    half its free memory at ``bytes_per_row`` (the KV cache and activations of one row),
    between ``floor`` and ``limit``.

    Example:
        >>> auto_batch_size(torch.device("cpu"), 10**6)
        64
    """
    if device.type != "cuda":
        return CPU_BATCH
    free, _ = torch.cuda.mem_get_info(device)
    return max(floor, min(limit, int(0.5 * free // max(bytes_per_row, 1))))
