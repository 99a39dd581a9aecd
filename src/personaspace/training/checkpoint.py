"""Checkpoints of a training run: trainable weights, optimizer state, RNG state, counters.

A checkpoint is a folder ``checkpoints/step-NNNNNN/`` written under a temporary name and
renamed when complete, so a kill at any moment leaves either the whole checkpoint or
none. Tensors are safetensors; the counters and loss history are JSON. Nothing is
pickled: the optimizer state is flattened to named tensors and rebuilt on load.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from personaspace.errors import PersonaspaceError
from personaspace.fileformat import read_json, write_json

WEIGHTS = "weights.safetensors"
OPTIMIZER = "optimizer.safetensors"
RNG = "rng.safetensors"
STATE = "state.json"
_STEP_DIR = re.compile(r"^step-(\d{6,})$")


@dataclass
class TrainState:
    """Where a run is: optimizer steps done, and the loss and throughput of each step."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "losses": self.losses,
            "tokens": self.tokens,
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainState:
        return cls(
            int(data["step"]),
            [float(x) for x in data["losses"]],
            [int(x) for x in data["tokens"]],
            float(data.get("seconds", 0.0)),
        )


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:06d}"


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters that train, by name."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _optimizer_tensors(optimizer: torch.optim.Optimizer, names: list[str]) -> dict[str, Any]:
    by_param = {id(p): n for n, p in zip(names, _params(optimizer))}
    tensors = {}
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{by_param[id(param)]}::{key}"] = value.detach().cpu().contiguous()
    return tensors


def _params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def save_checkpoint(
    root: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: TrainState
) -> Path:
    """Write the checkpoint of ``state.step`` under ``root`` (atomically, as a folder).

    Example:
        >>> save_checkpoint(Path("runs/tune-x/checkpoints"), model, opt, state)  # doctest: +SKIP
        PosixPath('runs/tune-x/checkpoints/step-000050')
    """
    target = step_dir(root, state.step)
    tmp = root / f".{target.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    params = trainable(model)
    save_file({n: p.detach().cpu().contiguous() for n, p in params.items()}, str(tmp / WEIGHTS))
    save_file(_optimizer_tensors(optimizer, list(params)), str(tmp / OPTIMIZER))
    save_file(_rng_states(), str(tmp / RNG))
    write_json(tmp / STATE, state.to_json())
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def _rng_states() -> dict[str, torch.Tensor]:
    """The CPU generator's state and, on CUDA, each device's (dropout draws from them)."""
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            states[f"cuda:{index}"] = state
    return states


def _restore_rng(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["cpu"])
    cuda = [states[k] for k in sorted(states) if k.startswith("cuda:")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root``, if any."""
    if not root.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))]
    complete = [(s, p) for s, p in found if (p / STATE).is_file()]
    return max(complete)[1] if complete else None


def load_checkpoint(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> TrainState:
    """Put the checkpoint in ``folder`` back into ``model``, ``optimizer`` and the RNG.

    Example:
        >>> state = load_checkpoint(latest_checkpoint(root), model, opt)  # doctest: +SKIP
    """
    params = trainable(model)
    weights = load_file(str(folder / WEIGHTS))
    if set(weights) != set(params):
        raise PersonaspaceError(
            f"the checkpoint {folder} holds other trainable weights than this run",
            fix="resume with the settings that wrote it, or start in a new --out folder",
        )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(weights[name])
    saved = load_file(str(folder / OPTIMIZER))
    for name, param in params.items():
        entries = {k.split("::", 1)[1]: v for k, v in saved.items() if k.split("::")[0] == name}
        if entries:
            optimizer.state[param] = {
                k: (v.to(param.device) if v.dim() > 0 else v) for k, v in entries.items()
            }
    _restore_rng(load_file(str(folder / RNG)))
    return TrainState.from_json(read_json(folder / STATE))


def prune_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest complete checkpoints (``keep >= 1``)."""
    found = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)))
    for _, path in found[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
