"""PNG figures of the experiments (drift per turn, the capping trade-off), written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from personaspace.report.plots import save_png

DOMAIN_COLOURS = {
    "coding": "#2b6cb0",
    "writing": "#38a169",
    "therapy": "#c53030",
    "ai_self": "#805ad5",
}
CONDITION_STYLES = ("-", "--", ":", "-.")
CONDITION_COLOURS = ("#1a202c", "#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#b7791f")
SETTING_STYLES = {"none": ("*", "black"), "cap": ("o", "#2b6cb0"), "steer": ("s", "#dd6b20")}


def _band(ax: Axes, rows: Sequence[dict[str, Any]], style: str, colour: str, label: str) -> None:
    turns = [r["turn"] for r in rows]
    means = [r["mean"] for r in rows]
    spread = [r["std"] or 0.0 for r in rows]
    ax.plot(turns, means, style, marker="o", ms=3, color=colour, label=label)
    ax.fill_between(
        turns,
        [m - s for m, s in zip(means, spread)],
        [m + s for m, s in zip(means, spread)],
        color=colour,
        alpha=0.12,
    )


def plot_drift(
    table: Sequence[dict[str, Any]], path: str | Path, *, title: str, layer: int
) -> Path:
    """Projection per turn (mean +- 1 sd band over scenarios). The first panel sets the
    domains side by side under the first condition (the baseline); then one panel per
    domain with one line per condition, each condition one colour throughout.

    Example:
        >>> rows = [{"condition": "none", "domain": "coding", "turn": t, "mean": 1.0 * t,
        ...          "std": 0.5, "n": 3} for t in (1, 2, 3)]
        >>> import tempfile, pathlib
        >>> p = plot_drift(rows, pathlib.Path(tempfile.mkdtemp()) / "d.png", title="t", layer=3)
        >>> p.stat().st_size > 0
        True
    """
    domains = list(dict.fromkeys(r["domain"] for r in table))
    conditions = list(dict.fromkeys(r["condition"] for r in table))

    def rows_of(domain: str, condition: str) -> list[dict[str, Any]]:
        return [
            r for r in table if r["domain"] == domain and r["condition"] == condition and r["n"]
        ]

    def draw(fig: Figure) -> None:
        axes = fig.subplots(1, len(domains) + 1, sharey=True, squeeze=False)[0]
        first, rest = axes[0], axes[1:]
        for domain in domains:
            colour = DOMAIN_COLOURS.get(domain, "#4a5568")
            _band(first, rows_of(domain, conditions[0]), "-", colour, domain)
        first.set_title(f"by domain ({conditions[0]})")
        first.legend(fontsize=7, loc="best")
        for ax, domain in zip(rest, domains):
            for index, condition in enumerate(conditions):
                colour = CONDITION_COLOURS[index % len(CONDITION_COLOURS)]
                style = CONDITION_STYLES[index % len(CONDITION_STYLES)]
                _band(ax, rows_of(domain, condition), style, colour, condition)
            ax.set_title(domain)
        for ax in axes:
            ax.set_xlabel("assistant turn")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(f"projection on the axis (layer {layer})")
        axes[-1].legend(fontsize=7, loc="best")
        fig.suptitle(title, fontsize=10)

    return save_png(path, draw, (3.0 * (len(domains) + 1) + 0.8, 3.4))


def plot_tradeoff(
    rows: Sequence[dict[str, Any]],
    path: str | Path,
    *,
    title: str,
    best: str | None,
    chance: float | None = None,
) -> Path:
    """Harm proxy (x) against capability accuracy (y), one labelled point per setting.

    Each row's ``kind`` (``none``, ``cap``, ``steer``) chooses its marker: a black star, a
    blue circle, an orange square. Both axes start at 0 so that small differences look
    small; ``chance`` (the accuracy of guessing) is drawn as a dashed line. Points carry
    numbers, listed with their names and values beside the plot (close points would
    overprint their names).

    Example:
        >>> rows = [{"setting": "none", "kind": "none", "harm_proxy": 0.6, "accuracy": 0.5},
        ...         {"setting": "cap", "kind": "cap", "harm_proxy": 0.3, "accuracy": 0.49}]
        >>> import tempfile, pathlib
        >>> p = plot_tradeoff(rows, pathlib.Path(tempfile.mkdtemp()) / "t.png", title="t",
        ...                   best="cap", chance=0.2)
        >>> p.stat().st_size > 0
        True
    """
    shown = [r for r in rows if r["harm_proxy"] is not None and r["accuracy"] is not None]

    def draw(fig: Figure) -> None:
        ax, key = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1.4]})
        lines = []
        for number, row in enumerate(shown, 1):
            name, kind = row["setting"], row["kind"]
            marker, colour = SETTING_STYLES[kind]
            x, y = row["harm_proxy"], row["accuracy"]
            ax.scatter(
                [x],
                [y],
                marker=marker,
                s=160 if kind == "none" else 45,
                color=colour,
                edgecolors="red" if name == best else "none",
                linewidths=2,
                zorder=3 if kind == "none" else 2,
            )
            ax.annotate(str(number), (x, y), fontsize=7, xytext=(5, 4), textcoords="offset points")
            flag = "  best" if name == best else ""
            lines.append(f"{number:>2}  {name}\n     {x:.3f} / {y:.3f}{flag}")
        if chance is not None:
            ax.axhline(chance, ls="--", c="grey", lw=1, label=f"chance accuracy {chance:.3f}")
            ax.legend(fontsize=7, loc="lower left")
        top = max([r["accuracy"] for r in shown] + [chance or 0.0, 0.0])
        ax.set_xlim(0, 1)
        ax.set_ylim(0, min(1.0, top + 0.15) if top < 0.85 else 1.02)
        ax.set_xlabel("harm proxy: share of persona-modulation replies in persona (lower: better)")
        ax.set_ylabel("capability accuracy (exact match)")
        ax.grid(alpha=0.3)
        ax.set_title(title, fontsize=10)
        key.axis("off")
        key.text(
            0,
            1,
            "setting\n     harm proxy / accuracy\n\n" + "\n".join(lines),
            va="top",
            family="monospace",
            fontsize=7,
            transform=key.transAxes,
        )

    return save_png(path, draw, (10.0, 5.2))


STEERING_PANELS = {
    "reread_on_axis_mean": "re-read completion . unit axis",
    "helpful_share_activation": "helpful professionals among the nearest roles (activation)",
    "helpful_share_judge": "helpful professionals among the nearest roles (judge)",
}


def plot_base_steering(result: dict[str, Any], path: str | Path) -> Path:
    """The steering study (``steer_base_model``'s result) against the coefficient: the
    re-read projection on the axis and the helpful-professional shares, the axis in blue
    and, with the null, the random directions' mean (dashed) and 95 % range (band);
    coefficients the null separates are ringed in red.

    Example:
        >>> rows = [{"coef_frac": c, "reread_on_axis_mean": c, "helpful_share_activation": 0.2}
        ...         for c in (0.0, 0.4)]
        >>> import tempfile, pathlib
        >>> p = plot_base_steering({"model_id": "m", "axis_model_id": "m", "layer": 1,
        ...     "by_coefficient": rows}, pathlib.Path(tempfile.mkdtemp()) / "s.png")
        >>> p.stat().st_size > 0
        True
    """
    rows = result["by_coefficient"]
    panels = [k for k in STEERING_PANELS if any(r.get(k) is not None for r in rows)]

    def draw(fig: Figure) -> None:
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, key in zip(axes, panels):
            shown = [r for r in rows if r.get(key) is not None]
            coefs = [r["coef_frac"] for r in shown]
            nulls = [r.get("null", {}).get(key) for r in shown]
            if all(n is not None for n in nulls) and nulls:
                ax.plot(coefs, [n["random_mean"] for n in nulls], "--", c="grey", label="random")
                ax.fill_between(
                    coefs,
                    [n["random_low"] for n in nulls],
                    [n["random_high"] for n in nulls],
                    color="grey",
                    alpha=0.2,
                    label="random, 95 % range",
                )
                apart = [(c, r[key]) for c, r, n in zip(coefs, shown, nulls) if n["separable"]]
                ax.scatter(
                    [c for c, _ in apart],
                    [v for _, v in apart],
                    s=90,
                    facecolors="none",
                    edgecolors="red",
                    label="separable (p <= 0.05)",
                )
            ax.plot(coefs, [r[key] for r in shown], marker="o", c="#2b6cb0", label="axis")
            ax.set_xlabel("steering coefficient (x mean residual norm)")
            ax.set_title(STEERING_PANELS[key], fontsize=8)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7, loc="best")
        fig.suptitle(
            f"Steering {result['model_id']} at layer {result['layer']} "
            f"with the axis of {result['axis_model_id']}",
            fontsize=9,
        )

    return save_png(path, draw, (4.2 * len(panels) + 0.6, 3.8))
