"""The axis run's HTML report: headline figures, plots, settings. One file, no links out."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import torch

from personaspace.analysis import pca
from personaspace.fileformat import atomic_write
from personaspace.pipeline.aggregate import Aggregate
from personaspace.report import plots

PUBLISHED = [
    ("cos(axis, PC1) at the middle layer", "> 0.71 (Gemma 2 27B, Qwen 3 32B, Llama 3.3 70B)"),
    (
        "components for 70% of role variance",
        "4 / 8 / 19 (Gemma 2 27B / Qwen 3 32B / Llama 3.3 70B)",
    ),
    ("roles near the Assistant end", "evaluator, consultant, reviewer"),
    ("roles at the far end", "ghost, leviathan, bard"),
]


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    return f"<table>{body}</table>"


def write_report(path: Path, summary: dict[str, Any], agg: Aggregate, layers: list[int]) -> None:
    """Write ``report.html`` for a finished run."""
    analysis = summary["analysis"]
    at = analysis["at_analysis_layer"]
    layer = analysis["analysis_layer"]
    li = layers.index(layer)
    names = sorted(agg.role_vectors)
    stack = torch.stack([agg.role_vectors[n][li] for n in names])
    p = pca(stack, normalize_rows=summary["config"]["normalize_rows"])
    sign = 1.0 if float((agg.default_vector[li] - p.mean) @ p.components[0]) >= 0 else -1.0
    xs = (sign * p.scores[:, 0]).tolist()
    ys = p.scores[:, 1].tolist() if p.scores.shape[1] > 1 else [0.0] * len(names)
    default_centred = agg.default_vector[li] - p.mean
    marked = (
        float(sign * default_centred @ p.components[0]),
        float(default_centred @ p.components[1]) if p.components.shape[0] > 1 else 0.0,
    )
    unit = agg.axis[li] / agg.axis[li].norm()
    colours = [float(agg.role_vectors[n][li] @ unit) for n in names]
    figures = [
        plots.figure_png(
            lambda ax: plots.scatter_roles(
                ax, xs, ys, colours, names, marked, f"Persona space at layer {layer}"
            ),
            (9, 7),
        ),
        plots.figure_png(
            lambda ax: (
                ax.bar(range(1, len(at["explained_top10"]) + 1), at["explained_top10"]),
                ax.set_xlabel("component"),
                ax.set_ylabel("variance explained"),
                ax.set_title(f"Variance explained by role-vector PCs (layer {layer})"),
            )
        ),
        plots.figure_png(
            lambda ax: plots.line(
                ax,
                [r["layer"] for r in analysis["layers"]],
                [r["cos_axis_pc1"] for r in analysis["layers"]],
                "cos(Assistant Axis, PC1) by layer",
                "cosine",
                reference=0.6,
            )
        ),
    ]
    ranked = at["roles_by_axis"]
    ends = ranked[:10] + ranked[-10:] if len(ranked) > 20 else ranked
    figures.append(
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
    traits = sorted(at["trait_cos_axis"].items(), key=lambda kv: -kv[1])
    if traits:
        figures.append(
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
    headline = [
        ("model", summary["model_id"]),
        ("analysis layer", f"{layer} of {summary['n_layers']}"),
        ("roles kept / dropped", f"{len(names)} / {len(summary['counts']['roles_dropped'])}"),
        ("cos(axis, PC1)", f"{at['cos_axis_pc1']:.3f}"),
        (
            "components for 70 / 80 / 90% variance",
            f"{at['components_70']} / {at['components_80']} / {at['components_90']}",
        ),
        (
            "default's rank on PC1 (1 = Assistant end)",
            f"{at['default_pc1_rank']} of {len(names) + 1}",
        ),
        ("roles nearest the default", ", ".join(n for n, _ in at["nearest_to_default"][:5])),
        ("Assistant end of the axis", ", ".join(at["assistant_end"][:5])),
        ("far end of the axis", ", ".join(at["far_end"][:5])),
    ]
    images = "".join(f'<figure><img src="{src}"></figure>' for src in figures)
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>personaspace axis report: {html.escape(summary["model_id"])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}th,td{{border:1px solid #ccc;padding:4px 8px;
text-align:left;font-size:14px}}th{{background:#f4f4f4}}img{{max-width:100%}}
pre{{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}}</style></head><body>
<h1>Persona space of {html.escape(summary["model_id"])}</h1>
<h2>Headline figures</h2>{_table(headline)}
<h2>Published figures for comparison (27-70B models)</h2>{_table(PUBLISHED)}
<p>Small models may differ from the published ones; these are the figures measured here.</p>
<h2>Plots</h2>{images}
<h2>Counts</h2><pre>{html.escape(json.dumps(summary["counts"], indent=1))}</pre>
<h2>Settings</h2><pre>{html.escape(json.dumps(summary["config"], indent=1))}</pre>
<h2>Timings (s)</h2><pre>{html.escape(json.dumps(summary["timings"], indent=1))}</pre>
</body></html>"""
    with atomic_write(path) as handle:
        handle.write(page)
