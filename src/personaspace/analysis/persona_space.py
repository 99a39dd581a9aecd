"""PCA over role vectors per layer, and where the Assistant sits in it. Pure tensor code."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from personaspace.vectors.shape import unit


@dataclass(frozen=True)
class LayerPCA:
    """PCA of one layer's role vectors: ``components`` ``[k, hidden]`` (unit rows),
    ``explained`` variance ratios ``[k]``, the ``mean`` row, and role ``scores`` ``[roles, k]``."""

    components: torch.Tensor
    explained: torch.Tensor
    mean: torch.Tensor
    scores: torch.Tensor

    def toward(self, point: torch.Tensor) -> LayerPCA:
        """The same PCA with PC1 (its component and scores) flipped, if need be, so that
        ``point`` (e.g. the default vector) scores >= 0 on it.

        Example:
            >>> p = pca(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.1]]))
            >>> p.toward(torch.tensor([-5.0, 0.0])).components[0][0] < 0
            tensor(True)
        """
        if float((point - self.mean) @ self.components[0]) >= 0:
            return self
        flip = torch.ones(self.components.shape[0], dtype=self.components.dtype)
        flip[0] = -1.0
        return LayerPCA(
            self.components * flip[:, None], self.explained, self.mean, self.scores * flip
        )

    def score(self, point: torch.Tensor, component: int = 0) -> float:
        """``point``'s score on one component (centred on the roles' mean)."""
        if component >= self.components.shape[0]:
            return 0.0
        return float((point - self.mean) @ self.components[component])


def pca(matrix: torch.Tensor, *, normalize_rows: bool = False) -> LayerPCA:
    """Centered PCA (optionally L2-normalising each row first) by SVD.

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.1], [0.0, -0.1]])
        >>> p = pca(x)
        >>> [round(v, 3) for v in p.explained.tolist()]
        [0.99, 0.01]
    """
    data = matrix.double()
    if normalize_rows:
        data = torch.nn.functional.normalize(data, dim=-1)
    mean = data.mean(0)
    centered = data - mean
    _, s, vh = torch.linalg.svd(centered, full_matrices=False)
    variance = s**2
    explained = variance / variance.sum().clamp(min=1e-30)
    return LayerPCA(vh.float(), explained.float(), mean.float(), (centered @ vh.T).float())


def components_for(explained: torch.Tensor, ratio: float) -> int:
    """How many components explain at least ``ratio`` of the variance.

    Example:
        >>> components_for(torch.tensor([0.5, 0.3, 0.2]), 0.8)
        2
    """
    cumulative = explained.double().cumsum(0)
    return int((cumulative < ratio - 1e-6).sum()) + 1


@dataclass(frozen=True)
class LayerFigures:
    """The persona space at one layer: variance explained and the axis against PC1."""

    layer: int
    explained_top10: list[float]
    components_70: int
    components_80: int
    components_90: int
    cos_axis_pc1: float
    axis_norm: float


@dataclass(frozen=True)
class RoleScatter:
    """Full-precision coordinates of the roles and the default at the analysis layer (for
    plots; not written to ``summary.json``): PC1 (oriented toward the default), PC2, and
    each role's projection on the unit axis."""

    names: list[str]
    pc1: list[float]
    pc2: list[float]
    on_axis: list[float]
    default: tuple[float, float]


@dataclass(frozen=True)
class AnalysisLayerFigures:
    """Where the Assistant sits among the roles at the analysis layer."""

    cos_axis_pc1: float
    components_70: int
    components_80: int
    components_90: int
    explained_top10: list[float]
    default_on_axis: float
    default_pc1: float
    default_pc1_rank: int
    roles_by_axis: list[tuple[str, float]]
    roles_by_pc1: list[tuple[str, float]]
    assistant_end: list[str]
    far_end: list[str]
    nearest_to_default: list[tuple[str, float]]
    trait_cos_axis: dict[str, float]
    pc2_scores: dict[str, float]


@dataclass(frozen=True)
class PersonaSpace:
    """The figures of a persona space (what ``summary.json`` holds under ``analysis``)."""

    layers: list[LayerFigures]
    analysis_layer: int
    n_roles: int
    at_analysis_layer: AnalysisLayerFigures
    scatter: RoleScatter = field(compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "layers": [asdict(row) for row in self.layers],
            "analysis_layer": self.analysis_layer,
            "n_roles": self.n_roles,
            "at_analysis_layer": asdict(self.at_analysis_layer),
        }


def _layer_figures(layer: int, p: LayerPCA, axis: torch.Tensor) -> LayerFigures:
    return LayerFigures(
        layer=layer,
        explained_top10=[round(float(x), 5) for x in p.explained[:10]],
        components_70=components_for(p.explained, 0.7),
        components_80=components_for(p.explained, 0.8),
        components_90=components_for(p.explained, 0.9),
        # PC1 as a contiguous copy (it is a strided row of the SVD's output)
        cos_axis_pc1=float(unit(axis) @ p.components[0].contiguous()),
        axis_norm=float(axis.norm()),
    )


def _by_value(values: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(values.items(), key=lambda x: -x[1])


def analyse(
    role_vectors: dict[str, torch.Tensor],
    default_vector: torch.Tensor,
    axis: torch.Tensor,
    trait_vectors: dict[str, torch.Tensor],
    layers: list[int],
    analysis_layer: int,
    *,
    normalize_rows: bool = False,
    top: int = 10,
) -> PersonaSpace:
    """The figures of a persona space.

    Vectors are ``[len(layers), hidden]``; ``analysis_layer`` is a model layer index (one of
    ``layers``). PC1 is oriented so that the default (Assistant) vector scores positive.

    Example:
        >>> roles = {n: torch.tensor([[float(i), 0.1 * i * i]]) for i, n in enumerate("abcd")}
        >>> space = analyse(roles, torch.tensor([[5.0, 0.0]]), torch.tensor([[1.0, 0.0]]), {},
        ...                 [0], 0)
        >>> space.at_analysis_layer.default_pc1_rank, space.at_analysis_layer.assistant_end[0]
        (1, 'd')
    """
    names = sorted(role_vectors)
    stack = torch.stack([role_vectors[n] for n in names])  # [R, L, H]
    spaces = [
        pca(stack[:, li], normalize_rows=normalize_rows).toward(default_vector[li])
        for li in range(len(layers))
    ]
    per_layer = [
        _layer_figures(layer, space, axis[li])
        for li, (layer, space) in enumerate(zip(layers, spaces))
    ]
    li = layers.index(analysis_layer)
    p = spaces[li]
    unit_axis = unit(axis[li])
    on_axis = {n: float(role_vectors[n][li] @ unit_axis) for n in names}
    on_pc1 = {n: float(p.scores[i, 0]) for i, n in enumerate(names)}
    pc2 = {n: float(p.scores[i, 1]) if p.scores.shape[1] > 1 else 0.0 for i, n in enumerate(names)}
    mean_role = stack[:, li].mean(0)
    centred_default = default_vector[li] - mean_role
    nearest = sorted(
        (
            (
                n,
                float(
                    torch.nn.functional.cosine_similarity(
                        role_vectors[n][li] - mean_role, centred_default, dim=0
                    )
                ),
            )
            for n in names
        ),
        key=lambda x: -x[1],
    )
    by_axis = _by_value(on_axis)
    default_pc1 = p.score(default_vector[li])
    figures = per_layer[li]
    at = AnalysisLayerFigures(
        cos_axis_pc1=figures.cos_axis_pc1,
        components_70=figures.components_70,
        components_80=figures.components_80,
        components_90=figures.components_90,
        explained_top10=figures.explained_top10,
        default_on_axis=float(default_vector[li] @ unit_axis),
        default_pc1=default_pc1,
        default_pc1_rank=1 + sum(v > default_pc1 for v in on_pc1.values()),
        roles_by_axis=[(n, round(v, 4)) for n, v in by_axis],
        roles_by_pc1=[(n, round(v, 4)) for n, v in _by_value(on_pc1)],
        assistant_end=[n for n, _ in by_axis[:top]],
        far_end=[n for n, _ in by_axis[-top:][::-1]],
        nearest_to_default=[(n, round(c, 4)) for n, c in nearest[:top]],
        trait_cos_axis={
            t: round(float(unit(v[li]) @ unit_axis), 4) for t, v in sorted(trait_vectors.items())
        },
        pc2_scores=pc2,
    )
    scatter = RoleScatter(
        names=names,
        pc1=[on_pc1[n] for n in names],
        pc2=[pc2[n] for n in names],
        on_axis=[on_axis[n] for n in names],
        default=(default_pc1, p.score(default_vector[li], 1)),
    )
    return PersonaSpace(per_layer, analysis_layer, len(names), at, scatter)
