"""Read a finished axis run (ours) or a reference-layout folder back as vectors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from personaspace.errors import PersonaspaceError
from personaspace.fileformat import load_vectors, read_json
from personaspace.interop.reference import read_tensor, read_vector_folder


@dataclass
class RunVectors:
    """The vectors of a run, each ``[len(layers), hidden]``."""

    model_id: str
    layers: list[int]
    axis: torch.Tensor
    default: torch.Tensor | None
    roles: dict[str, torch.Tensor]
    traits: dict[str, torch.Tensor]


def load_run(path: str | Path) -> RunVectors:
    """Our run folder, a reference-layout folder (``axis.pt`` ...), or a lone axis file.

    Example:
        >>> run = load_run("runs/axis-smollm2-135m-instruct-quick")  # doctest: +SKIP
        >>> run.axis.shape  # doctest: +SKIP
        torch.Size([30, 576])
    """
    root = Path(path)
    if root.is_file():
        axis = read_tensor(root)
        return RunVectors("unknown", list(range(axis.shape[0])), axis, None, {}, {})
    if (root / "axis.safetensors").is_file():
        tensors, meta = load_vectors(root / "axis.safetensors")
        roles = load_vectors(root / "vectors" / "roles.safetensors")[0]
        default = load_vectors(root / "vectors" / "default.safetensors")[0]["default"]
        traits_file = root / "vectors" / "traits.safetensors"
        traits = load_vectors(traits_file)[0] if traits_file.is_file() else {}
        return RunVectors(
            meta["model_id"], list(meta["layers"]), tensors["axis"], default, roles, traits
        )
    if (root / "axis.pt").is_file():
        axis = read_tensor(root / "axis.pt")
        default = read_tensor(root / "default.pt") if (root / "default.pt").is_file() else None
        roles = (
            read_vector_folder(root / "role_vectors") if (root / "role_vectors").is_dir() else {}
        )
        traits = (
            read_vector_folder(root / "trait_vectors") if (root / "trait_vectors").is_dir() else {}
        )
        model_id = "unknown"
        if (root / "summary.json").is_file():
            model_id = read_json(root / "summary.json").get("model_id", model_id)
        return RunVectors(model_id, list(range(axis.shape[0])), axis, default, roles, traits)
    raise PersonaspaceError(
        f"{root} is neither an axis run folder nor an axis file",
        fix="pass the --out folder of `personaspace axis`, a reference folder with axis.pt, "
        "or an axis .pt/.safetensors file",
    )
