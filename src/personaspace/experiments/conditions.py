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
from personaspace.interventions import (
    CAPPING_FILE,
    NORM_UNIT,
    Calibration,
    CappingConfig,
    Intervention,
    load_calibration,
    load_capping_config,
    steer,
)
from personaspace.interventions.operations import Scope
from personaspace.monitor import Axis

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


def _require_run_folder(run: str | Path, need: str) -> Path:
    path = Path(run)
    if path.is_file():
        raise PersonaspaceError(
            f"--axis {path} is an axis file, but {need} needs a calibrated axis run folder",
            fix="pass the folder `personaspace axis` wrote, calibrated by "
            "`personaspace calibrate RUN`",
        )
    return path


def load_run_capping(run: str | Path) -> CappingConfig:
    """The capping config of an axis run folder (``RUN/capping.safetensors``).

    A lone axis file is refused: capping needs the run's calibrated thresholds.
    """
    path = _require_run_folder(run, "capping")
    file = path / CAPPING_FILE
    if not file.is_file():
        raise PersonaspaceError(
            f"{path} has no {CAPPING_FILE}",
            fix=f"calibrate the run first (`personaspace calibrate {path}`)",
        )
    return load_capping_config(file)


def load_run_calibration(run: str | Path) -> Calibration:
    """The calibration of an axis run folder (``RUN/calibration.safetensors``), for steering.

    A lone axis file is refused: the steering unit is the run's calibrated residual norm.
    """
    return load_calibration(_require_run_folder(run, "steering"))


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
            "amounts": [i.amount for i in items],
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
