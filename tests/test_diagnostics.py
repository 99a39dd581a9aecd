"""Axis diagnostics: split halves, bootstrap intervals, held-out AUC, the nulls, the verdict."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_lm

from personaspace.analysis.diagnostics import (
    ReplySet,
    best_layer,
    bootstrap_over_questions,
    build_axis,
    held_out_auc,
    split_half,
)
from personaspace.errors import PersonaspaceError
from personaspace.pipeline import diagnose
from personaspace.pipeline.diagnose import random_init_model, random_init_vectors, verdict

ROLES = ["a", "b", "c", "d", "e"]


def replies(signal: float, noise: float, seed: int = 0, questions: int = 8) -> ReplySet:
    """Default replies at +signal on dimension 0, role replies spread below it on the same
    dimension (so PC1 of the roles runs toward the default), ``noise`` everywhere: 2 layers,
    6 dimensions, 2 prompts. With ``signal`` 0 there is no structure at all."""
    g = torch.Generator().manual_seed(seed)
    vectors, kinds, names, qs, prompts = [], [], [], [], []
    for q in range(questions):
        for p in range(2):
            for name in ["default", *ROLES]:
                v = noise * torch.randn(2, 6, generator=g)
                if name == "default":
                    v[:, 0] += signal
                else:
                    v[:, 0] -= ROLES.index(name) * (signal > 0)
                vectors.append(v)
                kinds.append("default" if name == "default" else "role")
                names.append(name)
                qs.append(f"q{q:02d}")
                prompts.append(p)
    return ReplySet(torch.stack(vectors), kinds, names, qs, prompts, [True] * len(kinds))


def test_build_axis_is_default_minus_mean_role_and_weights_leave_replies_out() -> None:
    rs = replies(3.0, 0.5)
    default, _, axis = build_axis(rs)  # type: ignore[misc]
    by_name = {n: rs.vectors[[i for i, m in enumerate(rs.names) if m == n]].mean(0) for n in ROLES}
    assert torch.allclose(
        default, rs.vectors[[i for i, k in enumerate(rs.kinds) if k == "default"]].mean(0)
    )
    assert torch.allclose(axis, default - torch.stack([by_name[n] for n in ROLES]).mean(0))
    # weight 0 on every reply of role "e": it drops out
    w = torch.tensor([0.0 if n == "e" else 1.0 for n in rs.names])
    assert set(build_axis(rs, w)[1]) == {"a", "b", "c", "d"}  # type: ignore[index]
    # without a kept default there is no axis
    no_default = ReplySet(
        rs.vectors, rs.kinds, rs.names, rs.questions, rs.prompts, [k != "default" for k in rs.kinds]
    )
    assert build_axis(no_default) is None


def test_split_half_is_high_for_signal_and_low_for_noise() -> None:
    clean = split_half(replies(3.0, 0.1), "question")
    assert clean is not None and min(clean) > 0.99
    assert min(split_half(replies(3.0, 0.1), "prompt")) > 0.99  # type: ignore[type-var]
    noisy = [split_half(replies(0.0, 1.0, seed=s), "question")[0] for s in range(10)]  # type: ignore[index]
    assert sum(abs(c) for c in noisy) / 10 < 0.6
    with pytest.raises(PersonaspaceError, match="unknown split"):
        split_half(replies(1.0, 1.0), "role")


def test_bootstrap_intervals_hold_the_estimate_and_repeat_with_the_seed() -> None:
    rs = replies(3.0, 0.5)
    cos, rank = bootstrap_over_questions(rs, 0, draws=50, seed=3)  # type: ignore[misc]
    assert cos.low <= cos.estimate <= cos.high and cos.n == 50
    # the default sits beyond every role on PC1 in every draw
    assert (rank.estimate, rank.low, rank.high) == (1.0, 1.0, 1.0)
    assert bootstrap_over_questions(rs, 0, draws=50, seed=3) == (cos, rank)
    assert bootstrap_over_questions(rs, 0, draws=50, seed=4) != (cos, rank)


def test_held_out_auc_is_one_when_defaults_separate_and_half_for_noise() -> None:
    assert held_out_auc(replies(5.0, 0.1)) == [1.0, 1.0]
    noise = [held_out_auc(replies(0.0, 1.0, seed=s))[0] for s in range(10)]  # type: ignore[index]
    assert 0.3 < sum(noise) / 10 < 0.75
    assert best_layer([0.5, 0.7, 0.7], [3, 4, 5]) == 4


def test_random_init_model_is_seeded_and_unlike_the_trained_one() -> None:
    lm = tiny_lm("llama")
    a, b = random_init_model(lm), random_init_model(lm)
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), name
    trained = lm.model.state_dict()["model.layers.0.self_attn.q_proj.weight"]
    assert not torch.equal(a.model.state_dict()["model.layers.0.self_attn.q_proj.weight"], trained)
    assert a.model_id == "random-init:tiny-llama"
    # the caller's random stream is left where it was
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    random_init_model(lm)
    assert torch.equal(torch.rand(3), expected)


def test_random_init_vectors_are_cached(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PERSONASPACE_CACHE", str(tmp_path))
    lm = tiny_lm("llama")
    records = [
        {"system": "You are a pirate.", "question": "Hi?", "response": "Arr, ahoy."},
        {"system": None, "question": "Hi?", "response": "Hello there."},
    ]
    first = random_init_vectors(lm, records, [0, 1], [0, 1])  # type: ignore[arg-type]
    assert first.shape == (2, 2, lm.adapter.hidden_size)
    assert len(list((tmp_path / "nulls").glob("*.safetensors"))) == 1

    def fail(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("recomputed instead of read from the cache")

    monkeypatch.setattr(diagnose, "capture_conversations", fail)
    again = random_init_vectors(lm, records, [0, 1], [0, 1])  # type: ignore[arg-type]
    assert torch.equal(again, first)


def test_verdict_names_the_figures_no_null_separates() -> None:
    trained = {
        "bootstrap": {"cos_axis_pc1": {"estimate": 0.5, "low": 0.2, "high": 0.7}},
        "leave_one_role_out": {
            "default_abs_cos": 0.5,
            "p_cos": 0.4,
            "default_rank": 3,
            "p_extreme": 0.01,
            "n_roles": 10,
        },
        "split_half_questions": [0.95],
        "held_out_auc": [0.6],
    }
    null = {"cos_axis_pc1": [0.3], "split_half_questions": [0.5], "held_out_auc": [0.8]}
    lines = verdict(trained, null, 0.5, 0)
    assert len(lines) == 3
    assert "leave-one-role-out p = 0.40" in lines[0]
    assert "does not stand above the random-init null's 0.300" in lines[1]
    assert lines[2].startswith("held-out default-vs-role AUC 0.600")
    strong = {
        **trained,
        "leave_one_role_out": {**trained["leave_one_role_out"], "p_cos": 0.01},
        "held_out_auc": [0.9],
        "bootstrap": {"cos_axis_pc1": {"estimate": 0.5, "low": 0.4, "high": 0.7}},
    }
    assert verdict(strong, null, 0.5, 0) == []
