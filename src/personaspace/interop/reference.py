"""The reference release's layouts: raw ``[n_layers, hidden]`` tensors in ``.pt`` files.

Reading goes through ``torch.load(weights_only=True)`` (``fileformat.load_vectors``), so a
file holding anything but tensors and plain containers is refused, never executed.
Writing produces the same layout: ``axis.pt``, ``default.pt``, ``role_vectors/<role>.pt``,
``trait_vectors/<trait>.pt``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from personaspace.errors import PersonaspaceError
from personaspace.fileformat import atomic_path, load_vectors


def read_tensor(path: str | Path) -> torch.Tensor:
    """One raw tensor from a reference ``.pt`` (or one-tensor safetensors) file."""
    tensors, _ = load_vectors(path)
    if len(tensors) != 1:
        raise PersonaspaceError(
            f"{path} holds {len(tensors)} tensors, not one", fix="pass a single-tensor file"
        )
    return next(iter(tensors.values())).float()


def read_vector_folder(folder: str | Path) -> dict[str, torch.Tensor]:
    """All ``*.pt`` files of a folder by stem (role or trait vectors)."""
    root = Path(folder)
    if not root.is_dir():
        raise PersonaspaceError(f"no such folder: {root}", fix="check the path")
    return {p.stem: read_tensor(p) for p in sorted(root.glob("*.pt"))}


def _save(path: Path, tensor: torch.Tensor) -> None:
    with atomic_path(path) as tmp:
        torch.save(tensor.detach().clone().contiguous(), tmp)


def write_reference_layout(
    out: str | Path,
    *,
    axis: torch.Tensor,
    default: torch.Tensor,
    roles: dict[str, torch.Tensor],
    traits: dict[str, torch.Tensor],
) -> Path:
    """Write our vectors in the reference layout (plain tensors only)."""
    root = Path(out)
    _save(root / "axis.pt", axis)
    _save(root / "default.pt", default)
    for name, v in roles.items():
        _save(root / "role_vectors" / f"{name}.pt", v)
    for name, v in traits.items():
        _save(root / "trait_vectors" / f"{name}.pt", v)
    return root
