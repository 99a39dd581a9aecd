"""Capping configs: named experiments, each a set of (layer, direction, floor) caps.

Our file is safetensors: one unit direction per named vector, and in the JSON metadata
``{"experiments": [{"id", "interventions": [{"vector", "layer", "tau"}]}], ...}``. An
experiment id says what it caps: ``layers_12:20-p25`` caps layers 12..19 (a half-open
range, as in Python) at the 25th percentile of the calibration projections.

The reference release's configs (``.pt``, read with ``weights_only=True`` only) store
vectors that point *away* from the Assistant with an *upper* bound ``cap`` on the
projection on them. ``h . v_hat <= cap`` is the same constraint as
``h . (-v_hat) >= -cap``, so on import each vector is negated and normalised and each cap
becomes the floor ``tau = -cap`` (the cap is read as a bound on the projection on the
normalised vector).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from personaspace.errors import PersonaspaceError
from personaspace.fileformat import load_pt, load_vectors, save_vectors
from personaspace.vectors.axis import Axis
from personaspace.vectors.calibration import Calibration
from personaspace.vectors.intervention import Intervention, Scope, cap, unit_direction

EXPERIMENT_ID = re.compile(r"^layers_(\d+):(\d+)-p(\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class CapStep:
    """One cap of an experiment: the named direction, its layer and its floor."""

    vector: str
    layer: int
    tau: float


@dataclass(frozen=True)
class CapExperiment:
    id: str
    steps: tuple[CapStep, ...]

    @property
    def layers(self) -> list[int]:
        return [s.layer for s in self.steps]


@dataclass(frozen=True, eq=False)
class CappingConfig:
    """Unit directions by name and the experiments that use them."""

    vectors: dict[str, torch.Tensor]
    experiments: tuple[CapExperiment, ...]
    model_id: str = "unknown"
    source: str = ""

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.experiments]

    def experiment(self, experiment_id: str) -> CapExperiment:
        for item in self.experiments:
            if item.id == experiment_id:
                return item
        raise PersonaspaceError(
            f"no capping experiment '{experiment_id}' in {self.source or 'the config'}",
            fix=f"choose one of: {', '.join(self.ids)}",
        )

    def interventions(self, experiment_id: str, scope: Scope = "all") -> list[Intervention]:
        """The caps of one experiment, ready for ``intervene``.

        Example:
            >>> cfg = CappingConfig({"a": torch.tensor([1.0, 0.0])},
            ...                     (CapExperiment("x", (CapStep("a", 3, 0.5),)),))
            >>> [(i.kind, i.layer, i.amount) for i in cfg.interventions("x")]
            [('cap', 3, 0.5)]
        """
        return [
            cap(s.layer, self.vectors[s.vector], s.tau, scope)
            for s in self.experiment(experiment_id).steps
        ]


def experiment_id(start: int, stop: int, percentile: float) -> str:
    """``layers_{start}:{stop}-p{percentile}`` (half-open layer range).

    Example:
        >>> experiment_id(12, 20, 25)
        'layers_12:20-p25'
    """
    pct = f"{percentile:g}"
    return f"layers_{start}:{stop}-p{pct}"


def parse_layer_range(text: str) -> tuple[int, int]:
    """``"12:20"`` -> ``(12, 20)``, a half-open range of decoder blocks.

    Example:
        >>> parse_layer_range("12:20")
        (12, 20)
    """
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if not match or int(match[1]) >= int(match[2]):
        raise PersonaspaceError(
            f"'{text}' is not a layer range", fix="write START:STOP with START < STOP, e.g. 12:20"
        )
    return int(match[1]), int(match[2])


def build_capping_config(
    axis: Axis,
    calibration: Calibration,
    ranges: Sequence[tuple[int, int]],
    percentiles: Sequence[float],
) -> CappingConfig:
    """One experiment per (layer range, percentile): caps on the unit axis at each layer.

    Example:
        >>> cfg = build_capping_config(axis, cal, [(12, 20)], [25])  # doctest: +SKIP
        >>> cfg.ids  # doctest: +SKIP
        ['layers_12:20-p25']
    """
    vectors: dict[str, torch.Tensor] = {}
    experiments = []
    for start, stop in ranges:
        for layer in range(start, stop):
            if layer not in axis.layers or layer not in calibration.layers:
                raise PersonaspaceError(
                    f"layer {layer} of range {start}:{stop} is not in the axis/calibration",
                    fix=f"choose layers within {axis.layers[0]}..{axis.layers[-1]}",
                )
            vectors[f"axis.{layer}"] = axis.unit(layer)
        for pct in percentiles:
            steps = tuple(
                CapStep(f"axis.{layer}", layer, calibration.tau(layer, pct))
                for layer in range(start, stop)
            )
            experiments.append(CapExperiment(experiment_id(start, stop, pct), steps))
    return CappingConfig(vectors, tuple(experiments), axis.model_id, "built")


def save_capping_config(path: str | Path, config: CappingConfig) -> Path:
    """Write a capping config as safetensors + JSON metadata (atomically)."""
    meta = {
        "kind": "capping_config",
        "model_id": config.model_id,
        "convention": "floor: h <- h + max(tau - h.u, 0) u, u the unit vector toward the Assistant",
        "experiments": [
            {
                "id": e.id,
                "interventions": [
                    {"vector": s.vector, "layer": s.layer, "tau": s.tau} for s in e.steps
                ],
            }
            for e in config.experiments
        ],
    }
    return save_vectors(path, config.vectors, meta)


def _bad(source: Path, what: str) -> PersonaspaceError:
    return PersonaspaceError(
        f"{source} is not a valid capping config ({what})",
        fix="regenerate it with `personaspace calibrate`, or pass a reference config",
    )


def _experiments(
    source: Path, raw: Any, layer_of: dict[str, int], floor: bool
) -> list[CapExperiment]:
    if not isinstance(raw, list) or not raw:
        raise _bad(source, "'experiments' is not a non-empty list")
    experiments = []
    for exp in raw:
        if not isinstance(exp, dict) or not isinstance(exp.get("id"), str):
            raise _bad(source, "an experiment has no string 'id'")
        steps = []
        for step in exp.get("interventions") or []:
            if not isinstance(step, dict) or step.get("vector") not in layer_of:
                raise _bad(source, f"experiment '{exp['id']}' names an unknown vector")
            value = step.get("tau" if floor else "cap")
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = float(value)
            if not isinstance(value, int | float) or value != value:
                raise _bad(source, f"experiment '{exp['id']}' has a non-numeric threshold")
            name = str(step["vector"])
            steps.append(CapStep(name, layer_of[name], float(value) if floor else -float(value)))
        if not steps:
            raise _bad(source, f"experiment '{exp['id']}' has no interventions")
        experiments.append(CapExperiment(exp["id"], tuple(steps)))
    return experiments


def read_reference_capping(path: str | Path) -> dict[str, Any]:
    """A reference capping config: ``{"vectors": {name: {"vector", "layer"}}, "experiments":
    [{"id", "interventions": [{"vector", "cap"}]}]}``, loaded with ``weights_only=True``."""
    source = Path(path)
    data = load_pt(source, "capping config")
    if not isinstance(data, dict) or "vectors" not in data or "experiments" not in data:
        raise PersonaspaceError(
            f"{source} lacks 'vectors' and 'experiments'", fix="pass a reference capping config"
        )
    return data


def _from_reference(source: Path) -> CappingConfig:
    data = read_reference_capping(source)
    raw_vectors = data["vectors"]
    if not isinstance(raw_vectors, dict) or not raw_vectors:
        raise _bad(source, "'vectors' is not a non-empty dict")
    vectors, layer_of = {}, {}
    for name, entry in raw_vectors.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("vector"), torch.Tensor):
            raise _bad(source, f"vector '{name}' has no tensor")
        if not isinstance(entry.get("layer"), int):
            raise _bad(source, f"vector '{name}' has no integer layer")
        try:
            vectors[str(name)] = -unit_direction(entry["vector"], f"vector '{name}'")
        except PersonaspaceError as err:
            raise _bad(source, err.problem) from err
        layer_of[str(name)] = int(entry["layer"])
    experiments = _experiments(source, data["experiments"], layer_of, floor=False)
    return CappingConfig(vectors, tuple(experiments), "unknown", str(source))


def load_capping_config(path: str | Path) -> CappingConfig:
    """Read ours (``.safetensors``) or the reference release's (``.pt``, sign converted).

    Example:
        >>> cfg = load_capping_config(run_folder / "capping.safetensors")  # doctest: +SKIP
        >>> cfg.ids[:2]  # doctest: +SKIP
        ['layers_12:20-p25', 'layers_12:20-p50']
    """
    source = Path(path)
    if source.suffix in {".pt", ".pth"}:
        return _from_reference(source)
    tensors, meta = load_vectors(source)
    if meta.get("kind") != "capping_config":
        raise _bad(source, "its metadata does not say kind=capping_config")
    layer_of = {}
    for exp in meta.get("experiments") or []:
        for step in exp.get("interventions") or []:
            if isinstance(step, dict) and step.get("vector") in tensors:
                layer_of[step["vector"]] = int(step.get("layer", -1))
    vectors = {}
    for name, tensor in tensors.items():
        try:
            vectors[name] = unit_direction(tensor, f"vector '{name}'")
        except PersonaspaceError as err:
            raise _bad(source, err.problem) from err
    experiments = _experiments(source, meta.get("experiments"), layer_of, floor=True)
    return CappingConfig(vectors, tuple(experiments), str(meta.get("model_id")), str(source))
