"""Synthetic persona spaces and run folders for the compare and ladder tests."""

from __future__ import annotations

from pathlib import Path

import torch

from personaspace.analysis.compare import ComparedRun
from personaspace.fileformat import save_vectors, write_json

N_ROLES = 12
NAMES = [f"role_{i:02d}" for i in range(N_ROLES)]


def synthetic(
    hidden: int = 8, layers: int = 3, order: list[int] | None = None, names: list[str] = NAMES
) -> dict[str, torch.Tensor]:
    """Role vectors whose projection on e0 is 1..n (in ``order``), with small other parts.

    The default sits at mean + 5 e0, so the axis (default - mean role) is exactly 5 e0 at
    every layer and each role's projection on it is its position along e0.
    """
    gen = torch.Generator().manual_seed(0)
    order = order if order is not None else list(range(len(names)))
    vectors = {}
    for slot, name in enumerate(names):
        v = torch.zeros(layers, hidden)
        v[:, 0] = float(order[slot] + 1)
        v[:, 1:] = 0.01 * torch.randn(layers, hidden - 1, generator=gen)
        vectors[name] = v
    return vectors


def make_run(label: str, roles: dict[str, torch.Tensor], **kw: object) -> ComparedRun:
    stack = torch.stack(list(roles.values()))
    mean = stack.mean(0)
    default = mean.clone()
    default[:, 0] += 5.0
    layers, hidden = mean.shape
    fields = dict(
        label=label,
        model_id=label,
        layers=list(range(layers)),
        n_layers=layers,
        hidden_size=hidden,
        analysis_layer=layers // 2,
        axis=default - mean,
        default=default,
        roles=roles,
    )
    fields.update(kw)
    return ComparedRun(**fields)  # type: ignore[arg-type]


def write_run(folder: Path, run: ComparedRun) -> Path:
    meta = {"model_id": run.model_id, "layers": run.layers, "hidden_size": run.hidden_size}
    save_vectors(folder / "vectors" / "roles.safetensors", run.roles, meta)
    save_vectors(folder / "vectors" / "default.safetensors", {"default": run.default}, meta)
    save_vectors(
        folder / "axis.safetensors",
        {"axis": run.axis},
        {**meta, "analysis_layer": run.analysis_layer, "n_layers": run.n_layers},
    )
    write_json(
        folder / "config.json",
        {
            "config": {"model": run.model_id, "catalogue": run.catalogue, "preset": "quick"},
            "model_id": run.model_id,
            "n_layers": run.n_layers,
            "hidden_size": run.hidden_size,
            "chat_tuned": False,
        },
    )
    return folder
