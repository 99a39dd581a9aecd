"""Monitoring: where a conversation's assistant turns sit on the Assistant Axis."""

from personaspace.monitor.axis import CALIBRATION_FILE, Axis, load_axis
from personaspace.monitor.projection import Trajectory, project_turns, resolve_layers

__all__ = ["CALIBRATION_FILE", "Axis", "Trajectory", "load_axis", "project_turns", "resolve_layers"]
