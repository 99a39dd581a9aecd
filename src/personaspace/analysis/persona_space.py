"""PCA over role vectors per layer, and where the Assistant sits in it. Pure tensor code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class LayerPCA:
    """PCA of one layer's role vectors: ``components`` ``[k, hidden]`` (unit rows),
    ``explained`` variance ratios ``[k]``, the ``mean`` row, and role ``scores`` ``[roles, k]``."""

    components: torch.Tensor
    explained: torch.Tensor
    mean: torch.Tensor
    scores: torch.Tensor


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


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm().clamp(min=1e-30)


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
) -> dict[str, Any]:
    """The figures of a persona space, JSON-ready.

    Vectors are ``[len(layers), hidden]``; ``analysis_layer`` is a model layer index (one of
    ``layers``). PC1 is oriented so that the default (Assistant) vector scores positive.
    """
    names = sorted(role_vectors)
    stack = torch.stack([role_vectors[n] for n in names])  # [R, L, H]
    per_layer = []
    for li, layer in enumerate(layers):
        p = pca(stack[:, li], normalize_rows=normalize_rows)
        pc1 = p.components[0]
        sign = 1.0 if float((default_vector[li] - p.mean) @ pc1) >= 0 else -1.0
        cos = float(_unit(axis[li]) @ (sign * pc1))
        per_layer.append(
            {
                "layer": layer,
                "explained_top10": [round(float(x), 5) for x in p.explained[:10]],
                "components_70": components_for(p.explained, 0.7),
                "components_80": components_for(p.explained, 0.8),
                "components_90": components_for(p.explained, 0.9),
                "cos_axis_pc1": cos,
                "axis_norm": float(axis[li].norm()),
            }
        )
    li = layers.index(analysis_layer)
    p = pca(stack[:, li], normalize_rows=normalize_rows)
    pc1 = p.components[0]
    sign = 1.0 if float((default_vector[li] - p.mean) @ pc1) >= 0 else -1.0
    unit_axis = _unit(axis[li])
    on_axis = {n: float(role_vectors[n][li] @ unit_axis) for n in names}
    on_pc1 = {n: float(sign * p.scores[i, 0]) for i, n in enumerate(names)}
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
    by_axis = sorted(on_axis.items(), key=lambda x: -x[1])
    by_pc1 = sorted(on_pc1.items(), key=lambda x: -x[1])
    default_pc1 = float(sign * (default_vector[li] - p.mean) @ pc1)
    return {
        "layers": per_layer,
        "analysis_layer": analysis_layer,
        "n_roles": len(names),
        "at_analysis_layer": {
            "cos_axis_pc1": per_layer[li]["cos_axis_pc1"],
            "components_70": per_layer[li]["components_70"],
            "components_80": per_layer[li]["components_80"],
            "components_90": per_layer[li]["components_90"],
            "explained_top10": per_layer[li]["explained_top10"],
            "default_on_axis": float(default_vector[li] @ unit_axis),
            "default_pc1": default_pc1,
            "default_pc1_rank": 1 + sum(v > default_pc1 for v in on_pc1.values()),
            "roles_by_axis": [[n, round(v, 4)] for n, v in by_axis],
            "roles_by_pc1": [[n, round(v, 4)] for n, v in by_pc1],
            "assistant_end": [n for n, _ in by_axis[:top]],
            "far_end": [n for n, _ in by_axis[-top:][::-1]],
            "nearest_to_default": [[n, round(c, 4)] for n, c in nearest[:top]],
            "trait_cos_axis": {
                t: round(float(_unit(v[li]) @ unit_axis), 4)
                for t, v in sorted(trait_vectors.items())
            },
            "pc2_scores": {
                n: float(p.scores[i, 1]) if p.scores.shape[1] > 1 else 0.0
                for i, n in enumerate(names)
            },
        },
    }
