"""How trustworthy an axis is, as the printed summary and the report show it.

Both read ``summary["diagnostics"]`` and ``summary["validation"]`` (written by every axis
run): figures with their intervals, beside the nulls they must beat.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from matplotlib.axes import Axes

from personaspace.report import plots
from personaspace.report.page import figures, table


def interval(data: Mapping[str, Any] | None, digits: int = 3) -> str:
    """``estimate [low, high]`` of a bootstrap interval, or ``-``.

    Example:
        >>> interval({"estimate": 0.5, "low": 0.41, "high": 0.6})
        '0.500 [0.410, 0.600]'
    """
    if not data:
        return "-"
    return f"{data['estimate']:.{digits}f} [{data['low']:.{digits}f}, {data['high']:.{digits}f}]"


def _row_of(summary: Mapping[str, Any], layer: int) -> int:
    analysed = [x["layer"] for x in (summary.get("analysis") or {}).get("layers", [])]
    return analysed.index(layer) if layer in analysed else 0


def diagnostic_rows(summary: Mapping[str, Any]) -> list[tuple[str, object]]:
    """How trustworthy the axis is, with its nulls, as (name, value) rows (none without
    diagnostics).

    Example:
        >>> diagnostic_rows({})
        []
    """
    d = summary.get("diagnostics")
    if not d:
        return []
    row = _row_of(summary, d["analysis_layer"]["layer"])
    null = d.get("random_init_null") or {}
    boot = d.get("bootstrap") or {}
    loo = d.get("leave_one_role_out") or {}

    def at(values: list[float] | None) -> str:
        return "-" if not values else f"{values[row]:.3f}"

    def vs_null(key: str) -> str:
        if not null:
            return ""
        same = null.get("trained_same_replies") or d
        return (
            f"  (on the null's {null.get('replies', '?')} replies: trained "
            f"{at(same.get(key))}, random-init {at(null.get(key))})"
        )

    rows: list[tuple[str, object]] = [
        ("layer chosen by", d["analysis_layer"]["chosen_by"]),
        ("cos(axis, PC1), 95% CI", interval(boot.get("cos_axis_pc1"))),
        ("  random-init null", at(null.get("cos_axis_pc1"))),
        (
            "  leave-one-role-out",
            f"|cos| {loo['default_abs_cos']:.3f}, p = {loo['p_cos']:.2f}" if loo else "-",
        ),
        ("default's PC1 rank, 95% CI", interval(boot.get("default_pc1_rank"), 0)),
        ("  leave-one-role-out", f"p = {loo['p_extreme']:.2f}" if loo else "-"),
        (
            "split-half (questions / prompts)",
            f"{at(d.get('split_half_questions'))} / {at(d.get('split_half_prompts'))}"
            + vs_null("split_half_questions"),
        ),
        (
            "held-out AUC default vs roles",
            f"{at(d.get('held_out_auc'))} (best layer {d.get('best_layer_by_auc')})"
            + vs_null("held_out_auc"),
        ),
    ]
    validation = summary.get("validation")
    if validation and "error" in validation:
        rows.append(("validation set", f"not run: {validation['error']}"))
    elif validation:
        rows.append(
            (
                "validation set",
                f"{'passes' if validation['passed'] else 'does not pass'}: "
                f"{validation['n_passed']} of {validation['n']} as expected (random "
                f"directions as good: {validation['null']['percentile_of_axis']:.1f} %)",
            )
        )
    return rows


def _by_layer(
    ax: Axes, layers: list[int], series: list[tuple[str, list[float] | None]], title: str
) -> None:
    for label, values in series:
        if values:
            ax.plot(layers[: len(values)], values, marker="o", ms=3, label=label)
    ax.set_xlabel("layer")
    ax.set_title(title)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize=8)


def trust_section(summary: Mapping[str, Any]) -> str:
    """The report's section on the axis's reliability: rows, per-layer plots against the
    random-init null, the verdict, and the validation table ('' without diagnostics)."""
    d = summary.get("diagnostics")
    if not d:
        return ""
    layers = [x["layer"] for x in (summary.get("analysis") or {}).get("layers", [])]
    null = d.get("random_init_null") or {}
    cos = [x["cos_axis_pc1"] for x in (summary.get("analysis") or {}).get("layers", [])]
    images = [
        plots.figure_png(
            lambda ax: _by_layer(
                ax,
                layers,
                [("trained", cos), ("random-init null", null.get("cos_axis_pc1"))],
                "cos(axis, PC1) by layer",
            )
        ),
        plots.figure_png(
            lambda ax: _by_layer(
                ax,
                layers,
                [
                    ("split-half (questions)", d.get("split_half_questions")),
                    ("split-half (prompts)", d.get("split_half_prompts")),
                    ("held-out AUC", d.get("held_out_auc")),
                    ("random-init split-half", null.get("split_half_questions")),
                    ("random-init AUC", null.get("held_out_auc")),
                ],
                "Reliability by layer",
            )
        ),
    ]
    verdict = d.get("verdict") or []
    lines = (
        "".join(f"<li>{html.escape(v)}</li>" for v in verdict)
        or "<li>every figure stands above its nulls</li>"
    )
    parts = [
        "<h2>How trustworthy is this axis</h2>",
        table(diagnostic_rows(summary)),
        f"<p>Not above its null:</p><ul>{lines}</ul>",
        figures([(src, None) for src in images]),
    ]
    validation = summary.get("validation") or {}
    if validation.get("rows"):
        rows = [
            (
                f"{r['name']} ({r['expect']})",
                f"{r['change_gaps']:+.2f} gaps: {'pass' if r['passed'] else 'FAIL'}",
            )
            for r in validation["rows"]
        ]
        parts += [f"<h3>Validation set ({html.escape(validation['rule'])})</h3>", table(rows)]
    return "".join(parts)
