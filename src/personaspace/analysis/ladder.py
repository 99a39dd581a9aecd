"""The ladder: several rungs of one architecture, in training order, against the last one.

A ladder is a random-initialised model (optional), the base model and the tuned model at
several points of its training, each run through the axis pipeline. Every rung is set
against the **final** rung (the last trained one) and against the **base** rung, with the
two-run figures of ``analysis.compare``:

- at every layer both have: cos(axis_rung, axis_final) and cos(axis_rung, axis_base);
- at the analysis layer: the role vectors' cosines with the final rung's (raw and centred,
  mean over the shared roles with a 95 % bootstrap interval), the cosines and principal
  angles of the top-k PCs vs final and vs base, Spearman's rho of the roles' ranking
  along the axis and along PC1 vs final and vs base (permutation p, bootstrap interval),
  where the default sits (its rank on PC1, its position on the final axis in standard
  deviations of the roles') and how far it moved from the base, and the leave-one-role-out
  null of the rung's default.

Two nulls stand beside the cosines: the random-init rung's value of the same figure, and
the random-direction baseline (the 95th percentile of |cos| between the final axis and
seeded random unit vectors of the hidden size). All figures are over the roles every rung
kept.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import torch

from personaspace.analysis.compare import (
    MIN_SHARED_ROLES,
    ComparedRun,
    axis_cosines,
    check_settings,
    compare_ranks,
    default_movement,
    default_null,
    principal_components,
    role_pair_cosines,
    same_architecture,
    subspace_cosines,
)
from personaspace.analysis.intervals import IntervalJSON, mean_interval, random_direction_null
from personaspace.errors import PersonaspaceError
from personaspace.vectors.shape import unit

RungKind = Literal["random_init", "base", "tuned"]
RUNG_KINDS: tuple[str, ...] = ("random_init", "base", "tuned")
MIN_RUNGS = 3
N_RANDOM_DIRECTIONS = 1_000


@dataclass(frozen=True, eq=False)
class Rung:
    """One rung of a ladder: a run, its label, its training progress in [0, 1] (``None``
    for a rung outside training, such as the random-init one) and what it is."""

    run: ComparedRun
    label: str
    progress: float | None = None
    kind: RungKind = "tuned"


class RandomDirectionBaseline(TypedDict):
    abs_cos_p95: float
    n_directions: int
    seed: int
    hidden_size: int


class LadderRow(TypedDict):
    label: str
    kind: str
    progress: float | None
    x: float | None
    model_id: str
    roles_kept: int
    axis_cos_final_by_layer: list[dict[str, float | int]]
    axis_cos_base_by_layer: list[dict[str, float | int]]
    axis_cos_final: float
    axis_cos_base: float
    role_cos_final_raw: IntervalJSON
    role_cos_final_centred: IntervalJSON
    pc_cos_final: dict[str, list[float]]
    pc_cos_base: dict[str, list[float]]
    spearman_axis_final: dict[str, Any]
    spearman_pc1_final: dict[str, Any]
    spearman_axis_base: dict[str, Any]
    spearman_pc1_base: dict[str, Any]
    default_axis_rank: int
    default_pc1_rank: int
    default_on_final_axis: float
    default_on_final_axis_sd: float | None
    default_moved_from_base_sd: float | None
    default_shift_from_base: float
    default_null: dict[str, Any]


class LadderResult(TypedDict):
    layer: int
    hidden_size: int
    n_layers: int
    k: int
    final: str
    base: str
    random_init: str | None
    roles: dict[str, Any]
    settings: dict[str, int]
    nulls: dict[str, Any]
    rungs: list[LadderRow]


def check_ladder(
    labels: Sequence[str], progress: Sequence[float | None], kinds: Sequence[str]
) -> None:
    """Refuse a ladder that cannot be read (before any run is loaded): fewer than
    ``MIN_RUNGS`` rungs, lists of other lengths, repeated labels, not exactly one base, more
    than one random-init rung, no trained rung, progress outside [0, 1] or going backwards,
    progress on the random-init rung, or progress on some trained rungs but not others.

    Example:
        >>> check_ladder(["b", "t1", "t2"], [None, 0.5, 1.0], ["base", "tuned", "tuned"])
        >>> try:
        ...     check_ladder(["b", "t1", "t2"], [None, 1.0], ["base", "tuned", "tuned"])
        ... except PersonaspaceError as err:
        ...     print(err)
        progress has 2 values for 3 rungs: give one per rung, in training order (- for none)
    """
    n = len(labels)
    if n < MIN_RUNGS:
        raise PersonaspaceError(
            f"a ladder of {n} rungs",
            fix=f"give at least {MIN_RUNGS} runs in training order (for two runs, compare "
            "them as a pair)",
            param="rungs",
        )
    for name, values in (("progress", progress), ("kinds", kinds)):
        if len(values) != n:
            raise PersonaspaceError(
                f"{name} has {len(values)} values for {n} rungs",
                fix="give one per rung, in training order (- for none)",
                param=name,
            )
    if any(not label for label in labels) or len(set(labels)) != n:
        raise PersonaspaceError(
            f"labels {','.join(labels)} are empty or repeat",
            fix="give each rung its own name",
            param="labels",
        )
    unknown = sorted(set(kinds) - set(RUNG_KINDS))
    if unknown:
        raise PersonaspaceError(
            f"unknown rung kind {unknown[0]!r}", fix="use " + ", ".join(RUNG_KINDS)
        )
    counts = {kind: list(kinds).count(kind) for kind in RUNG_KINDS}
    if counts["base"] != 1 or counts["random_init"] > 1 or counts["tuned"] < 1:
        raise PersonaspaceError(
            f"a ladder of {counts['base']} base, {counts['random_init']} random-init and "
            f"{counts['tuned']} trained rungs",
            fix="mark exactly one rung as the base, at most one as random-init, and keep at "
            "least one trained rung",
        )
    for label, value, kind in zip(labels, progress, kinds):
        if value is None:
            continue
        if kind == "random_init":
            raise PersonaspaceError(
                f"progress {value:g} on the random-init rung {label}",
                fix="give - (it is not a point of training)",
                param="progress",
            )
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise PersonaspaceError(
                f"progress {value:g} of {label} is not a fraction in [0, 1]",
                fix="give the share of training done (0.25 for a quarter)",
                param="progress",
            )
    given = [(lab, p) for lab, p in zip(labels, progress) if p is not None]
    for (first, p), (then, q) in itertools.pairwise(given):
        if q < p:
            raise PersonaspaceError(
                f"progress goes back from {p:g} ({first}) to {q:g} ({then})",
                fix="list the rungs in training order",
                param="progress",
            )
    tuned = [p for p, kind in zip(progress, kinds) if kind == "tuned"]
    if any(p is None for p in tuned) and any(p is not None for p in tuned):
        raise PersonaspaceError(
            "progress is given for some trained rungs but not for others",
            fix="give a fraction for every trained rung, or for none",
            param="progress",
        )


def positions(progress: Sequence[float | None], kinds: Sequence[str]) -> list[float | None]:
    """Where each rung sits on the x axis of the ladder's plot: its progress when the
    trained rungs have one (a rung without one, such as the base, is then drawn as a
    reference line: ``None``), otherwise its place in the order, the random-init rung
    always a reference line.

    Example:
        >>> kinds = ["random_init", "base", "tuned", "tuned", "tuned"]
        >>> positions([None, None, 0.0, 0.5, 1.0], kinds)
        [None, None, 0.0, 0.5, 1.0]
        >>> positions([None, None, None, None], ["random_init", "base", "tuned", "tuned"])
        [None, 0.0, 1.0, 2.0]
    """
    if any(p is not None for p, kind in zip(progress, kinds) if kind == "tuned"):
        return [None if kind == "random_init" else p for p, kind in zip(progress, kinds)]
    out: list[float | None] = []
    for kind in kinds:
        out.append(None if kind == "random_init" else float(sum(x is not None for x in out)))
    return out


def _check_architecture(rungs: Sequence[Rung], final: Rung, layer: int) -> None:
    """Refuse a rung of another shape than most rungs (ties: the final rung's), naming it."""

    def shape(rung: Rung) -> tuple[int, int]:
        return rung.run.hidden_size, rung.run.n_layers

    shapes = [shape(r) for r in rungs]
    common = max(shapes, key=lambda s: (shapes.count(s), s == shape(final)))
    ref = final if shape(final) == common else next(r for r in rungs if shape(r) == common)
    for rung in rungs:
        if not same_architecture(rung.run, ref.run):
            raise PersonaspaceError(
                f"rung {rung.label} ({rung.run.model_id}) has hidden size "
                f"{rung.run.hidden_size} and {rung.run.n_layers} layers, but {ref.label} "
                f"({ref.run.model_id}) has {ref.run.hidden_size} and {ref.run.n_layers}",
                fix=f"a ladder holds runs of one architecture: drop {rung.label}, or compare "
                f"it with {ref.label} as a pair (rank figures work across architectures)",
            )
    for rung in rungs:
        rung.run.row(layer)  # a rung without vectors at the analysis layer is refused here


def ladder_roles(rungs: Sequence[Rung], minimum: int = MIN_SHARED_ROLES) -> list[str]:
    """The roles every rung kept (sorted), refusing fewer than ``minimum`` with each count.

    Example:
        >>> z = torch.zeros(1, 2)
        >>> run = ComparedRun("r", "m", [0], 1, 2, 0, z, z, {"x": z, "y": z})
        >>> ladder_roles([Rung(run, "a"), Rung(run, "b")], minimum=2)
        ['x', 'y']
    """
    shared = sorted(set.intersection(*(set(r.run.roles) for r in rungs)))
    if len(shared) < minimum:
        counts = ", ".join(f"{r.label}: {len(r.run.roles)}" for r in rungs)
        raise PersonaspaceError(
            f"the rungs share only {len(shared)} roles ({counts}); a ladder needs at least "
            f"{minimum}",
            fix="run every rung with the same preset and catalogue (or --judge none to keep "
            "every role)",
        )
    return shared


def random_direction_baseline(
    direction: torch.Tensor, *, n_random: int = N_RANDOM_DIRECTIONS, seed: int = 0
) -> RandomDirectionBaseline:
    """The 95th percentile of |cos(direction, r)| over ``n_random`` seeded random unit
    vectors ``r`` of the same size: a cosine below it is what chance gives.

    Example:
        >>> d = torch.ones(400)
        >>> b = random_direction_baseline(d, n_random=500, seed=3)
        >>> 0.07 < b["abs_cos_p95"] < 0.13, b == random_direction_baseline(d, n_random=500, seed=3)
        (True, True)
    """
    u = unit(direction.detach().to("cpu", torch.float64))
    null = random_direction_null(u, u, n_random=n_random, seed=seed)
    return {
        "abs_cos_p95": round(null.random_abs_p95, 6),
        "n_directions": n_random,
        "seed": seed,
        "hidden_size": int(u.shape[-1]),
    }


def _at(rows: list[dict[str, float | int]], layer: int) -> float:
    return float(next(r["cos"] for r in rows if r["layer"] == layer))


def _rung_row(
    rung: Rung,
    final: Rung,
    base: Rung,
    names: list[str],
    layer: int,
    x: float | None,
    *,
    k: int,
    base_on_final_sd: float | None,
    stats: dict[str, int],
) -> LadderRow:
    run = rung.run
    to_final, to_base = axis_cosines(run, final.run), axis_cosines(run, base.run)
    pairs = role_pair_cosines(run, final.run, names, layer)
    seed, n_boot = stats["seed"], stats["n_bootstrap"]
    comps = principal_components(run, names, layer, k)[0]
    comps_final = principal_components(final.run, names, layer, k)[0]
    comps_base = principal_components(base.run, names, layer, k)[0]
    ranks_final = compare_ranks(run, final.run, names, layer_a=layer, layer_b=layer, **stats)
    ranks_base = compare_ranks(run, base.run, names, layer_a=layer, layer_b=layer, **stats)
    on_final = default_movement(run, final.run, names, layer)
    own = ranks_final["positions"]["a"]
    on_final_sd = on_final["default_a_on_axis_b_sd"]
    moved = (
        round(on_final_sd - base_on_final_sd, 4)
        if on_final_sd is not None and base_on_final_sd is not None
        else None
    )
    return {
        "label": rung.label,
        "kind": rung.kind,
        "progress": rung.progress,
        "x": x,
        "model_id": run.model_id,
        "roles_kept": len(run.roles),
        "axis_cos_final_by_layer": to_final,
        "axis_cos_base_by_layer": to_base,
        "axis_cos_final": _at(to_final, layer),
        "axis_cos_base": _at(to_base, layer),
        "role_cos_final_raw": mean_interval(
            [v["raw"] for v in pairs.values()], seed=seed, n_resamples=n_boot
        ).to_json(),
        "role_cos_final_centred": mean_interval(
            [v["centred"] for v in pairs.values()], seed=seed, n_resamples=n_boot
        ).to_json(),
        "pc_cos_final": subspace_cosines(comps, comps_final),
        "pc_cos_base": subspace_cosines(comps, comps_base),
        "spearman_axis_final": ranks_final["spearman_axis"],
        "spearman_pc1_final": ranks_final["spearman_pc1"],
        "spearman_axis_base": ranks_base["spearman_axis"],
        "spearman_pc1_base": ranks_base["spearman_pc1"],
        "default_axis_rank": own["default_axis_rank"],
        "default_pc1_rank": own["default_pc1_rank"],
        "default_on_final_axis": on_final["default_a_on_axis_b"],
        "default_on_final_axis_sd": on_final_sd,
        "default_moved_from_base_sd": moved,
        "default_shift_from_base": default_movement(base.run, run, names, layer)["shift_along_b"],
        "default_null": default_null(run, names, layer),
    }


def headline(row: LadderRow) -> dict[str, Any]:
    """The cosines and correlations of one row that the nulls stand beside.

    Example:
        >>> headline({"axis_cos_final": 0.5, "axis_cos_base": 0.25,
        ...           "pc_cos_final": {"matched": [0.9], "principal": [0.95]},
        ...           "role_cos_final_centred": {"mean": 0.4},
        ...           "spearman_axis_final": {"rho": 0.8},
        ...           "spearman_pc1_final": {"rho": 0.7}})["pc_cos_final_matched"]
        [0.9]
    """
    return {
        "axis_cos_final": row["axis_cos_final"],
        "axis_cos_base": row["axis_cos_base"],
        "pc_cos_final_matched": row["pc_cos_final"]["matched"],
        "pc_cos_final_principal": row["pc_cos_final"]["principal"],
        "role_cos_final_centred": row["role_cos_final_centred"]["mean"],
        "spearman_axis_final": row["spearman_axis_final"]["rho"],
        "spearman_pc1_final": row["spearman_pc1_final"]["rho"],
    }


def ladder(
    rungs: Sequence[Rung],
    *,
    k: int = 3,
    layer: int | None = None,
    n_permutations: int = 10_000,
    n_bootstrap: int = 2_000,
    n_random: int = N_RANDOM_DIRECTIONS,
    seed: int = 0,
) -> LadderResult:
    """Every rung against the final (last trained) rung and the base rung, JSON-ready.

    ``layer`` (default: the final rung's analysis layer) is where the persona spaces are
    compared; ``k`` principal components (at most the shared roles minus one);
    ``n_permutations`` and ``n_bootstrap`` for Spearman's rho and the role-cosine intervals;
    ``n_random`` random unit vectors for the random-direction baseline; all seeded by
    ``seed``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> roles = {f"r{i}": torch.randn(1, 6, generator=g) for i in range(8)}
        >>> run = ComparedRun("m", "m", [0], 1, 6, 0, torch.ones(1, 6), 3 * torch.ones(1, 6), roles)
        >>> rungs = [Rung(run, "base", kind="base"), Rung(run, "half", 0.5), Rung(run, "end", 1.0)]
        >>> result = ladder(rungs, n_permutations=99, n_bootstrap=50, n_random=100)
        >>> result["final"], [row["axis_cos_final"] for row in result["rungs"]]
        ('end', [1.0, 1.0, 1.0])
        >>> [row["spearman_axis_final"]["rho"] for row in result["rungs"]]
        [1.0, 1.0, 1.0]
    """
    # a ladder reports no top/bottom role lists, so any valid top will do
    check_settings(k=k, top=2, n_permutations=n_permutations, n_bootstrap=n_bootstrap)
    check_ladder([r.label for r in rungs], [r.progress for r in rungs], [r.kind for r in rungs])
    final = [r for r in rungs if r.kind == "tuned"][-1]
    [base] = [r for r in rungs if r.kind == "base"]
    random_init = next((r for r in rungs if r.kind == "random_init"), None)
    layer = final.run.analysis_layer if layer is None else layer
    _check_architecture(rungs, final, layer)
    names = ladder_roles(rungs)
    k = max(1, min(k, len(names) - 1))
    baseline = random_direction_baseline(
        final.run.axis[final.run.row(layer)], n_random=n_random, seed=seed
    )
    stats = {"n_permutations": n_permutations, "n_bootstrap": n_bootstrap, "seed": seed}
    base_on_final_sd = default_movement(base.run, final.run, names, layer)["default_a_on_axis_b_sd"]
    xs = positions([r.progress for r in rungs], [r.kind for r in rungs])
    rows = [
        _rung_row(
            rung, final, base, names, layer, x, k=k, base_on_final_sd=base_on_final_sd, stats=stats
        )
        for rung, x in zip(rungs, xs)
    ]
    random_row = next((row for row in rows if row["kind"] == "random_init"), None)
    return {
        "layer": layer,
        "hidden_size": final.run.hidden_size,
        "n_layers": final.run.n_layers,
        "k": k,
        "final": final.label,
        "base": base.label,
        "random_init": random_init.label if random_init else None,
        "roles": {"shared": len(names), "shared_names": names},
        "settings": {**stats, "n_random": n_random},
        "nulls": {
            "random_init": headline(random_row) if random_row else None,
            "random_direction": baseline,
        },
        "rungs": rows,
    }


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def ladder_table(result: LadderResult) -> str:
    """The headline figures, one markdown row per rung, and a last row with the
    random-direction baseline in the cosine columns (the random-init rung is a row too).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> roles = {f"r{i}": torch.randn(1, 6, generator=g) for i in range(8)}
        >>> run = ComparedRun("m", "m", [0], 1, 6, 0, torch.ones(1, 6), 3 * torch.ones(1, 6), roles)
        >>> rungs = [Rung(run, "base", kind="base"), Rung(run, "half", 0.5), Rung(run, "end", 1.0)]
        >>> table = ladder_table(ladder(rungs, n_permutations=99, n_bootstrap=50, n_random=100))
        >>> print(table.splitlines()[3])
        | half | 50 % | 1.000 | 1.000 | 1.000 | 1.000 [1.00, 1.00] | 2 of 9 | 0.67 / 0.22 |
    """
    n = result["roles"]["shared"]
    lines = [
        "| rung | progress | cos(axis, final) | cos(axis, base) | PC1 cos with final "
        "| Spearman axis vs final [95 % CI] | default PC1 rank "
        "| leave-one-role-out p (cos / rank) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rungs"]:
        kind, label = row["kind"].replace("_", "-"), row["label"]
        if kind != "tuned" and kind not in label.lower():
            label = f"{label} ({kind})"
        progress = "-" if row["progress"] is None else f"{100 * row['progress']:g} %"
        rho = row["spearman_axis_final"]
        null = row["default_null"]
        lines.append(
            f"| {label} | {progress} | {_num(row['axis_cos_final'])} "
            f"| {_num(row['axis_cos_base'])} | {_num(row['pc_cos_final']['matched'][0])} "
            f"| {_num(rho['rho'])} [{_num(rho['ci_low'], 2)}, {_num(rho['ci_high'], 2)}] "
            f"| {row['default_pc1_rank']} of {n + 1} "
            f"| {null['p_cos']:.2f} / {null['p_extreme']:.2f} |"
        )
    p95 = _num(result["nulls"]["random_direction"]["abs_cos_p95"])
    lines.append(
        f"| random direction (95 % of \\|cos\\|) | - | {p95} | {p95} | {p95} | - | - | - |"
    )
    return "\n".join(lines)
