"""The one file-format module: vectors as safetensors with JSON metadata; JSON written atomically.

A vector file holds named tensors (e.g. ``response_mean`` ``[n, layers, hidden]``) and, in
the safetensors header, one JSON document under the key ``personaspace`` with the model id,
layer indices, hidden size, reduction, counts and the personaspace version.

Files from other tools in ``.pt`` form are read with ``torch.load(weights_only=True)``,
which refuses anything but tensors and plain containers: nothing is ever unpickled.
Every write goes to a temporary file in the same folder and is renamed into place, so a
crash never leaves a half-written file under the real name.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from personaspace.errors import PersonaspaceError

METADATA_KEY = "personaspace"


def _read_umask() -> int:
    # Read once, at import: os.umask can only be read by setting it, which is not
    # thread-safe, and writes may come from several threads (the server).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed over ``path`` when the block succeeds.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.bin"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_bytes(b"ok")
        >>> target.read_bytes()
        b'ok'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; rename it over ``path`` only on success.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
        >>> with atomic_write(target) as f:
        ...     _ = f.write("done")
        >>> target.read_text()
        'done'
    """
    with atomic_path(path) as tmp, open(tmp, mode) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def finite_json(data: Any) -> Any:
    """``data`` with every NaN or infinite float (at any depth) replaced by ``None``.

    JSON has no NaN or Infinity; Python's ``json`` would write them as bare words that
    strict readers refuse.

    Example:
        >>> finite_json({"a": float("nan"), "b": [1.5, float("-inf")], "c": (2, "x")})
        {'a': None, 'b': [1.5, None], 'c': [2, 'x']}
    """
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, Mapping):
        return {k: finite_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_json(v) for v in data]
    return data


def finite_or_none(value: float) -> float | None:
    """``value`` as a float, or ``None`` when it is NaN or infinite (JSON has neither).

    Example:
        >>> finite_or_none(1.5), finite_or_none(float("nan")), finite_or_none(float("inf"))
        (1.5, None, None)
    """
    number = float(value)
    return number if math.isfinite(number) else None


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically; NaN and infinities become ``null``."""
    with atomic_write(path) as handle:
        json.dump(finite_json(data), handle, indent=2, ensure_ascii=False, allow_nan=False)
        handle.write("\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file, with a one-line error naming the file on failure."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise PersonaspaceError(f"no such file: {path}", fix="check the path") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PersonaspaceError(
            f"{path} is not valid JSON ({err})", fix="fix or regenerate it"
        ) from err


def save_vectors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]
) -> Path:
    """Save named tensors with JSON metadata as one safetensors file (atomically).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "v.safetensors"
        >>> _ = save_vectors(p, {"axis": torch.ones(2, 3)}, {"model_id": "m", "layers": [0, 1]})
        >>> tensors, meta = load_vectors(p)
        >>> tensors["axis"].shape, meta["model_id"]
        (torch.Size([2, 3]), 'm')
    """
    from personaspace import __version__

    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise PersonaspaceError(f"'{name}' is not a tensor", fix="pass torch tensors")
    meta = {**metadata, "personaspace_version": __version__}
    header = {METADATA_KEY: json.dumps(meta, ensure_ascii=False)}
    target = Path(path)
    with atomic_path(target) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), header)
    return target


def load_vectors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a vector file: ours (safetensors) or a raw tensor / dict of tensors in ``.pt``.

    ``.pt`` files go through ``torch.load(weights_only=True)``; their metadata is only
    ``{"source": "pt"}``. A single tensor is returned under the name ``"vector"``.
    """
    source = Path(path)
    if not source.is_file():
        raise PersonaspaceError(f"no such file: {source}", fix="check the path")
    if source.suffix in {".pt", ".pth", ".bin"}:
        return _load_pt(source), {"source": "pt"}
    try:
        tensors = load_file(str(source))
        from safetensors import safe_open

        with safe_open(str(source), "pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise PersonaspaceError(
            f"{source} is not a readable safetensors file ({err})",
            fix="regenerate it, or pass a .pt file of tensors",
        ) from err
    try:
        meta = json.loads(header.get(METADATA_KEY, "{}"))
    except json.JSONDecodeError as err:
        raise PersonaspaceError(
            f"{source} has corrupt personaspace metadata", fix="regenerate the file"
        ) from err
    return tensors, meta


def load_pt(source: str | Path, what: str = "tensor file") -> Any:
    """The plain contents of a ``.pt`` file (tensors, numbers, strings, lists, dicts), read
    with ``torch.load(weights_only=True)``: anything else is refused, never executed.

    torch's own warnings about the file are not shown: the one-line error says it all.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.pt"
        >>> torch.save({"a": torch.ones(2)}, p)
        >>> load_pt(p)["a"].tolist()
        [1.0, 1.0]
    """
    path = Path(source)
    if not path.is_file():
        raise PersonaspaceError(f"no such file: {path}", fix="check the path")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # what weights_only raises for anything unsafe
        raise PersonaspaceError(
            f"{path} is not a plain {what} (it holds pickled Python objects)",
            fix="only tensors, numbers, strings, lists and dicts are read; nothing is unpickled",
        ) from err
    except Exception as err:  # a truncated or foreign file
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise PersonaspaceError(
            f"{path} is not a plain {what} ({first})",
            fix="only tensors, numbers, strings, lists and dicts are read; nothing is unpickled",
        ) from err


def _load_pt(source: Path) -> dict[str, torch.Tensor]:
    obj = load_pt(source)
    if isinstance(obj, torch.Tensor):
        return {"vector": obj}
    if isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k): v for k, v in obj.items()}
    raise PersonaspaceError(
        f"{source} holds a {type(obj).__name__}, not tensors",
        fix="save a tensor or a dict of tensors",
    )
