"""Interventions applied to a model: ``intervene`` runs steering, ablation and capping for the
duration of a ``with`` block; ``calibrate`` measures the units and floors they use.

The values themselves (``Intervention``, ``steer``, ``ablate``, ``cap``, capping configs,
calibrations) live in ``personaspace.vectors``; they are re-exported here because they are
what one passes to ``intervene``.
"""

from personaspace.interventions.calibrate import calibrate
from personaspace.interventions.hooks import InterventionHandle, intervene
from personaspace.vectors.intervention import (
    Intervention,
    ablate,
    cap,
    steer,
    steer_along_axis,
    unit_direction,
)

__all__ = [
    "Intervention",
    "InterventionHandle",
    "ablate",
    "calibrate",
    "cap",
    "intervene",
    "steer",
    "steer_along_axis",
    "unit_direction",
]
