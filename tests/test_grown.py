"""The grown-assistant machinery: the Gemma template, data magpie, tune snapshots, the
random-init rung, the evidence measures, and the study script's dry mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_lm
from pipeline_fixtures import make_tiny_model, tiny_axis_run

from personaspace.capture.generate import Generation
from personaspace.cli.main import main
from personaspace.conversation.format import format_conversation
from personaspace.conversation.templates import read_chat_template
from personaspace.errors import PersonaspaceError
from personaspace.models import load_model
from personaspace.runfolder import RunFolder
from personaspace.training.dataset import read_chat_dataset
from personaspace.training.magpie import (
    MagpieSettings,
    final_answer,
    make_magpie_dataset,
    near_duplicates,
    pre_query,
)

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("therapist", "consultant", "reviewer", "evaluator", "coach", "ghost", "leviathan", "bard")


def fake_embed(texts: list[str]) -> torch.Tensor:
    """Embeddings that make two texts near-duplicates exactly when their first words match."""
    return torch.stack(
        [
            torch.nn.functional.one_hot(
                torch.tensor(hash(t.split()[0]) % 97 if t.split() else 0), 97
            ).float()
            for t in texts
        ]
    )


# --- the Gemma turn format ----------------------------------------------------------------


def test_gemma_template_renders_gemma_turns_with_exact_spans(gemma_tokenizer) -> None:  # type: ignore[no-untyped-def]
    gemma_tokenizer.chat_template = read_chat_template("gemma")
    try:
        conv = format_conversation(
            gemma_tokenizer,
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello there."},
            ],
        )
        prompt = format_conversation(
            gemma_tokenizer, [{"role": "user", "content": "Hi"}], add_generation_prompt=True
        )
    finally:
        gemma_tokenizer.chat_template = None
    assert conv.text == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello there.<end_of_turn>\n"
    )
    assert conv.format == "chat_template+folded_system"
    spans = {s.role: gemma_tokenizer.decode(conv.input_ids[s.start : s.end]) for s in conv.spans}
    assert spans == {"system": "Be brief.", "user": "Hi", "assistant": "Hello there."}
    # the token after the reply is <end_of_turn>: what --end-of-turn trains
    reply = conv.spans_of("assistant")[0]
    assert gemma_tokenizer.convert_ids_to_tokens(conv.input_ids[reply.end]) == "<end_of_turn>"
    assert prompt.text == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"


def test_unknown_template_is_one_line_error() -> None:
    with pytest.raises(PersonaspaceError, match="no such chat template: nope"):
        read_chat_template("nope")


# --- data magpie ---------------------------------------------------------------------------


def test_pre_query_is_the_template_up_to_the_user_text() -> None:
    lm = tiny_lm()
    assert lm.tokenizer.decode(pre_query(lm)) == "<|im_start|>user\n"
    lm.chat_tuned = False
    with pytest.raises(PersonaspaceError, match="has no chat template"):
        pre_query(lm)


def test_near_duplicates_keep_the_first_and_drop_held_out() -> None:
    e = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert near_duplicates(e, 0.95) == [None, "near_duplicate", None, None]
    held = torch.tensor([[0.0, 0.0, 2.0]])
    assert near_duplicates(e, 0.95, held) == [None, "near_duplicate", None, "held_out"]


def test_answers_cut_at_the_limit_are_trimmed_to_a_sentence() -> None:
    settings = MagpieSettings(min_answer_words=2)
    cut = Generation([], [], "One two three. Four five six! Seven eig", "length", [])
    assert final_answer(cut, settings) == ("One two three. Four five six!", None)
    assert final_answer(Generation([], [], "no end at all", "length", []), settings)[1] == (
        "unfinished"
    )
    done = Generation([], [], "These are some fine words here.", "stop", [])
    assert final_answer(done, settings) == ("These are some fine words here.", None)


def test_magpie_is_deterministic_and_counts_add_up() -> None:
    lm = tiny_lm()
    settings = MagpieSettings(
        requests=12, request_tokens=12, answer_tokens=16, min_request_words=1, min_answer_words=1,
        min_coherence=0.0,
    )  # fmt: skip
    first = make_magpie_dataset(lm, settings, embed=fake_embed)
    again = make_magpie_dataset(lm, settings, embed=fake_embed)
    assert [e.to_json() for e in first.examples] == [e.to_json() for e in again.examples]
    card = first.card
    assert sum(card["requests_dropped"].values()) + card["requests_kept"] == 12
    assert sum(card["answers_dropped"].values()) + card["kept"] == card["requests_kept"]
    assert card["kept"] == len(first.examples)
    for example in first.examples:
        assert [m.role for m in example.messages] == ["user", "assistant"]
    # a held-out question equal to a kept request removes it
    if first.examples:
        held = [first.examples[0].messages[0].content]
        fewer = make_magpie_dataset(lm, settings, embed=fake_embed, held_out=held)
        assert fewer.card["requests_dropped"]["held_out"] >= 1
        assert held[0] not in [e.messages[0].content for e in fewer.examples]


def test_data_magpie_cli_writes_a_dataset_and_card(tmp_path: Path) -> None:
    chat = make_tiny_model(tmp_path / "chat")
    out = tmp_path / "m.jsonl"
    code = main(
        [
            "data",
            "magpie",
            "--model",
            str(chat),
            "--out",
            str(out),
            "--requests",
            "16",
            "--request-tokens",
            "16",
            "--answer-tokens",
            "24",
            "--hold-out",
            "none",
        ]
    )
    if code == 0:
        card = json.loads((tmp_path / "m.card.json").read_text())
        assert len(read_chat_dataset(out)) == card["kept"] > 0
        assert card["kind"] == "magpie_dataset" and card["requests_sampled"] == 16
    else:  # a random model may write nothing worth keeping: then nothing is written
        assert code == 2 and not out.exists()


def test_data_magpie_refuses_a_base_model_before_writing(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    base = make_tiny_model(tmp_path / "base", chat=False)
    out = tmp_path / "m.jsonl"
    assert main(["data", "magpie", "--model", str(base), "--out", str(out)]) == 2
    assert "has no chat template" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "m.card.json").exists()


# --- tune snapshots, the random-init rung ---------------------------------------------------


def test_tune_snapshots_are_loadable_models_of_each_checkpoint(tmp_path: Path) -> None:
    base = make_tiny_model(tmp_path / "base", chat=False)
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                     {"role": "assistant", "content": f"answer {i}."}]}) + "\n"
            for i in range(8)
        )
    )  # fmt: skip
    out = tmp_path / "tune"
    assert main(["tune", str(data), "--model", str(base), "--out", str(out), "--chat-template",
                 "gemma", "--end-of-turn", "--save-snapshots", "--checkpoint-every", "2",
                 "--max-steps", "4", "--batch-size", "2", "--lr", "1e-2"]) == 0  # fmt: skip
    snaps = sorted(p.name for p in (out / "snapshots").iterdir())
    assert snaps == ["step-000000", "step-000002", "step-000004"]
    ids = torch.tensor([[5, 6, 7, 8]])
    plain = load_model(str(base))
    step0 = load_model(str(out / "snapshots" / "step-000000"))
    last = load_model(str(out / "snapshots" / "step-000004"))
    final = load_model(str(out / "final"))
    with torch.no_grad():
        logits = {
            k: m.model(ids).logits
            for k, m in {"plain": plain, "step0": step0, "last": last, "final": final}.items()
        }
    assert torch.equal(logits["step0"], logits["plain"])  # LoRA starts at zero
    assert torch.equal(logits["last"], logits["final"])
    assert not torch.equal(logits["last"], logits["plain"])
    assert step0.chat_tuned and "<start_of_turn>" in step0.tokenizer.chat_template


def test_random_init_rung_is_a_comparable_run(tmp_path: Path) -> None:
    from personaspace.experiments.grown import random_init_rung
    from personaspace.pipeline.diagnose import random_init_model

    model = make_tiny_model(tmp_path / "m")
    source = tiny_axis_run(model, tmp_path / "run", ROLES)
    lm = load_model(str(model))
    rung = random_init_rung(source, tmp_path / "random", lm)
    compared = rung.compared()
    original = RunFolder(source).compared()
    assert set(compared.roles) == set(original.roles)
    assert compared.analysis_layer == original.analysis_layer
    assert compared.model_id.startswith("random-init:")
    # the default vector is the random model's mean over the source's default replies
    from personaspace.capture import capture_conversations
    from personaspace.conversation.prompts import format_exchange

    null = random_init_model(lm)
    defaults = [r for r in RunFolder(source).responses() if r["kind"] == "default"]
    convs = [format_exchange(null, r["question"], r["response"], r["system"]) for r in defaults]
    caps = capture_conversations(null, convs, layers=compared.layers, batch_size=16)
    expected = torch.stack([c.turn_means[0] for c in caps]).float().mean(0)
    torch.testing.assert_close(compared.default, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(compared.default, original.default)


def test_assistant_evidence_counts_identity_capability_and_format() -> None:
    from personaspace.catalogue import load_catalogue
    from personaspace.experiments.grown import assistant_evidence, identity_questions, share

    catalogue = load_catalogue()
    lm = tiny_lm()
    found = assistant_evidence(lm, catalogue, capability=4)
    n_identity = len(identity_questions(catalogue))
    assert n_identity == 26
    assert found["ai_identity"]["n"] == n_identity
    assert found["capability"]["n"] == 4
    assert found["ended_turn"]["n"] == n_identity + 4
    assert share([True, True, False])["k"] == 2


def test_study_script_dry_mode_runs_end_to_end() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "study_grown_assistant.py"), "--dry"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "dry run done: 5 rungs" in done.stdout
    for table in (
        "## Did it become an assistant?",
        "## The ladder",
        "## Steering",
        "## Monitoring",
    ):
        assert table in done.stdout
    assert "| final | 100 % | template |" in done.stdout
