"""The values every layer shares: the axis, its calibration, capping configs, interventions.

Nothing here runs a model or knows a run folder: these are tensors with their meaning and
the operations users reach for on them (project on the axis, steer along it, cap at an
experiment's floors, save and read the vector files).

Example:
    >>> import torch
    >>> from personaspace.vectors import Axis, cap
    >>> axis = Axis("m", [0], torch.tensor([[0.0, 2.0]]), 1, "toy")
    >>> cap(0, axis.unit(0), tau=1.0).apply(torch.tensor([3.0, -4.0]))
    tensor([3., 1.])
"""

from personaspace.vectors.axis import Axis, axis_from_tensors, read_axis_file, save_axis
from personaspace.vectors.calibration import (
    NORM_UNIT,
    Calibration,
    read_calibration_file,
    save_calibration,
)
from personaspace.vectors.capping import (
    CapExperiment,
    CappingConfig,
    CapStep,
    build_capping_config,
    experiment_id,
    load_capping_config,
    parse_layer_range,
    read_reference_capping,
    save_capping_config,
)
from personaspace.vectors.intervention import (
    SCOPES,
    Intervention,
    Scope,
    ablate,
    cap,
    steer,
    steer_along_axis,
    unit_direction,
)
from personaspace.vectors.shape import LayerShape, ModelShape, cosine, unit

__all__ = [
    "NORM_UNIT",
    "SCOPES",
    "Axis",
    "Calibration",
    "CapExperiment",
    "CapStep",
    "CappingConfig",
    "Intervention",
    "LayerShape",
    "ModelShape",
    "Scope",
    "ablate",
    "axis_from_tensors",
    "build_capping_config",
    "cap",
    "cosine",
    "experiment_id",
    "load_capping_config",
    "parse_layer_range",
    "read_axis_file",
    "read_calibration_file",
    "read_reference_capping",
    "save_axis",
    "save_calibration",
    "save_capping_config",
    "steer",
    "steer_along_axis",
    "unit",
    "unit_direction",
]
