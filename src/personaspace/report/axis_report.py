"""The axis run's HTML report: headline figures, plots, settings. One page, no links out."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from matplotlib.axes import Axes

from personaspace.analysis.persona_space import PersonaSpace
from personaspace.report import plots
from personaspace.report.page import figures, page, pre_json, table
from personaspace.report.trust import trust_section

PUBLISHED = [
    ("cos(axis, PC1) at the middle layer", "> 0.71 (Gemma 2 27B, Qwen 3 32B, Llama 3.3 70B)"),
    (
        "components for 70% of role variance",
        "4 / 8 / 19 (Gemma 2 27B / Qwen 3 32B / Llama 3.3 70B)",
    ),
    ("roles near the Assistant end", "evaluator, consultant, reviewer"),
    ("roles at the far end", "ghost, leviathan, bard"),
]


def _variance(ax: Axes, explained: list[float], layer: int) -> None:
    ax.bar(range(1, len(explained) + 1), explained)
    ax.set_xlabel("component")
    ax.set_ylabel("variance explained")
    ax.set_title(f"Variance explained by role-vector PCs (layer {layer})")


def _plots(space: PersonaSpace) -> list[str]:
    at, layer, scatter = space.at_analysis_layer, space.analysis_layer, space.scatter
    images = [
        plots.figure_png(
            lambda ax: plots.scatter_roles(
                ax,
                scatter.pc1,
                scatter.pc2,
                scatter.on_axis,
                scatter.names,
                scatter.default,
                f"Persona space at layer {layer}",
            ),
            (9, 7),
        ),
        plots.figure_png(lambda ax: _variance(ax, at.explained_top10, layer)),
        plots.figure_png(
            lambda ax: plots.line(
                ax,
                [r.layer for r in space.layers],
                [r.cos_axis_pc1 for r in space.layers],
                "cos(Assistant Axis, PC1) by layer",
                "cosine",
                reference=0.6,
            )
        ),
    ]
    ranked = at.roles_by_axis
    ends = ranked[:10] + ranked[-10:] if len(ranked) > 20 else ranked
    images.append(
        plots.figure_png(
            lambda ax: plots.bars(
                ax,
                [n for n, _ in ends],
                [v for _, v in ends],
                "Roles along the axis: top (Assistant end) and bottom",
                "projection on unit axis",
            ),
            (7, 6),
        )
    )
    traits = sorted(at.trait_cos_axis.items(), key=lambda kv: -kv[1])
    if traits:
        images.append(
            plots.figure_png(
                lambda ax: plots.bars(
                    ax,
                    [t for t, _ in traits],
                    [c for _, c in traits],
                    "Trait vectors: cosine with the Assistant Axis",
                    "cosine",
                ),
                (7, max(3.0, 0.25 * len(traits))),
            )
        )
    return images


def headline(summary: Mapping[str, Any], space: PersonaSpace) -> list[tuple[str, Any]]:
    """The figures a reader wants first, as (name, value) rows."""
    at, n_roles = space.at_analysis_layer, space.n_roles
    return [
        ("model", summary["model_id"]),
        ("analysis layer", f"{space.analysis_layer} of {summary['n_layers']}"),
        ("roles kept / dropped", f"{n_roles} / {len(summary['counts']['roles_dropped'])}"),
        ("cos(axis, PC1)", f"{at.cos_axis_pc1:.3f}"),
        (
            "components for 70 / 80 / 90% variance",
            f"{at.components_70} / {at.components_80} / {at.components_90}",
        ),
        ("default's rank on PC1 (1 = Assistant end)", f"{at.default_pc1_rank} of {n_roles + 1}"),
        ("roles nearest the default", ", ".join(n for n, _ in at.nearest_to_default[:5])),
        ("Assistant end of the axis", ", ".join(at.assistant_end[:5])),
        ("far end of the axis", ", ".join(at.far_end[:5])),
    ]


def axis_report(summary: Mapping[str, Any], space: PersonaSpace) -> str:
    """The ``report.html`` page of a finished run (``summary`` as in ``summary.json``)."""
    body = f"""<h1>Persona space of {html.escape(summary["model_id"])}</h1>
<h2>Headline figures</h2>{table(headline(summary, space))}
{trust_section(summary)}
<h2>Published figures for comparison (27-70B models)</h2>{table(PUBLISHED)}
<p>Small models may differ from the published ones; these are the figures measured here.</p>
<h2>Plots</h2>{figures([(src, None) for src in _plots(space)])}
<h2>Counts</h2>{pre_json(summary["counts"])}
<h2>Settings</h2>{pre_json(summary["config"])}
<h2>Timings (s)</h2>{pre_json(summary["timings"])}"""
    return page(f"personaspace axis report: {summary['model_id']}", body)
