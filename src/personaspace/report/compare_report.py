"""The report of ``personaspace compare``: side-by-side plots (PNG) and one HTML page."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from personaspace.fileformat import atomic_path, atomic_write
from personaspace.report import plots
from personaspace.report.page import data_uri, figures, page, pre_json, table

PUBLISHED_BASE_VS_INSTRUCT = [
    ("base vs instruct, cosines of the top-3 role PCs (Gemma 2 27B)", "0.93 / 0.87 / 0.83"),
    ("base vs instruct, cosine of every role vector pair (Gemma 2 27B)", "> 0.99"),
    ("PC1 role loadings across models (different families)", "correlation > 0.92"),
    ("cos(axis, PC1) at the middle layer", "> 0.71"),
    ("base model's Assistant end", "helpful human professionals (therapist, consultant, coach)"),
]

# The published figure: > 0.60 at every layer (and > 0.71 at the middle layer).
PUBLISHED_LAYER_COSINE_LABEL = "published cos(axis, PC1) > 0.60 at every layer"


def _png(draw: Callable[[Figure], None], size: tuple[float, float]) -> bytes:
    return plots.render_png(draw, size, dpi=90)


def _space(ax: Axes, result: dict[str, Any], tag: str) -> None:
    pos = result["ranks"]["positions"][tag]
    names = sorted(pos["on_pc1"])
    run = result[tag]
    plots.scatter_roles(
        ax,
        [pos["on_pc1"][n] for n in names],
        [pos["pc2"][n] for n in names],
        [pos["on_axis"][n] for n in names],
        names,
        (pos["default_on_pc1"], pos["default_pc2"]),
        f"{run['model_id']}: layer {pos['layer']} of {run['n_layers']}",
    )


def _ranks(ax: Axes, result: dict[str, Any], key: str, title: str) -> None:
    pos = result["ranks"]["positions"]
    names = sorted(pos["a"][key])

    def ranks(values: dict[str, float]) -> dict[str, int]:
        order = sorted(names, key=lambda n: (-values[n], n))
        return {n: i + 1 for i, n in enumerate(order)}

    ra, rb = ranks(pos["a"][key]), ranks(pos["b"][key])
    ax.scatter([ra[n] for n in names], [rb[n] for n in names], s=18, c="#2b6cb0")
    for n in names:
        ax.annotate(
            n, (ra[n], rb[n]), fontsize=5.5, alpha=0.8, xytext=(2, 2), textcoords="offset points"
        )
    stat = result["ranks"]["spearman_axis" if key == "on_axis" else "spearman_pc1"]
    ax.set_title(
        f"{title}\nSpearman {stat['rho']:.2f} [{stat['ci_low']:.2f}, {stat['ci_high']:.2f}], "
        f"p = {stat['p_permutation']:.3g}, n = {stat['n']}",
        fontsize=9,
    )
    ax.set_xlabel(f"rank in {result['a']['model_id']} (1 = Assistant end)")
    ax.set_ylabel(f"rank in {result['b']['model_id']}")
    ax.plot([1, len(names)], [1, len(names)], ls=":", c="grey", lw=1)


def _layers(ax: Axes, result: dict[str, Any]) -> None:
    for tag, colour in (("a", "#2b6cb0"), ("b", "#c05621")):
        rows = result["profiles"][tag]
        ax.plot(
            [r["depth"] for r in rows],
            [abs(r["cos_axis_pc1"]) for r in rows],
            marker="o",
            ms=3,
            c=colour,
            label=f"|cos(axis, PC1)| {result[tag]['model_id']}",
        )
    same = result.get("same_architecture")
    if same:
        n = max(result["a"]["n_layers"] - 1, 1)
        ax.plot(
            [r["layer"] / n for r in same["axis_cosine_by_layer"]],
            [r["cos"] for r in same["axis_cosine_by_layer"]],
            marker="s",
            ms=3,
            c="black",
            label="cos(axis A, axis B)",
        )
    ax.axhline(0.6, ls="--", c="grey", lw=1, label=PUBLISHED_LAYER_COSINE_LABEL)
    ax.set_xlabel("relative depth (layer / (layers - 1))")
    ax.set_ylabel("cosine")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    ax.set_title("Per-layer cosines")


def _steering(ax: Axes, steering: dict[str, Any]) -> None:
    rows = steering["by_coefficient"]
    coefs = [r["coef_frac"] for r in rows]
    ax.errorbar(
        coefs,
        [r["reread_on_axis_mean"] for r in rows],
        yerr=[r["reread_on_axis_sd"] for r in rows],
        marker="o",
        capsize=3,
    )
    ax.set_xlabel("steering coefficient (x mean residual norm at the layer)")
    ax.set_ylabel("re-read completion . unit axis")
    ax.set_title(
        f"Steering {steering['model_id']} at layer {steering['layer']} "
        f"with the axis of {steering['axis_model_id']}",
        fontsize=9,
    )


def compare_figures(result: dict[str, Any]) -> dict[str, bytes]:
    """PNG bytes by name: ``persona_spaces``, ``role_ranks``, ``layer_cosines`` (and
    ``steering`` when the result holds a steering study)."""

    def spaces(fig: Figure) -> None:
        for i, tag in enumerate("ab"):
            _space(fig.add_subplot(1, 2, i + 1), result, tag)

    def rankings(fig: Figure) -> None:
        _ranks(fig.add_subplot(1, 2, 1), result, "on_axis", "Roles ranked on each axis")
        _ranks(fig.add_subplot(1, 2, 2), result, "on_pc1", "Roles ranked on each PC1")

    pngs = {
        "persona_spaces": _png(spaces, (15, 6.5)),
        "role_ranks": _png(rankings, (13, 6)),
        "layer_cosines": _png(lambda fig: _layers(fig.add_subplot(1, 1, 1), result), (7, 4.2)),
    }
    if result.get("steering"):
        pngs["steering"] = _png(
            lambda fig: _steering(fig.add_subplot(1, 1, 1), result["steering"]), (7, 4.2)
        )
    return pngs


def headline_rows(result: dict[str, Any]) -> list[tuple[str, Any]]:
    """The figures a reader wants first, as (name, value) rows."""
    ranks = result["ranks"]
    sa, sp = ranks["spearman_axis"], ranks["spearman_pc1"]
    ends = ranks["axis_ends"]
    rows: list[tuple[str, Any]] = [
        ("runs", f"{result['a']['model_id']} (A) vs {result['b']['model_id']} (B)"),
        ("comparison", result["mode"].replace("_", " ")),
        ("shared roles", result["roles"]["shared"]),
        (
            "Spearman, roles on each own axis",
            f"{sa['rho']:.3f} (95% CI {sa['ci_low']:.2f}..{sa['ci_high']:.2f}, "
            f"permutation p = {sa['p_permutation']:.3g})",
        ),
        (
            "Spearman, roles on each own PC1",
            f"{sp['rho']:.3f} (95% CI {sp['ci_low']:.2f}..{sp['ci_high']:.2f}, "
            f"permutation p = {sp['p_permutation']:.3g})",
        ),
        (
            f"top-{ends['top']} / bottom-{ends['top']} overlap on the axes",
            f"{ends['top_overlap']} / {ends['bottom_overlap']} (chance {ends['chance']:.1f})",
        ),
        ("nearest the default in A", ", ".join(n for n, _ in ranks["nearest_to_default"]["a"])),
        ("nearest the default in B", ", ".join(n for n, _ in ranks["nearest_to_default"]["b"])),
    ]
    for tag in ("a", "b"):
        pos = ranks["positions"][tag]
        rows.append(
            (
                f"{result[tag]['model_id']}: cos(axis, PC1); default rank on PC1",
                f"{pos['cos_axis_pc1']:.3f}; {pos['default_pc1_rank']} of "
                f"{result['roles']['shared'] + 1}",
            )
        )
    for tag in ("a", "b"):
        own = result.get("own_roles", {}).get(tag)
        if own is None:
            continue
        layer = result[tag]["analysis_layer"]
        [null] = [n for n in own["null"] if n["layer"] == layer]
        rows.append(
            (
                f"{result[tag]['model_id']}, all {own['n_roles']} own roles, layer {layer}",
                f"|cos(axis, PC1)| {null['default_abs_cos']:.3f} (leave-one-role-out p = "
                f"{null['p_cos']:.2f}); default rank {null['default_rank']} of "
                f"{own['n_roles'] + 1} (p = {null['p_extreme']:.2f})",
            )
        )
    same = result.get("same_architecture")
    if same:
        summary = same["role_pair_cosine_summary"]
        rows += [
            ("cos(axis A, axis B) at the analysis layer", f"{same['axis_cosine_at_layer']:.3f}"),
            (
                f"top-{same['pc_cosines']['k']} PC cosines (matched)",
                " / ".join(f"{c:.2f}" for c in same["pc_cosines"]["matched"]),
            ),
            (
                "principal-angle cosines",
                " / ".join(f"{c:.2f}" for c in same["pc_cosines"]["principal"]),
            ),
            (
                "role pair cosines, raw: min / median",
                f"{summary['raw_min']:.3f} / {summary['raw_median']:.3f}",
            ),
            (
                "role pair cosines, centred: min / median",
                f"{summary['centred_min']:.3f} / {summary['centred_median']:.3f}",
            ),
            ("default moved along B's axis", same["default_movement"]["shift_along_b"]),
        ]
    return rows


def write_compare_report(
    folder: str | Path, result: dict[str, Any], figures_png: dict[str, bytes]
) -> Path:
    """Write ``compare.html`` (self-contained) and one PNG per figure into ``folder``."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for name, png in figures_png.items():
        with atomic_path(out / f"compare_{name}.png") as tmp:
            tmp.write_bytes(png)
    images = figures([(data_uri(png), name.replace("_", " ")) for name, png in figures_png.items()])
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result["notes"]) or "<li>none</li>"
    steering = result.get("steering")
    steer_html = ""
    if steering:
        steer_rows = [
            (
                f"coef {r['coef_frac']:+g}",
                f"on axis {r['reread_on_axis_mean']:.2f}; nearest roles (activation): "
                f"{', '.join(r['nearest_by_activation'][:3])}; (judge): "
                f"{', '.join(r['nearest_by_judge'][:3])}",
            )
            for r in steering["by_coefficient"]
        ]
        samples = "".join(
            f"<li><b>{c['coef_frac']:+g}</b> {html.escape(c['prompt'])} "
            f"<i>{html.escape(c['completion'][:200])}</i></li>"
            for c in steering["completions"][:: max(1, len(steering["completions"]) // 30)]
        )
        steer_html = f"<h2>Steering the base model</h2>{table(steer_rows)}<ul>{samples}</ul>"
    a_id, b_id = html.escape(result["a"]["model_id"]), html.escape(result["b"]["model_id"])
    body = f"""<h1>Two persona spaces: {a_id} and
{b_id}</h1>
<h2>Headline figures</h2>{table(headline_rows(result))}
<h2>Notes</h2><ul>{notes}</ul>
<h2>Published figures (Lu et al. 2026)</h2>{table(PUBLISHED_BASE_VS_INSTRUCT)}
<h2>Plots</h2>{images}{steer_html}
<h2>Runs</h2>{pre_json([result["a"], result["b"]])}"""
    title = f"personaspace compare: {result['a']['model_id']} vs {result['b']['model_id']}"
    with atomic_write(out / "compare.html") as handle:
        handle.write(page(title, body, width=1100))
    return out / "compare.html"
