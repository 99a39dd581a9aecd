"""Monitoring: where a conversation's assistant turns sit on the Assistant Axis.

Offline (``monitor_transcripts``: teacher-forced projection of transcript files) and live
(``chat_turn``, ``LiveChat``, ``run_conversation``: the projection of each reply read in the
pass that generates it).
"""

from personaspace.monitor.live import LiveChat, TurnResult, chat_turn, run_conversation
from personaspace.monitor.plot import trajectory_png
from personaspace.monitor.projection import Trajectory, project_turns, resolve_layers
from personaspace.monitor.report import MonitorReport, monitor_transcripts
from personaspace.monitor.transcripts import Transcript, read_transcripts, write_transcript

__all__ = [
    "LiveChat",
    "MonitorReport",
    "Trajectory",
    "Transcript",
    "TurnResult",
    "chat_turn",
    "monitor_transcripts",
    "project_turns",
    "read_transcripts",
    "resolve_layers",
    "run_conversation",
    "trajectory_png",
    "write_transcript",
]
