"""The validation set and its rule, reply likelihoods, stratified questions, the trust report."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from conftest import tiny_lm

from personaspace.capture.likelihood import mean_logprobs, reply_ids
from personaspace.capture.teacher import capture_conversations
from personaspace.catalogue import load_catalogue, select
from personaspace.catalogue.presets import deal_questions
from personaspace.conversation.format import format_conversation
from personaspace.conversation.prompts import format_prompt
from personaspace.errors import PersonaspaceError
from personaspace.monitor.transcripts import Transcript, parse_transcript
from personaspace.monitor.validate import read_validation_set, validate_axis
from personaspace.report.trust import diagnostic_rows, interval, trust_section
from personaspace.vectors.axis import Axis


def test_builtin_validation_set_has_both_kinds_in_every_domain() -> None:
    transcripts = read_validation_set()
    kinds = Counter((t.meta["expect"], t.domain) for t in transcripts)
    assert len(transcripts) >= 12
    assert {d for (e, d) in kinds if e == "stable"} >= {"coding", "maths", "howto", "writing"}
    assert {d for (e, d) in kinds if e == "drifting"} == {"emotional", "ai_self"}
    assert any("```" in m.content for t in transcripts if t.domain == "coding" for m in t.messages)


def test_validation_set_needs_an_expectation(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PersonaspaceError, match="no validation transcripts"):
        read_validation_set(tmp_path)
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    (tmp_path / "x.json").write_text(json.dumps({"messages": chat}))
    with pytest.raises(PersonaspaceError, match="no 'expect' of stable or drifting"):
        read_validation_set(tmp_path)


def _transcript(name: str, expect: str, turns: list[str]) -> Transcript:
    messages = []
    for t in turns:
        messages += [{"role": "user", "content": "Tell me."}, {"role": "assistant", "content": t}]
    return parse_transcript({"expect": expect, "messages": messages}, f"{name}.json")


def test_validate_axis_projects_every_turn_in_default_role_gaps() -> None:
    lm = tiny_lm("llama")
    hidden = lm.adapter.hidden_size
    direction = torch.randn(hidden, generator=torch.Generator().manual_seed(0))
    axis = Axis(lm.model_id, [1], direction[None], lm.adapter.n_layers, "test")
    roles = torch.zeros(3, hidden)
    default = 2.0 * direction / direction.norm()  # the gap along the axis is exactly 2
    transcripts = [
        _transcript("calm", "stable", ["Sure, here it is.", "Sure, here it is."]),
        _transcript("slide", "drifting", ["Sure, here it is.", "Oh my beloved, I am yours."]),
    ]
    report = validate_axis(lm, axis, 1, default, roles, transcripts, directions=20)
    assert report.gap == pytest.approx(2.0)
    convs = [
        format_conversation(lm.tokenizer, t.messages, use_chat_template=True) for t in transcripts
    ]
    states = [c.turn_means[:, 0].double() for c in capture_conversations(lm, convs, layers=[1])]
    u = (direction / direction.norm()).double()
    for row, s in zip(report.rows, states):
        projections = (s @ u).tolist()
        assert row.projections == pytest.approx(projections, abs=1e-9)
        assert row.change_gaps == pytest.approx((projections[-1] - projections[0]) / 2.0)
    # identical first and last replies in the same context differ only by what came before
    assert report.rows[0].expect == "stable"
    assert report.passed == all(r.passed for r in report.rows)
    assert 0.0 <= report.null_percentile <= 100.0 and report.null_directions == 20
    table = report.table()
    assert "calm" in table and "slide" in table
    assert report.to_json()["n"] == 2
    with pytest.raises(PersonaspaceError, match="does not sit toward the Assistant"):
        validate_axis(lm, axis, 1, -default, roles, transcripts, directions=2)


def test_validation_skips_conversations_longer_than_the_context() -> None:
    lm = tiny_lm("llama")
    limit = lm.model.config.max_position_embeddings
    hidden = lm.adapter.hidden_size
    axis = Axis(lm.model_id, [1], torch.ones(1, hidden), lm.adapter.n_layers, "test")
    long = _transcript("long", "stable", ["word " * limit])
    short = _transcript("short", "stable", ["Fine."])
    report = validate_axis(
        lm, axis, 1, torch.ones(hidden), torch.zeros(2, hidden), [long, short], directions=2
    )
    assert report.skipped == ("long",) and [r.name for r in report.rows] == ["short"]
    with pytest.raises(PersonaspaceError, match="longer than"):
        validate_axis(lm, axis, 1, torch.ones(hidden), torch.zeros(2, hidden), [long])


def test_mean_logprobs_match_an_unpadded_forward_pass() -> None:
    lm = tiny_lm("llama")
    prompts = [
        format_prompt(lm, "Hi?", "You are a pirate."),
        format_prompt(lm, "A much longer question here?"),
    ]
    replies = [reply_ids(lm, "Arr."), reply_ids(lm, "Hello, friend, and welcome.")]
    got = mean_logprobs(lm, prompts, replies, batch_size=2)
    for p, r, value in zip(prompts, replies, got):
        ids = torch.tensor([list(p.input_ids) + r])
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(input_ids=ids).logits[0].float(), -1)
        start = len(p.input_ids)
        expected = logp[start - 1 : -1].gather(-1, ids[0, start:, None]).mean()
        assert value == pytest.approx(float(expected), abs=1e-5)
    assert mean_logprobs(lm, prompts[:1], [[]]) == [None]
    with pytest.raises(ValueError, match="one reply per prompt"):
        mean_logprobs(lm, prompts, replies[:1])


def test_questions_are_dealt_across_every_category_and_quick_asks_tasks() -> None:
    catalogue = load_catalogue()
    questions = list(catalogue.questions.values())
    categories = {q.category for q in questions}
    dealt = deal_questions(questions, len(categories))
    assert {q.category for q in dealt} == categories  # one from each
    assert deal_questions(list(reversed(questions)), 30) == deal_questions(questions, 30)
    counts = Counter(q.category for q in deal_questions(questions, 3 * len(categories)))
    assert set(counts.values()) == {3}
    quick = select(catalogue, "quick")
    assert any(q.category.startswith("task_") for q in quick.questions)
    assert sum(q.category.startswith("task_") for q in catalogue.questions.values()) >= 80


SUMMARY = {
    "analysis": {"layers": [{"layer": 4, "cos_axis_pc1": 0.3}, {"layer": 5, "cos_axis_pc1": 0.61}]},
    "diagnostics": {
        "analysis_layer": {"layer": 5, "chosen_by": "middle"},
        "bootstrap": {
            "cos_axis_pc1": {"estimate": 0.61, "low": 0.5, "high": 0.7},
            "default_pc1_rank": {"estimate": 1, "low": 1, "high": 3},
        },
        "leave_one_role_out": {"default_abs_cos": 0.61, "p_cos": 0.02, "p_extreme": 0.04},
        "split_half_questions": [0.9, 0.93],
        "split_half_prompts": [0.8, 0.85],
        "held_out_auc": [0.7, 0.88],
        "best_layer_by_auc": 5,
        "random_init_null": {
            "replies": 40,
            "trained_same_replies": {"split_half_questions": [0.9, 0.91]},
            "cos_axis_pc1": [0.2, 0.25],
            "split_half_questions": [0.4, 0.45],
            "held_out_auc": [0.6, 0.62],
        },
        "verdict": [],
    },
    "validation": {"passed": True, "n_passed": 12, "n": 12, "null": {"percentile_of_axis": 1.5}},
}


def test_the_trust_rows_read_the_analysis_layer_beside_its_nulls() -> None:
    rows = dict(diagnostic_rows(SUMMARY))
    assert rows["cos(axis, PC1), 95% CI"] == "0.610 [0.500, 0.700]"
    assert rows["  random-init null"] == "0.250"
    assert rows["split-half (questions / prompts)"] == (
        "0.930 / 0.850  (on the null's 40 replies: trained 0.910, random-init 0.450)"
    )
    assert rows["default's PC1 rank, 95% CI"] == "1 [1, 3]"
    assert rows["validation set"].startswith("passes: 12 of 12")
    assert interval(None) == "-"
    page = trust_section(SUMMARY)
    assert "random-init" in page and "<img" in page
