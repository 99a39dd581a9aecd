"""The Assistant Axis pipeline: generate, capture, judge, aggregate, analyse, report."""

from personaspace.pipeline.config import AxisConfig
from personaspace.pipeline.run import AxisRun, run_axis

__all__ = ["AxisConfig", "AxisRun", "run_axis"]
