"""The settings an experiment compares: no intervention, a capping experiment, or steering.

A ``Condition`` is a name, the interventions to apply while generating, and the
``steering_config`` recorded in every transcript made under it (the reference release's
fields ``experiment_id``, ``num_interventions``, ``layers``, plus the steering unit).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from personaspace.errors import PersonaspaceError
from personaspace.runfolder import run_folder_for
from personaspace.vectors.axis import Axis
from personaspace.vectors.calibration import NORM_UNIT, Calibration
from personaspace.vectors.capping import CappingConfig
from personaspace.vectors.intervention import Intervention, Scope, steer_along_axis

BASELINE = "none"
_UNSAFE_IN_FILE_NAMES = re.compile(r"[^A-Za-z0-9._+\-@,=]")
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


def file_stem(name: str) -> str:
    """``name`` as a file name on every system: each character outside ``[A-Za-z0-9._+-@,=]``
    (``:`` above all, which Windows refuses) becomes ``-``.

    Files keep the real name inside; only the file name changes.

    Example:
        >>> file_stem("layers_11:19-p25"), file_stem("steer+0.1@15,16"), file_stem("a/b c")
        ('layers_11-19-p25', 'steer+0.1@15,16', 'a-b-c')
        >>> file_stem(".."), file_stem("")
        ('--', '-')
    """
    stem = _UNSAFE_IN_FILE_NAMES.sub("-", name)
    return stem if stem.strip(".") else "-" * max(len(stem), 1)


def check_file_stems(names: Sequence[str], what: str) -> None:
    """Refuse names that are distinct but would share a file name (see ``file_stem``).

    Example:
        >>> check_file_stems(["none", "layers_1:2-p50"], "conditions")
        >>> try:
        ...     check_file_stems(["a:b", "a-b"], "conditions")
        ... except PersonaspaceError as err:
        ...     print(err.problem)
        conditions 'a:b' and 'a-b' would share the file name 'a-b'
    """
    seen: dict[str, str] = {}
    for name in names:
        stem = file_stem(name)
        if stem in seen and seen[stem] != name:
            raise PersonaspaceError(
                f"{what} '{seen[stem]}' and '{name}' would share the file name '{stem}'",
                fix="rename one of them",
            )
        seen[stem] = name


def load_run_capping(run: str | Path) -> CappingConfig:
    """The capping config of an axis run folder (``RUN/capping.safetensors``).

    A lone axis file is refused: capping needs the run's calibrated thresholds.
    """
    return run_folder_for(run, "capping").capping()


def load_run_calibration(run: str | Path) -> Calibration:
    """The calibration of an axis run folder (``RUN/calibration.safetensors``), for steering.

    A lone axis file is refused: the steering unit is the run's calibrated residual norm.
    """
    return run_folder_for(run, "steering").calibration()


def cap_condition(config: CappingConfig, experiment_id: str, scope: Scope = "all") -> Condition:
    """The caps of one experiment of a capping config.

    Example:
        >>> import torch
        >>> from personaspace.vectors import CapExperiment, CapStep
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

    Positive coefficients push toward the Assistant (the axis's direction). The
    ``steering_config`` records the added length per layer (``amounts``, ``coef_frac`` x
    that layer's calibrated norm), so a different calibration reads as another condition.

    Example:
        >>> import torch
        >>> ax = Axis("m", [0, 1], torch.eye(2), 2, "x")
        >>> cal = Calibration("m", [0, 1], torch.tensor([4.0, 8.0]), torch.zeros(2, 101), 1, 1, "x")
        >>> c = steer_condition(ax, cal, 0.25, [1])
        >>> c.name, c.interventions[0].amount, c.steering_config["amounts"]
        ('steer+0.25@1', 2.0, [2.0])
    """
    if not layers:
        raise PersonaspaceError(
            "steering needs at least one layer", fix="name the layers to steer", param="layers"
        )
    items = tuple(steer_along_axis(axis, calibration, coef_frac, layers, scope))
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
            "amounts": [i.amount for i in items],
            "unit": NORM_UNIT,
            "scope": scope,
        },
    )
