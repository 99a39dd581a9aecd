"""Matplotlib figures rendered to PNG bytes, through the object API: a ``Figure`` drawn on
its own Agg canvas, so no display, no global backend switch and no pyplot state."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from personaspace.fileformat import atomic_path
from personaspace.report.page import data_uri


def render_png(draw: Callable[[Figure], None], size: tuple[float, float], dpi: int = 100) -> bytes:
    """Draw on a fresh figure and return it as PNG bytes (the figure is always closed).

    Example:
        >>> png = render_png(lambda fig: fig.add_subplot().plot([0, 1]), (2, 2))
        >>> png[:4]
        b'\\x89PNG'
    """
    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    draw(fig)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def save_png(
    path: str | Path, draw: Callable[[Figure], None], size: tuple[float, float], dpi: int = 100
) -> Path:
    """Draw on a fresh figure and write it as a PNG file, atomically.

    Example:
        >>> import tempfile, pathlib
        >>> p = save_png(pathlib.Path(tempfile.mkdtemp()) / "f.png",
        ...              lambda fig: fig.add_subplot().plot([0, 1]), (2, 2))
        >>> p.read_bytes()[:4]
        b'\\x89PNG'
    """
    png = render_png(draw, size, dpi)
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)
    return Path(path)


def figure_png(draw: Callable[[Axes], None], size: tuple[float, float] = (7, 4.5)) -> str:
    """Draw on a fresh axes and return the PNG as a base64 data URI."""
    return data_uri(render_png(lambda fig: draw(fig.add_subplot()), size, dpi=110))


def scatter_roles(
    ax: Axes,
    xs: list[float],
    ys: list[float],
    colours: list[float],
    labels: list[str],
    marked: tuple[float, float] | None,
    title: str,
) -> None:
    points = ax.scatter(xs, ys, c=colours, cmap="coolwarm", s=22)
    ax.figure.colorbar(points, ax=ax, label="projection on the Assistant Axis")
    for x, y, label in zip(xs, ys, labels):
        ax.annotate(label, (x, y), fontsize=6, alpha=0.8, xytext=(2, 2), textcoords="offset points")
    if marked is not None:
        ax.scatter(
            [marked[0]], [marked[1]], marker="*", s=260, c="black", label="default (Assistant)"
        )
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel("PC1")
    ax.set_ylabel("PC2")
    ax.set_title(title)


def bars(ax: Axes, names: list[str], values: list[float], title: str, xlabel: str) -> None:
    colours = ["#2b6cb0" if v >= 0 else "#c53030" for v in values]
    ax.barh(range(len(names)), values, color=colours)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)


def line(
    ax: Axes,
    xs: list[int],
    ys: list[float],
    title: str,
    ylabel: str,
    reference: float | None = None,
) -> None:
    ax.plot(xs, ys, marker="o", ms=3)
    if reference is not None:
        ax.axhline(reference, ls="--", c="grey", lw=1, label=f"published threshold {reference}")
        ax.legend(fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
