"""Compare two persona spaces: a base model and its instruct model, or any two models.

Two kinds of figures, both pure functions of the runs' vectors:

- **Same architecture** (equal hidden size and layer count, e.g. a base model and its
  instruct model): the cosine of the two Assistant Axes at every layer; the cosine of each
  shared role's two vectors (raw, and centred on each model's mean role vector); cosines
  between the top-k principal components of the two persona spaces (index by index, and
  the principal angles between the two k-dimensional subspaces); and how far the default
  vector moved along the axis.
- **Rank-based** (any two models, even of different families and sizes): each model ranks
  the shared roles by their projection on its own axis and by its own PC1; Spearman's rho
  of the two rankings with a permutation test and a bootstrap interval; the overlap of the
  top and bottom roles; the roles nearest each model's default.

Only roles both runs kept are compared; fewer than ``MIN_SHARED_ROLES`` is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from personaspace.analysis.persona_space import pca
from personaspace.analysis.stats import end_overlap, rank_correlation
from personaspace.errors import PersonaspaceError
from personaspace.vectors.shape import cosine as _cos
from personaspace.vectors.shape import unit as _unit

Mode = Literal["auto", "same", "rank"]
MODES: tuple[str, ...] = ("auto", "same", "rank")

# Below 8 shared roles a rank comparison says little: with n = 7 a Spearman rho must
# reach 0.79 to be significant at 5 % (two-sided) and a bootstrap resample repeats most
# roles. With fewer than 2 x top shared roles (20 for the default top of 10),
# compare_ranks lowers top to half of them, so the top and bottom lists together hold
# every role (all but the middle one when the count is odd) and say nothing about the
# middle. 8 is the least we accept; 20 or more, where the lists keep their full size and
# leave the middle out, is what a meaningful study should have.
MIN_SHARED_ROLES = 8


@dataclass(frozen=True, eq=False)
class ComparedRun:
    """What a comparison needs from one run. Vectors are ``[len(layers), hidden]``.

    ``analysis_layer`` is a model layer index (one of ``layers``) where the persona space is
    compared; ``catalogue`` is the run's user catalogue folder (``None`` = built-in).
    """

    label: str
    model_id: str
    layers: list[int]
    n_layers: int
    hidden_size: int
    analysis_layer: int
    axis: torch.Tensor
    default: torch.Tensor
    roles: dict[str, torch.Tensor]
    catalogue: str | None = None
    chat_tuned: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self, layer: int) -> int:
        """Row of ``layer`` in the vectors."""
        if layer not in self.layers:
            raise PersonaspaceError(
                f"{self.label} has no vectors for layer {layer}",
                fix=f"choose among layers {self.layers[0]}..{self.layers[-1]}",
            )
        return self.layers.index(layer)


def shared_roles(a: ComparedRun, b: ComparedRun) -> dict[str, Any]:
    """The roles both runs kept, and what each has alone.

    Example:
        >>> z = torch.zeros(1, 2)
        >>> ra = ComparedRun("a", "m", [0], 1, 2, 0, z, z, {"x": z, "y": z})
        >>> rb = ComparedRun("b", "m", [0], 1, 2, 0, z, z, {"y": z, "w": z})
        >>> shared_roles(ra, rb)["shared"], shared_roles(ra, rb)["only_a"]
        (['y'], ['x'])
    """
    names_a, names_b = set(a.roles), set(b.roles)
    return {
        "shared": sorted(names_a & names_b),
        "only_a": sorted(names_a - names_b),
        "only_b": sorted(names_b - names_a),
        "n_a": len(names_a),
        "n_b": len(names_b),
    }


def require_shared(a: ComparedRun, b: ComparedRun, minimum: int = MIN_SHARED_ROLES) -> list[str]:
    """The shared role names, refusing fewer than ``minimum`` (with the counts)."""
    info = shared_roles(a, b)
    if len(info["shared"]) < minimum:
        raise PersonaspaceError(
            f"the runs share only {len(info['shared'])} roles ({a.label}: {info['n_a']}, "
            f"{b.label}: {info['n_b']}); a rank comparison needs at least {minimum}",
            fix="run both models with the same preset and catalogue (or --score-threshold 2 "
            "/ --judge none to keep more roles)",
        )
    return list(info["shared"])


def same_architecture(a: ComparedRun, b: ComparedRun) -> bool:
    """Whether vectors of the two runs live in the same space (hidden size, layer count)."""
    return a.hidden_size == b.hidden_size and a.n_layers == b.n_layers


def require_same_architecture(a: ComparedRun, b: ComparedRun) -> None:
    """Refuse a same-architecture comparison of models with different shapes."""
    if a.hidden_size != b.hidden_size:
        raise PersonaspaceError(
            f"a same-architecture comparison needs equal hidden sizes, but {a.label} "
            f"({a.model_id}) has {a.hidden_size} and {b.label} ({b.model_id}) has "
            f"{b.hidden_size}",
            fix="use --mode rank for models of different families (or leave --mode auto)",
        )
    if a.n_layers != b.n_layers:
        raise PersonaspaceError(
            f"a same-architecture comparison needs equal layer counts, but {a.label} has "
            f"{a.n_layers} and {b.label} has {b.n_layers}",
            fix="use --mode rank for models of different architectures",
        )


# --- same architecture -------------------------------------------------------------------


def axis_cosines(a: ComparedRun, b: ComparedRun) -> list[dict[str, float | int]]:
    """cos(axis_a, axis_b) at every layer both runs have.

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> r = ComparedRun("a", "m", [0, 1], 2, 2, 1, x, x, {})
        >>> [row["cos"] for row in axis_cosines(r, r)]
        [1.0, 1.0]
    """
    return [
        {"layer": layer, "cos": round(_cos(a.axis[a.row(layer)], b.axis[b.row(layer)]), 6)}
        for layer in a.layers
        if layer in b.layers
    ]


def role_pair_cosines(
    a: ComparedRun, b: ComparedRun, names: list[str], layer: int
) -> dict[str, dict[str, float]]:
    """Per shared role: cosine of its two vectors, raw and centred on each model's role mean.

    Raw role vectors share a large common component (every reply is text from the same
    model), so raw cosines are near 1 almost by construction; the centred cosine asks
    whether the role differs from the average role in the same direction in both models.
    """
    ia, ib = a.row(layer), b.row(layer)
    mean_a = torch.stack([a.roles[n][ia] for n in names]).mean(0)
    mean_b = torch.stack([b.roles[n][ib] for n in names]).mean(0)
    return {
        n: {
            "raw": round(_cos(a.roles[n][ia], b.roles[n][ib]), 6),
            "centred": round(_cos(a.roles[n][ia] - mean_a, b.roles[n][ib] - mean_b), 6),
        }
        for n in names
    }


def principal_components(
    run: ComparedRun, names: list[str], layer: int, k: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Top-``k`` PCs ``[k, hidden]`` of the named roles, their scores ``[roles, k]`` and the
    sign that orients PC1 toward the default (applied to both)."""
    row = run.row(layer)
    plain = pca(torch.stack([run.roles[n][row] for n in names]))
    result = plain.toward(run.default[row])
    sign = 1.0 if result is plain else -1.0
    return result.components[:k].clone(), result.scores[:, :k].clone(), sign


def subspace_cosines(comps_a: torch.Tensor, comps_b: torch.Tensor) -> dict[str, list[float]]:
    """``matched``: |cos| of PC i of A with PC i of B; ``principal``: cosines of the principal
    angles between the two spans (singular values of ``A B^T``, largest first).

    Example:
        >>> e = torch.eye(3)
        >>> subspace_cosines(e[:2], e[[1, 0]])
        {'matched': [0.0, 0.0], 'principal': [1.0, 1.0]}
    """
    a, b = comps_a.double(), comps_b.double()
    matched = [round(abs(float(a[i] @ b[i])), 6) for i in range(min(len(a), len(b)))]
    principal = torch.linalg.svdvals(a @ b.T).clamp(max=1.0)
    return {"matched": matched, "principal": [round(float(s), 6) for s in principal]}


def default_movement(a: ComparedRun, b: ComparedRun, names: list[str], layer: int) -> dict:
    """Where each default sits along each axis, relative to its own roles, and the shift.

    ``position`` = (default - mean role) . unit axis, also in units of the standard
    deviation of the roles' projections (``_sd``). ``shift_along_b`` = (default_b -
    default_a) . unit(axis_b): how far instruction tuning (if A is the base model) moved the
    default along the instruct model's axis.
    """
    ia, ib = a.row(layer), b.row(layer)
    out: dict[str, Any] = {"layer": layer}
    for run, row, tag in ((a, ia, "a"), (b, ib, "b")):
        stack = torch.stack([run.roles[n][row] for n in names]).double()
        mean = stack.mean(0)
        for axis_run, axis_row, axis_tag in ((a, ia, "a"), (b, ib, "b")):
            u = _unit(axis_run.axis[axis_row].double())
            projections = stack @ u
            position = float((run.default[row].double() - mean) @ u)
            sd = float(projections.std())
            out[f"default_{tag}_on_axis_{axis_tag}"] = round(position, 5)
            out[f"default_{tag}_on_axis_{axis_tag}_sd"] = round(position / sd, 4) if sd else None
    ub = _unit(b.axis[ib].double())
    out["shift_along_b"] = round(float((b.default[ib].double() - a.default[ia].double()) @ ub), 5)
    return out


def compare_same_architecture(
    a: ComparedRun, b: ComparedRun, names: list[str], *, k: int = 3, layer: int | None = None
) -> dict[str, Any]:
    """The same-architecture figures (see the module docstring), JSON-ready."""
    require_same_architecture(a, b)
    layer = a.analysis_layer if layer is None else layer
    pairs = role_pair_cosines(a, b, names, layer)
    raw = torch.tensor([v["raw"] for v in pairs.values()])
    centred = torch.tensor([v["centred"] for v in pairs.values()])
    k = max(1, min(k, len(names) - 1))
    comps_a, _, _ = principal_components(a, names, layer, k)
    comps_b, _, _ = principal_components(b, names, layer, k)
    per_layer = axis_cosines(a, b)
    return {
        "layer": layer,
        "axis_cosine_by_layer": per_layer,
        "axis_cosine_at_layer": next(r["cos"] for r in per_layer if r["layer"] == layer),
        "role_pair_cosines": pairs,
        "role_pair_cosine_summary": {
            "raw_min": round(float(raw.min()), 6),
            "raw_median": round(float(raw.median()), 6),
            "raw_fraction_above_0.99": round(float((raw > 0.99).double().mean()), 4),
            "centred_min": round(float(centred.min()), 6),
            "centred_median": round(float(centred.median()), 6),
            "centred_mean": round(float(centred.double().mean()), 6),
        },
        "pc_cosines": {"k": k, **subspace_cosines(comps_a, comps_b)},
        "default_movement": default_movement(a, b, names, layer),
    }


# --- rank-based (any two models) -----------------------------------------------------------


def role_positions(run: ComparedRun, names: list[str], layer: int) -> dict[str, Any]:
    """Projections of the named roles on the run's own unit axis and its own PC1 (oriented
    toward the default), the default's rank on both, the roles nearest the default, and
    cos(axis, PC1) over these roles."""
    row = run.row(layer)
    stack = torch.stack([run.roles[n][row] for n in names]).double()
    u = _unit(run.axis[row].double())
    on_axis = {n: float(v) for n, v in zip(names, (stack @ u).tolist())}
    comps, scores, _ = principal_components(run, names, layer, 2)
    on_pc1 = {n: float(s) for n, s in zip(names, scores[:, 0].tolist())}
    mean = stack.mean(0)
    default = run.default[row].double()
    default_axis = float(default @ u)
    default_pc1 = float((default - mean).float() @ comps[0])
    centred_default = default - mean
    nearest = sorted(
        ((n, _cos(stack[i] - mean, centred_default)) for i, n in enumerate(names)),
        key=lambda x: (-x[1], x[0]),
    )
    return {
        "layer": layer,
        "on_axis": on_axis,
        "on_pc1": on_pc1,
        "pc2": {n: float(s) for n, s in zip(names, scores[:, 1].tolist())}
        if scores.shape[1] > 1
        else {n: 0.0 for n in names},
        "default_on_pc1": default_pc1,
        "default_pc2": float((default - mean).float() @ comps[1]) if len(comps) > 1 else 0.0,
        "default_axis_rank": 1 + sum(v > default_axis for v in on_axis.values()),
        "default_pc1_rank": 1 + sum(v > default_pc1 for v in on_pc1.values()),
        "cos_axis_pc1": round(_cos(run.axis[row], comps[0]), 6),
        "nearest_to_default": [[n, round(c, 4)] for n, c in nearest],
    }


def compare_ranks(
    a: ComparedRun,
    b: ComparedRun,
    names: list[str],
    *,
    layer_a: int | None = None,
    layer_b: int | None = None,
    top: int = 10,
    nearest: int = 5,
    n_permutations: int = 10_000,
    n_bootstrap: int = 2_000,
    seed: int = 0,
) -> dict[str, Any]:
    """The rank-based figures (see the module docstring), JSON-ready.

    ``top`` is lowered to half the shared roles when there are fewer than ``2 * top``, so
    the top and bottom lists never overlap.
    """
    pos_a = role_positions(a, names, a.analysis_layer if layer_a is None else layer_a)
    pos_b = role_positions(b, names, b.analysis_layer if layer_b is None else layer_b)
    top = min(top, len(names) // 2)
    stats = {"n_permutations": n_permutations, "n_bootstrap": n_bootstrap, "seed": seed}
    axis_rc = rank_correlation(
        [pos_a["on_axis"][n] for n in names], [pos_b["on_axis"][n] for n in names], **stats
    )
    pc1_rc = rank_correlation(
        [pos_a["on_pc1"][n] for n in names], [pos_b["on_pc1"][n] for n in names], **stats
    )
    near_a = [n for n, _ in pos_a["nearest_to_default"][:nearest]]
    near_b = [n for n, _ in pos_b["nearest_to_default"][:nearest]]
    return {
        "layer_a": pos_a["layer"],
        "layer_b": pos_b["layer"],
        "spearman_axis": axis_rc.to_json(),
        "spearman_pc1": pc1_rc.to_json(),
        "axis_ends": end_overlap(pos_a["on_axis"], pos_b["on_axis"], top),
        "pc1_ends": end_overlap(pos_a["on_pc1"], pos_b["on_pc1"], top),
        "nearest_to_default": {
            "a": pos_a["nearest_to_default"][:nearest],
            "b": pos_b["nearest_to_default"][:nearest],
            "overlap": sorted(set(near_a) & set(near_b)),
        },
        "positions": {"a": pos_a, "b": pos_b},
    }


def layer_profile(run: ComparedRun, names: list[str]) -> list[dict[str, Any]]:
    """Per layer, over the named roles: cos(axis, PC1), and where the default sits on PC1
    (rank among the roles, 1 = beyond every role at the Assistant end; and in standard
    deviations of the roles' PC1 scores). This is the single-model evidence for an
    Assistant-vs-roles direction at every depth.

    Example:
        >>> roles = {n: torch.tensor([[float(i), 0.0]]) for i, n in enumerate("abcd")}
        >>> run = ComparedRun("r", "m", [0], 1, 2, 0, torch.tensor([[1.0, 0.0]]),
        ...                   torch.tensor([[9.0, 0.0]]), roles)
        >>> row = layer_profile(run, list("abcd"))[0]
        >>> row["cos_axis_pc1"], row["default_pc1_rank"]
        (1.0, 1)
    """
    rows = []
    for layer in run.layers:
        comps, scores, _ = principal_components(run, names, layer, 1)
        row = run.row(layer)
        mean = torch.stack([run.roles[n][row] for n in names]).mean(0)
        default_pc1 = float((run.default[row] - mean) @ comps[0])
        sd = float(scores[:, 0].std())
        rows.append(
            {
                "layer": layer,
                "depth": round(layer / max(run.n_layers - 1, 1), 4),
                "cos_axis_pc1": round(_cos(run.axis[row], comps[0]), 6),
                "default_pc1_rank": 1 + int((scores[:, 0] > default_pc1).sum()),
                "default_pc1_sd": round(default_pc1 / sd, 4) if sd else None,
            }
        )
    return rows


def default_null(run: ComparedRun, names: list[str], layer: int) -> dict[str, Any]:
    """Is the default special, or would any role do? A leave-one-role-out null at ``layer``.

    Each role in turn plays the default: its pseudo-axis is its vector minus the mean of
    the other roles, PC1 is taken over the other roles (oriented toward it), and we record
    |cos(pseudo-axis, PC1)| and its rank on PC1 among the others (1 = beyond every one).
    The real default's figures (over all ``names``) are then compared with these: ``p_cos``
    is the share of the ``n + 1`` candidates (roles and the default) whose |cos| is at least
    the default's, ``p_extreme`` the share ranked at least as far out. Small values say the
    default stands apart from the roles more than a role does; ``n`` roles give p >= 1/(n+1).

    Example:
        >>> roles = {n: torch.tensor([[float(i), 0.1 * (-1) ** i]]) for i, n in enumerate("abcdef")}
        >>> run = ComparedRun("r", "m", [0], 1, 2, 0, torch.tensor([[7.0, 0.0]]),
        ...                   torch.tensor([[9.5, 0.0]]), roles)
        >>> null = default_null(run, list("abcdef"), 0)
        >>> null["default_rank"], null["p_extreme"]  # a and f sit at the ends too
        (1, 0.42857142857142855)
    """
    row = run.row(layer)
    vectors = {n: run.roles[n][row].double() for n in names}

    def figures(target: torch.Tensor, others: list[str]) -> tuple[float, int]:
        stack = torch.stack([vectors[n] for n in others])
        result = pca(stack).toward(target.float())
        pc1 = result.components[0].double()
        score = float((target - result.mean.double()) @ pc1)
        rank = 1 + int((result.scores[:, 0].double() > score).sum())
        return abs(_cos(target - stack.mean(0), pc1)), rank

    cos_default, rank_default = figures(run.default[row].double(), names)
    null = [figures(vectors[n], [m for m in names if m != n]) for n in names]
    total = len(names) + 1
    return {
        "layer": layer,
        "n_roles": len(names),
        "default_abs_cos": round(cos_default, 6),
        "default_rank": rank_default,
        "null_abs_cos": [round(c, 6) for c, _ in null],
        "null_rank": [r for _, r in null],
        "p_cos": (1 + sum(c >= cos_default - 1e-12 for c, _ in null)) / total,
        "p_extreme": (1 + sum(r <= rank_default for _, r in null)) / total,
    }


def _describe(run: ComparedRun) -> dict[str, Any]:
    return {
        "label": run.label,
        "model_id": run.model_id,
        "hidden_size": run.hidden_size,
        "n_layers": run.n_layers,
        "analysis_layer": run.analysis_layer,
        "roles_kept": len(run.roles),
        "catalogue": run.catalogue,
        "chat_tuned": run.chat_tuned,
        **run.extra,
    }


def check_settings(*, k: int, top: int, n_permutations: int, n_bootstrap: int) -> None:
    """Refuse settings that would give wrong or undefined figures (before any work).

    Example:
        >>> check_settings(k=3, top=10, n_permutations=10_000, n_bootstrap=2_000)
        >>> try:
        ...     check_settings(k=3, top=0, n_permutations=10_000, n_bootstrap=2_000)
        ... except PersonaspaceError as err:
        ...     print(err, err.param)
        top is 0: give at least 2 (the size of the top and bottom role lists) top
    """
    if top < 2:
        raise PersonaspaceError(
            f"top is {top}",
            fix="give at least 2 (the size of the top and bottom role lists)",
            param="top",
        )
    if k < 1:
        raise PersonaspaceError(
            f"k is {k}", fix="compare at least 1 principal component", param="k"
        )
    if n_permutations < 1:
        raise PersonaspaceError(
            f"n_permutations is {n_permutations}",
            fix="give at least 1 (default 10000)",
            param="n_permutations",
        )
    if n_bootstrap < 1:
        raise PersonaspaceError(
            f"n_bootstrap is {n_bootstrap}",
            fix="give at least 1 (default 2000)",
            param="n_bootstrap",
        )


def compare_runs(
    a: ComparedRun,
    b: ComparedRun,
    *,
    mode: Mode = "auto",
    k: int = 3,
    top: int = 10,
    layer_a: int | None = None,
    layer_b: int | None = None,
    n_permutations: int = 10_000,
    n_bootstrap: int = 2_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Everything ``personaspace compare`` reports, JSON-ready.

    ``mode``: ``same`` demands (and computes) the same-architecture figures, ``rank`` skips
    them, ``auto`` computes them when hidden size and layer count match. Rank figures are
    always computed, on the shared roles only.

    Example:
        >>> summary = compare_runs(run_base, run_instruct)  # doctest: +SKIP
        >>> summary["ranks"]["spearman_axis"]["rho"]  # doctest: +SKIP
    """
    if mode not in MODES:
        raise PersonaspaceError(f"unknown mode {mode!r}", fix="use auto, same or rank")
    check_settings(k=k, top=top, n_permutations=n_permutations, n_bootstrap=n_bootstrap)
    if mode == "same":
        require_same_architecture(a, b)
    names = require_shared(a, b)
    info = shared_roles(a, b)
    notes = []
    if a.catalogue != b.catalogue:
        notes.append(
            f"the runs used different catalogues ({a.catalogue or 'built-in'} vs "
            f"{b.catalogue or 'built-in'}): only the {len(names)} roles both kept are compared"
        )
    if info["only_a"] or info["only_b"]:
        notes.append(
            f"{len(names)} shared roles compared; {len(info['only_a'])} only in {a.label}, "
            f"{len(info['only_b'])} only in {b.label}"
        )
    do_same = mode == "same" or (mode == "auto" and same_architecture(a, b))
    result: dict[str, Any] = {
        "a": _describe(a),
        "b": _describe(b),
        "roles": {
            "shared": len(names),
            "only_a": info["only_a"],
            "only_b": info["only_b"],
            "shared_names": names,
        },
        "mode": "same_architecture" if do_same else "rank_only",
        "notes": notes,
        "ranks": compare_ranks(
            a,
            b,
            names,
            layer_a=layer_a,
            layer_b=layer_b,
            top=top,
            n_permutations=n_permutations,
            n_bootstrap=n_bootstrap,
            seed=seed,
        ),
    }
    result["profiles"] = {"a": layer_profile(a, names), "b": layer_profile(b, names)}
    # Each model on its own, over every role it kept: is its default special among them?
    result["own_roles"] = {
        tag: {
            "n_roles": len(run.roles),
            "profile": layer_profile(run, sorted(run.roles)),
            "null": [default_null(run, sorted(run.roles), layer) for layer in run.layers],
        }
        for tag, run in (("a", a), ("b", b))
    }
    if do_same:
        result["same_architecture"] = compare_same_architecture(a, b, names, k=k, layer=layer_a)
    return result
