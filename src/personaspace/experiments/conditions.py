"""The settings an experiment compares: no intervention, a capping experiment, or steering.

A ``Condition`` is a name, the interventions to apply while generating, and the
``steering_config`` recorded in every transcript made under it (the reference release's
fields ``experiment_id``, ``num_interventions``, ``layers``, plus the steering unit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from personaspace.errors import PersonaspaceError
from personaspace.interventions import (
    CAPPING_FILE,
    NORM_UNIT,
    Calibration,
    CappingConfig,
    Intervention,
    load_capping_config,
    steer,
)
from personaspace.interventions.operations import Scope
from personaspace.monitor import Axis

BASELINE = "none"
ConditionKind = Literal["none", "cap", "steer"]


@dataclass(frozen=True)
class Condition:
    """One experimental setting: a name and the interventions it applies."""

    name: str
    kind: ConditionKind
    interventions: tuple[Intervention, ...] = ()
    steering_config: dict[str, Any] = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        return sorted({i.layer for i in self.interventions})


def baseline() -> Condition:
    """No intervention.

    Example:
        >>> baseline().name, baseline().interventions
        ('none', ())
    """
    return Condition(BASELINE, "none")


def load_run_capping(run: str | Path) -> CappingConfig:
    """The capping config of an axis run (``RUN/capping.safetensors``), or a config file."""
    path = Path(run)
    file = path / CAPPING_FILE if path.is_dir() else path
    if not file.is_file():
        raise PersonaspaceError(
            f"{path} has no {CAPPING_FILE}",
            fix=f"calibrate the run first (`personaspace calibrate {path}`)",
        )
    return load_capping_config(file)


def cap_condition(config: CappingConfig, experiment_id: str, scope: Scope = "all") -> Condition:
    """The caps of one experiment of a capping config.

    Example:
        >>> import torch
        >>> from personaspace.interventions import CapExperiment, CapStep
        >>> cfg = CappingConfig({"a": torch.tensor([1.0, 0.0])},
        ...                     (CapExperiment("layers_3:4-p25", (CapStep("a", 3, 0.5),)),))
        >>> c = cap_condition(cfg, "layers_3:4-p25")
        >>> c.kind, c.layers, c.steering_config["num_interventions"]
        ('cap', [3], 1)
    """
    items = tuple(config.interventions(experiment_id, scope))
    return Condition(
        experiment_id,
        "cap",
        items,
        {
            "experiment_id": experiment_id,
            "num_interventions": len(items),
            "layers": sorted({i.layer for i in items}),
            "taus": [i.amount for i in items],
            "scope": scope,
            "convention": "floor: h <- h + max(tau - h.u, 0) u, u the unit axis",
        },
    )


def steer_condition(
    axis: Axis,
    calibration: Calibration,
    coef_frac: float,
    layers: Sequence[int],
    scope: Scope = "all",
) -> Condition:
    """Add ``coef_frac`` residual norms of the unit axis at each of ``layers``.

    Positive coefficients push toward the Assistant (the axis's direction).

    Example:
        >>> import torch
        >>> ax = Axis("m", [0, 1], torch.eye(2), 2, "x")
        >>> cal = Calibration("m", [0, 1], torch.tensor([4.0, 8.0]), torch.zeros(2, 101), 1, 1, "x")
        >>> c = steer_condition(ax, cal, 0.25, [1])
        >>> c.name, c.interventions[0].amount
        ('steer+0.25@1', 2.0)
    """
    if not layers:
        raise PersonaspaceError("steering needs at least one layer", fix="pass --steer-layers")
    items = tuple(
        steer(layer, axis.unit(layer), coef_frac, calibration.norm(layer), scope)
        for layer in layers
    )
    where = ",".join(str(layer) for layer in layers)
    return Condition(
        f"steer{coef_frac:+g}@{where}",
        "steer",
        items,
        {
            "experiment_id": f"steer{coef_frac:+g}@{where}",
            "num_interventions": len(items),
            "layers": list(layers),
            "coef_frac": coef_frac,
            "unit": NORM_UNIT,
            "scope": scope,
        },
    )


def parse_numbers(text: str, what: str) -> list[float]:
    """``"0.1, 0.25"`` -> ``[0.1, 0.25]``, with a one-line error for anything else.

    Example:
        >>> parse_numbers("0.1,-0.25", "--steer")
        [0.1, -0.25]
    """
    values = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError as err:
            raise PersonaspaceError(
                f"{what}: '{part}' is not a number",
                fix="give comma-separated numbers, e.g. 0.1,0.2",
            ) from err
        if value != value or value in (float("inf"), float("-inf")):
            raise PersonaspaceError(f"{what}: '{part}' is not finite", fix="give finite numbers")
        values.append(value)
    return values


def parse_names(text: str | None) -> list[str]:
    """Comma-separated names, blanks dropped.

    Example:
        >>> parse_names(" a, b,,c ")
        ['a', 'b', 'c']
    """
    return [n.strip() for n in (text or "").split(",") if n.strip()]
