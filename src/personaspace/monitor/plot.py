"""The trajectory plot: projection on the axis per assistant turn, one panel per layer.

Every transcript is one line; lines are coloured by input file or by the transcripts'
``domain`` field; the calibrated capping floor, when known, is a dashed horizontal line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from personaspace.errors import PersonaspaceError
from personaspace.monitor.report import MonitoredTranscript, MonitorReport
from personaspace.report.plots import render_png

ColorBy = Literal["file", "domain"]
COLOR_BY: tuple[str, ...] = ("file", "domain")
NO_DOMAIN = "(no domain)"


def colour_group(item: MonitoredTranscript, color_by: str) -> str:
    """The legend label of a transcript's line: its file name, or its domain.

    Example:
        >>> import torch
        >>> from personaspace.monitor.transcripts import parse_transcript
        >>> from personaspace.monitor.projection import Trajectory
        >>> t = parse_transcript({"domain": "coding", "messages": [{"role": "user",
        ...     "content": "a"}, {"role": "assistant", "content": "b"}]}, "runs/x.json")
        >>> item = MonitoredTranscript(t, Trajectory([0], torch.zeros(1, 1), []))
        >>> colour_group(item, "file"), colour_group(item, "domain")
        ('x.json', 'coding')
    """
    if color_by not in COLOR_BY:
        raise PersonaspaceError(f"unknown colouring '{color_by}'", fix="use file or domain")
    if color_by == "domain":
        return item.transcript.domain or NO_DOMAIN
    return Path(item.transcript.file or item.transcript.source).name


def trajectory_png(report: MonitorReport, color_by: str = "file") -> bytes:
    """Render the report's trajectories as PNG bytes (no file is written).

    Example:
        >>> png = trajectory_png(report, color_by="domain")  # doctest: +SKIP
        >>> png[:8]  # doctest: +SKIP
        b'\\x89PNG\\r\\n\\x1a\\n'
    """
    groups = [colour_group(item, color_by) for item in report.items]
    order = list(dict.fromkeys(groups))
    palette = colormaps["tab10" if len(order) <= 10 else "tab20"]
    colours = {g: palette(i % palette.N) for i, g in enumerate(order)}
    n = len(report.layers)

    def draw(fig: Figure) -> None:
        axes = fig.subplots(n, 1, sharex=True, squeeze=False)
        for panel, layer in enumerate(report.layers):
            ax = axes[panel][0]
            labelled: set[str] = set()
            for item, group in zip(report.items, groups):
                values = item.trajectory.turns[:, panel].tolist()
                turns = list(range(1, len(values) + 1))
                ax.plot(
                    turns,
                    values,
                    marker="o",
                    ms=3,
                    lw=1.2,
                    alpha=0.85 if len(report.items) < 8 else 0.5,
                    color=colours[group],
                    label=None if group in labelled else group,
                )
                labelled.add(group)
            threshold = report.thresholds.get(layer)
            if threshold is not None:
                ax.axhline(
                    threshold,
                    ls="--",
                    lw=1,
                    c="grey",
                    label=f"p{report.percentile:g} capping floor (calibration)",
                )
            ax.set_ylabel(f"projection, layer {layer}")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            if panel == 0:
                ax.legend(fontsize=7, loc="best", ncol=2 if len(order) > 6 else 1)
        axes[-1][0].set_xlabel("assistant turn")
        fig.suptitle(
            f"{report.model_id}: projection on the Assistant Axis per turn (up = Assistant)",
            fontsize=10,
        )

    return render_png(draw, (8, 2.2 + 2.3 * n), dpi=110)
