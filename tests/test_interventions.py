"""Interventions: exact arithmetic, hooks that vanish, calibration and capping configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import ARCHITECTURES, tiny_lm

from personaspace.capture import SamplingConfig, capture_conversations, generate
from personaspace.conversation import format_conversation
from personaspace.errors import PersonaspaceError
from personaspace.fileformat import save_vectors
from personaspace.interventions import ablate, calibrate, cap, intervene, steer
from personaspace.monitor import project_turns
from personaspace.runfolder import RunFolder, load_axis
from personaspace.vectors import (
    Axis,
    Calibration,
    build_capping_config,
    load_capping_config,
    parse_layer_range,
    save_calibration,
    save_capping_config,
)

MESSAGES = [
    {"role": "system", "content": "Be a lighthouse keeper."},
    {"role": "user", "content": "Hello there"},
    {"role": "assistant", "content": "Storm tonight."},
    {"role": "user", "content": "And tomorrow?"},
    {"role": "assistant", "content": "Calm seas, I hope."},
]


def _axis(lm, seed: int = 1) -> Axis:  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    n, h = lm.adapter.n_layers, lm.adapter.hidden_size
    return Axis(lm.model_id, list(range(n)), torch.randn(n, h, generator=g), n, "test")


def _logits(lm, ids: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    with torch.inference_mode():
        return lm.model(input_ids=ids).logits


def test_operations_exact() -> None:
    u = torch.tensor([0.6, 0.8])
    h = torch.tensor([[3.0, 4.0], [-3.0, -4.0], [0.8, -0.6]])  # projections 5, -5, 0
    assert torch.equal(cap(0, u, tau=1.0).apply(h)[0], h[0])  # above the floor: untouched
    torch.testing.assert_close(cap(0, u, tau=1.0).apply(h)[1] @ u, torch.tensor(1.0))
    torch.testing.assert_close(cap(0, u, tau=1.0).apply(h)[2], h[2] + u)
    assert cap(0, u, tau=1.0).engaged(h).tolist() == [False, True, True]
    torch.testing.assert_close(ablate(0, u).apply(h) @ u, torch.zeros(3))
    torch.testing.assert_close(steer(0, 2 * u, coef_frac=0.5, norm=4.0).apply(h), h + 2.0 * u)


@pytest.mark.parametrize(
    "bad", [torch.zeros(4), torch.tensor([1.0, float("nan"), 0, 0]), torch.full((4,), torch.inf)]
)
def test_bad_directions_refused(bad: torch.Tensor) -> None:
    with pytest.raises(PersonaspaceError, match="zero vector|NaN or infinite"):
        cap(0, bad, tau=0.0)


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_hooks_change_outputs_then_leave_model_bit_identical(model_type: str) -> None:
    lm = tiny_lm(model_type)
    axis = _axis(lm)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    before = _logits(lm, ids)
    items = [
        steer(1, axis.unit(1), 2.0, 10.0),
        cap(2, axis.unit(2), tau=50.0),
        ablate(0, axis.unit(0)),
    ]
    with intervene(lm, items) as handle:
        during = _logits(lm, ids)
    after = _logits(lm, ids)
    assert not torch.equal(before, during)
    assert torch.equal(before, after)
    assert handle.engaged_tokens(0) == {2: 5}  # tau=50 is far above every projection


def test_hooks_removed_when_body_raises() -> None:
    lm = tiny_lm()
    ids = torch.tensor([[5, 6, 7]])
    before = _logits(lm, ids)
    with pytest.raises(RuntimeError), intervene(lm, [steer(0, _axis(lm).unit(0), 5.0, 1.0)]):
        raise RuntimeError("boom")
    assert torch.equal(before, _logits(lm, ids))


def test_cap_sets_projection_floor_in_residual_stream() -> None:
    lm = tiny_lm()
    axis = _axis(lm)
    u = axis.unit(1)
    conv = format_conversation(lm.tokenizer, MESSAGES)
    [plain] = capture_conversations(lm, [conv], layers=[1], all_tokens=True)
    tau = float((plain.tokens[:, 0] @ u).median())
    with intervene(lm, [cap(1, u, tau)]) as handle:
        [capped] = capture_conversations(lm, [conv], layers=[1], all_tokens=True)
    below = (plain.tokens[:, 0] @ u) < tau
    after = capped.tokens[:, 0] @ u
    torch.testing.assert_close(after[below], torch.full_like(after[below], tau))
    assert torch.equal(capped.tokens[~below, 0], plain.tokens[~below, 0])
    assert handle.engaged_tokens(0) == {1: int(below.sum())}


def test_generated_scope_leaves_prompt_alone_and_moves_reply() -> None:
    lm = tiny_lm()
    u = _axis(lm).unit(1)
    prompt = format_conversation(lm.tokenizer, MESSAGES[:2], add_generation_prompt=True)
    config = SamplingConfig(max_new_tokens=6)
    kept = ("last_prompt", "response_mean")
    [plain] = generate(lm, [prompt], config, layers=[1], reductions=kept)
    with intervene(lm, [steer(1, u, 3.0, 1.0, scope="generated")]) as handle:
        [steered] = generate(lm, [prompt], config, layers=[1], reductions=kept)
    assert torch.equal(plain.last_prompt, steered.last_prompt)  # prompt states untouched
    assert not torch.equal(plain.response_mean, steered.response_mean)  # reply states moved
    assert handle.cap_engaged == {}


def test_intervene_checks_size_and_layers() -> None:
    lm = tiny_lm()
    with (
        pytest.raises(PersonaspaceError, match="hidden size"),
        intervene(lm, [cap(0, torch.ones(7), 0.0)]),
    ):
        pass
    with (
        pytest.raises(PersonaspaceError, match="out of range"),
        intervene(lm, [cap(9, torch.ones(32), 0.0)]),
    ):
        pass


def test_project_turns_equals_manual_projection() -> None:
    lm = tiny_lm()
    axis = _axis(lm)
    conv = format_conversation(lm.tokenizer, MESSAGES)
    [traj] = project_turns(lm, axis, [conv], layers=[0, 2], per_token=True)
    [cap_] = capture_conversations(lm, [conv], layers=[0, 2], all_tokens=True)
    expected = torch.stack(
        [cap_.turn_means[:, i] @ axis.unit(layer) for i, layer in enumerate([0, 2])], 1
    )
    torch.testing.assert_close(traj.turns, expected)
    assert traj.turns.shape == (2, 2) and traj.tokens is not None
    span = traj.spans[1]
    torch.testing.assert_close(traj.tokens[span.start : span.end].mean(0), traj.turns[1])


def test_project_turns_refuses_no_assistant_turn_and_foreign_axis() -> None:
    lm = tiny_lm()
    conv = format_conversation(lm.tokenizer, MESSAGES[:2])
    with pytest.raises(PersonaspaceError, match="no assistant turn"):
        project_turns(lm, _axis(lm), [conv])
    other = Axis("x", [0, 1, 2], torch.randn(3, 16), 3, "other.safetensors")
    with pytest.raises(PersonaspaceError, match="hidden size 16"):
        project_turns(lm, other, [format_conversation(lm.tokenizer, MESSAGES)])
    deeper = Axis("x", list(range(5)), torch.randn(5, 32), 5, "deep.safetensors")
    with pytest.raises(PersonaspaceError, match="5 layers"):
        deeper.check_model(lm)


def test_load_axis_refuses_nan_and_zero(tmp_path: Path) -> None:
    bad = torch.randn(3, 32)
    bad[1] = 0
    save_vectors(tmp_path / "zero.safetensors", {"axis": bad}, {"layers": [0, 1, 2]})
    with pytest.raises(PersonaspaceError, match="zero vectors at rows \\[1\\]"):
        load_axis(tmp_path / "zero.safetensors")
    bad[1, 0] = float("nan")
    save_vectors(tmp_path / "nan.safetensors", {"axis": bad}, {"layers": [0, 1, 2]})
    with pytest.raises(PersonaspaceError, match="NaN"):
        load_axis(tmp_path / "nan.safetensors")


def test_calibration_percentiles_and_norms_are_exact(tmp_path: Path) -> None:
    lm = tiny_lm()
    axis = _axis(lm)
    convs = [
        format_conversation(lm.tokenizer, MESSAGES),
        format_conversation(lm.tokenizer, MESSAGES[:3]),
    ]
    cal = calibrate(lm, axis, convs, batch_size=1)
    caps = capture_conversations(lm, convs, layers=[0, 1, 2], all_tokens=True)
    states = torch.cat(
        [
            c.tokens[s.start : s.end]
            for c, conv in zip(caps, convs)
            for s in conv.spans_of("assistant")
        ]
    )  # [n_content, L, H]
    assert cal.n_tokens == states.shape[0]
    torch.testing.assert_close(cal.norms, states.norm(dim=-1).mean(0))
    proj = torch.einsum("nlh,lh->nl", states, axis.units)
    torch.testing.assert_close(cal.percentiles[:, 0], proj.min(0).values)
    torch.testing.assert_close(cal.percentiles[:, 100], proj.max(0).values)
    torch.testing.assert_close(
        torch.tensor(cal.tau(1, 25)), torch.quantile(proj[:, 1], 0.25), rtol=1e-5, atol=1e-5
    )
    save_calibration(tmp_path / "calibration.safetensors", cal)
    back = RunFolder(tmp_path).calibration()
    assert back.layers == cal.layers and torch.equal(back.percentiles, cal.percentiles)


def test_capping_config_roundtrip_and_ids(tmp_path: Path) -> None:
    lm = tiny_lm()
    axis = _axis(lm)
    pct = torch.arange(101.0).repeat(3, 1)
    cal = Calibration(lm.model_id, [0, 1, 2], torch.ones(3), pct, 10, 1, "t")
    cfg = build_capping_config(axis, cal, [parse_layer_range("1:3")], [25, 50])
    assert cfg.ids == ["layers_1:3-p25", "layers_1:3-p50"]
    save_capping_config(tmp_path / "capping.safetensors", cfg)
    back = load_capping_config(tmp_path / "capping.safetensors")
    items = back.interventions("layers_1:3-p50")
    assert [(i.layer, i.amount) for i in items] == [(1, 50.0), (2, 50.0)]
    torch.testing.assert_close(items[0].direction, axis.unit(1))
    with pytest.raises(PersonaspaceError, match="choose one of: layers_1:3-p25"):
        back.experiment("layers_9:12-p25")
    with pytest.raises(PersonaspaceError, match="not a layer range"):
        parse_layer_range("5:2")


def test_reference_capping_config_imports_with_sign_flip(tmp_path: Path) -> None:
    away = torch.tensor([0.0, 2.0, 0.0, 0.0])  # points away from the Assistant
    data = {
        "vectors": {"v7": {"vector": away, "layer": 7}},
        "experiments": [{"id": "layers_7:8-p25", "interventions": [{"vector": "v7", "cap": 1.5}]}],
    }
    torch.save(data, tmp_path / "ref.pt")
    [item] = load_capping_config(tmp_path / "ref.pt").interventions("layers_7:8-p25")
    assert item.layer == 7 and item.amount == -1.5
    torch.testing.assert_close(item.direction, torch.tensor([0.0, -1.0, 0.0, 0.0]))
    h = torch.tensor([[0.0, 3.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
    # the reference's upper cap on h . v_hat at 1.5 == our floor on h . (-v_hat) at -1.5
    expected = torch.tensor([[0.0, 1.5, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
    torch.testing.assert_close(item.apply(h), expected)


@pytest.mark.parametrize(
    "data, problem",
    [
        ({"vectors": {}, "experiments": []}, "'vectors' is not a non-empty dict"),
        (
            {"vectors": {"v": {"vector": torch.ones(3), "layer": 1}}, "experiments": [{"id": "a"}]},
            "no interventions",
        ),
        (
            {
                "vectors": {"v": {"vector": torch.ones(3), "layer": 1}},
                "experiments": [{"id": "a", "interventions": [{"vector": "w", "cap": 1.0}]}],
            },
            "unknown vector",
        ),
    ],
)
def test_malformed_capping_configs(tmp_path: Path, data: dict, problem: str) -> None:
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(PersonaspaceError, match=problem):
        load_capping_config(tmp_path / "bad.pt")
