"""The figures of ``personaspace compare --ladder``: the axis forming over training, and a
layer x rung map of the cosine with the final axis."""

from __future__ import annotations

import math
from collections.abc import Callable

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from personaspace.analysis.ladder import LadderResult, LadderRow
from personaspace.report import plots

# (name, colour, figure of a row) for the two panels of the forming plot.
Series = tuple[str, str, Callable[[LadderRow], float | None]]


def _pc(i: int) -> Callable[[LadderRow], float | None]:
    def value(row: LadderRow) -> float | None:
        matched = row["pc_cos_final"]["matched"]
        return matched[i] if i < len(matched) else None

    return value


AXIS_SERIES: list[Series] = [
    ("cos(axis, final axis)", "#2b6cb0", lambda r: r["axis_cos_final"]),
    ("cos(axis, base axis)", "#c05621", lambda r: r["axis_cos_base"]),
    ("Spearman, roles on the axis vs final", "#2f855a", lambda r: r["spearman_axis_final"]["rho"]),
]
PC_SERIES: list[Series] = [
    ("|cos(PC1, final PC1)|", "#6b46c1", _pc(0)),
    ("|cos(PC2, final PC2)|", "#d53f8c", _pc(1)),
    ("|cos(PC3, final PC3)|", "#718096", _pc(2)),
]


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _forming(ax: Axes, result: LadderResult, series: list[Series], title: str) -> None:
    rows = result["rungs"]
    placed = [r for r in rows if r["x"] is not None]
    p95 = result["nulls"]["random_direction"]["abs_cos_p95"]
    ax.axhspan(-p95, p95, color="grey", alpha=0.15, lw=0)
    for name, colour, value in series:
        points = [(r["x"], value(r)) for r in placed if _finite(value(r))]
        if points:
            ax.plot(*zip(*points), marker="o", ms=4, c=colour, label=name)
        for row in rows:
            if row["x"] is None and _finite(value(row)):
                ls = "--" if row["kind"] == "random_init" else ":"
                ax.axhline(float(value(row) or 0.0), ls=ls, c=colour, lw=1)
    handles, _ = ax.get_legend_handles_labels()
    handles += [
        Patch(color="grey", alpha=0.15, label=f"random direction, 95 % of |cos| ({p95:.2f})")
    ]
    for row in rows:
        if row["x"] is None:
            random_init = row["kind"] == "random_init"
            what = "random-init" if random_init else f"{row['kind']}, no progress"
            line = Line2D([], [], ls="--" if random_init else ":", c="black", lw=1)
            line.set_label(f"{row['label']} ({what})")
            handles.append(line)
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    if any(r["progress"] is not None for r in placed):
        ax.set_xlabel("training progress (fraction of training)")
        ax.set_xlim(-0.03, 1.03)
    else:
        ax.set_xticks([float(r["x"] or 0.0) for r in placed], [r["label"] for r in placed])
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.set_xlabel("rung (training order)")
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel(f"cosine or Spearman's rho at layer {result['layer']}")
    ax.set_title(title, fontsize=10)


def _layers(fig: Figure, result: LadderResult) -> None:
    ax = fig.add_subplot(1, 1, 1)
    rows = result["rungs"]
    layers = sorted({int(c["layer"]) for r in rows for c in r["axis_cos_final_by_layer"]})
    grid = [[math.nan] * len(rows) for _ in layers]
    for j, row in enumerate(rows):
        for cell in row["axis_cos_final_by_layer"]:
            grid[layers.index(int(cell["layer"]))][j] = float(cell["cos"])
    image = ax.imshow(grid, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-1, vmax=1)
    fig.colorbar(image, ax=ax, label="cos(axis of the rung, axis of the final rung)")
    ax.set_xticks(range(len(rows)), [r["label"] for r in rows], rotation=30, fontsize=7)
    ticks = set(range(0, len(layers), max(1, len(layers) // 16)))
    if result["layer"] in layers:
        ticks.add(layers.index(result["layer"]))
    order = sorted(ticks)
    names = [f"{layers[i]} *" if layers[i] == result["layer"] else str(layers[i]) for i in order]
    ax.set_yticks(order, names, fontsize=7)
    if len(layers) * len(rows) <= 240:
        for i, line in enumerate(grid):
            for j, value in enumerate(line):
                if math.isfinite(value):
                    colour = "white" if abs(value) > 0.6 else "black"
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6, c=colour)
    ax.set_xlabel("rung (training order)")
    ax.set_ylabel(f"layer (* the analysis layer, {result['layer']})")
    ax.set_title(f"The axis at every layer against the final rung ({result['final']})", fontsize=10)


def ladder_figures(result: LadderResult) -> dict[str, bytes]:
    """PNG bytes by name: ``ladder`` (the figures against training progress, the random-init
    rung dashed, a base without progress dotted, the random-direction band in grey) and
    ``ladder_layers`` (the layer x rung map of cos(axis, final axis))."""

    def forming(fig: Figure) -> None:
        _forming(fig.add_subplot(1, 2, 1), result, AXIS_SERIES, "The Assistant Axis forming")
        _forming(fig.add_subplot(1, 2, 2), result, PC_SERIES, "Principal components vs final")

    n_layers = len({c["layer"] for r in result["rungs"] for c in r["axis_cos_final_by_layer"]})
    return {
        "ladder": plots.render_png(forming, (13, 5), dpi=90),
        "ladder_layers": plots.render_png(
            lambda fig: _layers(fig, result),
            (
                max(5.0, 1.2 + 0.8 * len(result["rungs"])),
                max(3.5, min(12.0, 0.22 * n_layers + 1.5)),
            ),
            dpi=90,
        ),
    }
