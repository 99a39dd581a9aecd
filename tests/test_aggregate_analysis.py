"""Aggregation and persona-space analysis on hand-made tensors: exact expected values."""

from __future__ import annotations

import math

import torch

from personaspace.analysis import analyse, components_for, pca
from personaspace.pipeline.aggregate import aggregate


def rec(kind, name, score=None, p=0, q="q1", trait_score=None, n_tokens=5, judge="local"):  # type: ignore[no-untyped-def]
    return {
        "kind": kind,
        "name": name,
        "score": score,
        "prompt_index": p,
        "question_id": q,
        "trait_score": trait_score,
        "n_tokens": n_tokens,
        "judge": judge,
    }


def test_role_default_trait_vectors_and_axis() -> None:
    records = [
        rec("default", "default"),
        rec("default", "default"),
        rec("role", "a", 3),
        rec("role", "a", 2),
        rec("role", "a", 3),
        rec("role", "b", 3),
        rec("role", "b", 1),
        rec("role", "c", 3, n_tokens=0),  # empty reply: never counts
        rec("trait_pos", "t", q="trait_pos/x00", trait_score=80),
        rec("trait_neg", "t", q="trait_neg/x00", trait_score=10),
        rec("trait_pos", "t", q="trait_pos/x01", trait_score=40),  # pair dropped: pos < 50
        rec("trait_neg", "t", q="trait_neg/x01", trait_score=10),
    ]
    v = torch.arange(len(records), dtype=torch.float32)[:, None, None].expand(-1, 2, 3).clone()
    v[7] = torch.nan
    agg = aggregate(records, v, score_threshold=3, min_count=1, trait_threshold=50)
    assert torch.equal(agg.default_vector, torch.full((2, 3), 0.5))
    assert torch.equal(agg.role_vectors["a"], torch.full((2, 3), 3.0))  # rows 2 and 4
    assert torch.equal(agg.role_vectors["b"], torch.full((2, 3), 5.0))
    assert agg.dropped_roles == {"c": 0}
    assert torch.equal(agg.trait_vectors["t"], torch.full((2, 3), -1.0))  # 8 - 9
    assert agg.trait_pair_counts == {"t": 1}
    assert torch.equal(agg.axis, torch.full((2, 3), 0.5 - 4.0))
    lenient = aggregate(records, v, score_threshold=2, min_count=3, trait_threshold=50)
    assert list(lenient.role_vectors) == ["a"] and lenient.dropped_roles == {"b": 1, "c": 0}


def test_pca_and_axis_alignment_on_a_line() -> None:
    # Roles spread along direction d; the default sits beyond the far positive end.
    d = torch.tensor([3.0, 4.0, 0.0]) / 5
    noise = torch.tensor([0.0, 0.0, 1.0])
    roles = {f"r{i}": (torch.stack([d * i + noise * 0.01 * (-1) ** i] * 2)) for i in range(6)}
    default = torch.stack([d * 20] * 2)
    axis = default - torch.stack(list(roles.values())).mean(0)
    result = analyse(roles, default, axis, {"t": axis * 2}, [0, 1], 1).to_json()
    at = result["at_analysis_layer"]
    assert math.isclose(at["cos_axis_pc1"], 1.0, abs_tol=1e-4)
    assert at["components_70"] == 1
    assert [n for n, _ in at["roles_by_axis"]] == ["r5", "r4", "r3", "r2", "r1", "r0"]
    assert at["default_pc1_rank"] == 1
    assert at["trait_cos_axis"] == {"t": 1.0}
    assert at["nearest_to_default"][0][0] == "r5"


def test_components_for_and_pca_ratios() -> None:
    assert components_for(torch.tensor([0.7, 0.2, 0.1]), 0.7) == 1
    assert components_for(torch.tensor([0.69, 0.2, 0.11]), 0.7) == 2
    p = pca(torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]]))
    assert torch.allclose(p.explained, torch.tensor([0.8, 0.2]))
