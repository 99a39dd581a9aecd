"""Experiments on the Assistant Axis: conversational drift, the cost/benefit of capping, and
steering a base model.

``drift`` plays scripted multi-turn scenarios and projects every reply on the axis;
``cap_eval`` measures persona adoption and capability under capping and steering;
``base_steering`` steers a pre-trained model along an axis and asks which roles its
completions resemble.
"""

from personaspace.experiments.cap_eval import (
    BEST_RULE,
    CapEvalSettings,
    best_setting,
    run_cap_eval,
    setting_metrics,
)
from personaspace.experiments.conditions import (
    BASELINE,
    Condition,
    baseline,
    cap_condition,
    file_stem,
    load_run_calibration,
    load_run_capping,
    steer_condition,
)
from personaspace.experiments.drift import DriftSettings, pick_scenarios, run_drift
from personaspace.experiments.drift_report import RULE, summarize_drift
from personaspace.experiments.scoring import capability_prompt, is_correct

__all__ = [
    "BASELINE",
    "BEST_RULE",
    "RULE",
    "CapEvalSettings",
    "Condition",
    "DriftSettings",
    "baseline",
    "best_setting",
    "cap_condition",
    "capability_prompt",
    "file_stem",
    "is_correct",
    "load_run_calibration",
    "load_run_capping",
    "pick_scenarios",
    "run_cap_eval",
    "run_drift",
    "setting_metrics",
    "steer_condition",
    "summarize_drift",
]
