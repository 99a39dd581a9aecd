"""Interventions on the residual stream: steering, directional ablation and capping.

Build ``Intervention`` values with ``steer``, ``ablate`` or ``cap`` and apply them with
``intervene(lm, [...])``; calibration gives the units (residual norms) and the capping
thresholds (projection percentiles); capping configs name sets of caps.
"""

from personaspace.interventions.calibrate_run import (
    CAPPING_FILE,
    DEFAULT_PERCENTILES,
    calibrate_run,
    default_ranges,
)
from personaspace.interventions.calibration import (
    NORM_UNIT,
    Calibration,
    calibrate,
    load_calibration,
    run_calibration_set,
    save_calibration,
)
from personaspace.interventions.capping import (
    CapExperiment,
    CappingConfig,
    CapStep,
    build_capping_config,
    experiment_id,
    load_capping_config,
    parse_layer_range,
    save_capping_config,
)
from personaspace.interventions.hooks import InterventionHandle, intervene
from personaspace.interventions.operations import (
    Intervention,
    ablate,
    cap,
    steer,
    unit_direction,
)

__all__ = [
    "CAPPING_FILE",
    "DEFAULT_PERCENTILES",
    "NORM_UNIT",
    "Calibration",
    "CapExperiment",
    "CapStep",
    "CappingConfig",
    "Intervention",
    "InterventionHandle",
    "ablate",
    "build_capping_config",
    "calibrate",
    "calibrate_run",
    "cap",
    "default_ranges",
    "experiment_id",
    "intervene",
    "load_calibration",
    "load_capping_config",
    "parse_layer_range",
    "run_calibration_set",
    "save_calibration",
    "save_capping_config",
    "steer",
    "unit_direction",
]
