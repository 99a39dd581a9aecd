"""The Assistant Axis pipeline: generate, capture, judge, aggregate, analyse, report, calibrate."""

from personaspace.pipeline.config import AxisConfig
from personaspace.pipeline.run import AxisRun, AxisSummary, run_axis

__all__ = ["AxisConfig", "AxisRun", "AxisSummary", "run_axis"]
