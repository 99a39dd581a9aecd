"""personaspace tune: assistant-only loss, LoRA and full training on every architecture,
bit-identical resume after kill -9, hooks only inside training steps, outputs that load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ARCHITECTURES, tiny_lm
from safetensors.torch import load_file

from personaspace.cli.main import main
from personaspace.conversation.messages import Message
from personaspace.fileformat import save_vectors
from personaspace.models.loading import load_model
from personaspace.training.batches import batch_indices, collate
from personaspace.training.checkpoint import trainable
from personaspace.training.dataset import (
    IGNORE,
    ChatExample,
    read_chat_dataset,
    tokenize_examples,
    write_chat_dataset,
)
from personaspace.training.lora import LoraSettings, token_ids
from personaspace.training.loss import assistant_loss
from personaspace.training.tune import TuneConfig, prepare_model, train_step, tune
from personaspace.vectors.intervention import steer


def examples(n: int = 12) -> list[ChatExample]:
    return [
        ChatExample(
            [
                Message("system", "Be brief."),
                Message("user", f"What is {i} squared?"),
                Message("assistant", f"It is {i * i}."),
                Message("user", "Thanks"),
                Message("assistant", "You are welcome!"),
            ],
            f"data.jsonl:{i + 1}",
        )
        for i in range(n)
    ]


def write_data(path: Path, n: int = 12) -> Path:
    return write_chat_dataset(path, examples(n))


def tiny_folder(tmp_path: Path, model_type: str = "llama") -> Path:
    lm = tiny_lm(model_type)
    folder = tmp_path / f"tiny-{model_type}"
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    return folder


def test_the_labels_are_exactly_the_assistant_contents() -> None:
    lm = tiny_lm()
    item = tokenize_examples(lm, examples(1))[0]
    trained = [t for t, label in zip(item.input_ids, item.labels) if label != IGNORE]
    assert lm.tokenizer.decode(trained) == "It is 0.You are welcome!"
    with_end = tokenize_examples(lm, examples(1), end_of_turn=True)[0]
    kept = [t for t, label in zip(with_end.input_ids, with_end.labels) if label != IGNORE]
    assert lm.tokenizer.decode(kept) == "It is 0.<|im_end|>You are welcome!<|im_end|>"


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_our_loss_is_hugging_faces_and_one_lora_step_lowers_it(model_type: str) -> None:
    lm = tiny_lm(model_type)
    data = tokenize_examples(lm, examples(4))
    batch = collate(data, int(lm.tokenizer.pad_token_id))
    ours = assistant_loss(lm.model, batch, batch.n_trained)
    theirs = lm.model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels
    ).loss
    assert float(ours) == pytest.approx(float(theirs), abs=2e-6)
    config = TuneConfig(batch_size=4, learning_rate=5e-2, seed=1)
    prepare_model(lm, config)
    optimizer = torch.optim.AdamW(list(trainable(lm.model).values()), lr=config.lr)
    before = float(assistant_loss(lm.model, batch, batch.n_trained))
    train_step(lm, data, config, optimizer, 0, 1)
    after = float(assistant_loss(lm.model, batch, batch.n_trained))
    assert after < before


def test_gradient_accumulation_is_the_mean_over_the_step() -> None:
    # one batch of 4, or two of 2 accumulated: the same 4 examples (one permutation)
    assert sorted(batch_indices(4, 4, 0, 0)) == sorted(
        batch_indices(4, 2, 0, 0) + batch_indices(4, 2, 0, 1)
    )
    weights = []
    for batch_size, accum in ((4, 1), (2, 2)):
        lm = tiny_lm("llama")
        data = tokenize_examples(lm, examples(4))
        config = TuneConfig(method="full", batch_size=batch_size, grad_accum=accum)
        prepare_model(lm, config)
        train_step(lm, data, config, torch.optim.SGD(lm.model.parameters(), lr=1.0), 0, 1)
        weights.append(lm.model.model.embed_tokens.weight.detach().clone())
    assert torch.allclose(weights[0], weights[1], atol=1e-6)
    assert not torch.equal(weights[0], tiny_lm("llama").model.model.embed_tokens.weight)


def test_the_lora_result_loads_and_computes_what_training_left(tmp_path: Path) -> None:
    base = tiny_folder(tmp_path)
    lm = load_model(str(base))
    data = tokenize_examples(lm, examples())
    layer = 1
    direction = torch.zeros(lm.adapter.hidden_size)
    direction[0] = 1.0
    seen: list[int] = []
    block = lm.adapter.layers(lm.model)[layer]

    def spy(step: int, model: object) -> None:
        seen.append(len(block._forward_hooks))

    result = tune(
        lm,
        data,
        tmp_path / "run",
        TuneConfig(batch_size=4, epochs=2, checkpoint_every=2, learning_rate=1e-2),
        base=str(base),
        steering=[steer(layer, direction, 0.5, 10.0)],
        at_checkpoint=spy,
    )
    # the steering hook is absent at every checkpoint evaluation and after training
    assert seen == [0, 0, 0, 0] and len(block._forward_hooks) == 0
    ids = torch.tensor([data[0].input_ids])
    trained = lm.model(ids).logits
    loaded = load_model(str(result.final))
    assert torch.equal(loaded.model(ids).logits, trained)
    assert loaded.model_id == str(result.final.resolve())


@pytest.mark.parametrize("model_type", ["gemma3_text", "llama"])  # tied and untied heads
def test_trained_token_rows_save_load_and_compute_what_training_left(
    tmp_path: Path, model_type: str
) -> None:
    base = tiny_folder(tmp_path, model_type)
    lm = load_model(str(base))
    before = lm.model.get_input_embeddings().weight.detach().clone()
    rows = token_ids(lm.tokenizer, [lm.tokenizer.convert_ids_to_tokens(3), "a"])
    config = TuneConfig(
        batch_size=4,
        max_steps=3,
        checkpoint_every=3,
        learning_rate=1e-2,
        lora=LoraSettings(rank=2, target_modules=("q_proj",), trainable_tokens=rows),
    )
    data = tokenize_examples(lm, examples(), end_of_turn=True)
    result = tune(lm, data, tmp_path / "run", config, base=str(base))
    ids = torch.tensor([data[0].input_ids])
    trained = lm.model(ids).logits
    saved = load_file(str(result.final / "adapter_model.safetensors"))
    delta = "base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta"
    assert saved[delta].shape == (2, before.shape[1])
    assert json.loads((result.final / "adapter_config.json").read_text())[
        "trainable_token_indices"
    ] == list(rows)
    loaded = load_model(str(result.final))
    assert torch.equal(loaded.model(ids).logits, trained)
    after = loaded.model.get_input_embeddings().weight
    others = torch.ones(before.shape[0], dtype=torch.bool)
    others[list(rows)] = False
    assert torch.equal(after[others], before[others])  # the other rows stay the base's
    assert not torch.equal(after[list(rows)], before[list(rows)])  # the named rows trained
    assert torch.equal(after[list(rows)], saved[delta])


def test_full_finetuning_writes_a_model_folder(tmp_path: Path) -> None:
    lm = tiny_lm("qwen2")
    data = tokenize_examples(lm, examples())
    result = tune(
        lm,
        data,
        tmp_path / "full",
        TuneConfig(method="full", batch_size=12, epochs=3, learning_rate=1e-3),
        base="tiny",
    )
    ids = torch.tensor([data[0].input_ids])
    assert torch.equal(load_model(str(result.final)).model(ids).logits, lm.model(ids).logits)
    assert result.losses[-1] < result.losses[0]


def _tune_command(data: Path, base: Path, out: Path, steps: int) -> list[str]:
    return [
        sys.executable, "-m", "personaspace.cli.main", "tune", str(data), "--out", str(out),
        "--model", str(base), "--device", "cpu", "--dtype", "float32", "--batch-size", "2",
        "--max-steps", str(steps), "--checkpoint-every", "5", "--lr", "1e-2",
        "--lora-dropout", "0.1", "--epochs", "100",
    ]  # fmt: skip


def test_kill_9_and_resume_gives_identical_weights(tmp_path: Path) -> None:
    base, data = tiny_folder(tmp_path), write_data(tmp_path / "data.jsonl")
    steps = 120
    reference = tmp_path / "reference"
    subprocess.run(_tune_command(data, base, reference, steps), check=True, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _tune_command(data, base, killed, steps),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (killed / "checkpoints" / "step-000010").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "final").exists()  # it died mid-run
    done = subprocess.run(_tune_command(data, base, killed, steps), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resumed at step" in done.stdout
    for name in ("final/adapter_model.safetensors", "losses.jsonl"):
        assert (killed / name).read_bytes() == (reference / name).read_bytes()


def test_a_resume_with_other_settings_is_refused(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    base, data = tiny_folder(tmp_path), write_data(tmp_path / "data.jsonl")
    args = ["tune", str(data), "--out", str(tmp_path / "r"), "--model", str(base)]
    args += ["--device", "cpu", "--dtype", "float32", "--max-steps", "2"]
    assert main(args) == 0
    assert main([*args[:-1], "3"]) == 2
    assert "other settings (config)" in capsys.readouterr().err


BAD_LINES = [
    ("{not json", "data.jsonl:2 is not JSON"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', "data.jsonl:2 has no assistant turn"),
    ('{"messages": [{"role": "robot", "content": "hi"}]}', "data.jsonl:2: message 0 has unknown"),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_a_bad_dataset_line_is_named(tmp_path: Path, capsys, line: str, message: str) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data.jsonl"
    good = json.dumps(examples(1)[0].to_json())
    data.write_text(good + "\n" + line + "\n")
    out = tmp_path / "out"
    assert main(["tune", str(data), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(Exception, match="data.jsonl:2"):
        read_chat_dataset(data)


def test_bad_options_exit_2_and_write_nothing(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    base, data = tiny_folder(tmp_path), write_data(tmp_path / "data.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    common = ["--model", str(base), "--device", "cpu", "--dtype", "float32"]
    cases = [
        ([str(tmp_path / "empty.jsonl")], "has no examples"),
        ([str(data), "--lora-targets", "nope_proj"], "'nope_proj' does not exist"),
        ([str(data), "--max-tokens", "10"], "data.jsonl:1 has"),
        ([str(data), "--lora-rank", "0"], "--lora-rank is 0"),
        ([str(data), "--prevent", "runs/x:evil"], "is not VECTOR:COEF"),
        ([str(data), "--train-tokens", "<nope>"], "<nope> is not a token of this model's"),
        ([str(data), "--train-tokens", "a", "--method", "full"], "--train-tokens is for LoRA"),
    ]
    for extra, message in cases:
        out = tmp_path / "out"
        assert main(["tune", *extra, "--out", str(out), *common]) == 2, extra
        assert message in capsys.readouterr().err
        assert not out.exists()


def test_a_vector_from_another_model_is_refused(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    base, data = tiny_folder(tmp_path), write_data(tmp_path / "data.jsonl")
    run = tmp_path / "axis-run"
    meta = {"model_id": "other", "layers": [0, 1, 2], "analysis_layer": 1}
    save_vectors(run / "axis.safetensors", {"axis": torch.ones(3, 64)}, meta)
    save_vectors(run / "vectors" / "roles.safetensors", {"a": torch.ones(3, 64)}, meta)
    save_vectors(run / "vectors" / "default.safetensors", {"default": torch.ones(3, 64)}, meta)
    out = tmp_path / "out"
    args = ["tune", str(data), "--out", str(out), "--model", str(base), "--device", "cpu"]
    assert main([*args, "--ablate-direction", f"{run}@1"]) == 2
    assert "hidden size 64" in capsys.readouterr().err
    assert not out.exists()


def tiny_run(folder: Path, hidden: int = 32, layers: int = 3) -> Path:
    """An axis run folder with an axis and an 'evil' trait vector for the tiny models."""
    meta = {"model_id": "tiny", "layers": list(range(layers)), "analysis_layer": 1}
    torch.manual_seed(3)
    save_vectors(folder / "axis.safetensors", {"axis": torch.randn(layers, hidden)}, meta)
    save_vectors(folder / "vectors" / "roles.safetensors", {"a": torch.randn(layers, hidden)}, meta)
    default = {"default": torch.randn(layers, hidden)}
    save_vectors(folder / "vectors" / "default.safetensors", default, meta)
    traits = {"evil": torch.randn(layers, hidden)}
    save_vectors(folder / "vectors" / "traits.safetensors", traits, meta)
    return folder


def test_monitoring_records_every_checkpoint(tmp_path: Path) -> None:
    base, data = tiny_folder(tmp_path), write_data(tmp_path / "data.jsonl")
    run = tiny_run(tmp_path / "axis-run")
    out = tmp_path / "monitored"
    args = ["tune", str(data), "--out", str(out), "--model", str(base), "--device", "cpu"]
    args += ["--dtype", "float32", "--epochs", "2", "--checkpoint-every", "1", "--batch-size", "6"]
    args += ["--monitor", f"{run},evil", "--monitor-questions", "2", "--monitor-judge", "none"]
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "trajectory.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert set(rows[0]["vectors"]) == {"axis", "evil"}
    assert len(rows[0]["replies"]) == 4  # 2 catalogue questions + 2 of evil's held-out ones
    # the reply-mean projection is the mean of per-question projections: inside its interval
    cell = rows[-1]["vectors"]["evil"]["reply"]
    assert cell["low"] <= cell["mean"] <= cell["high"]
    assert (out / "trajectory.png").read_bytes()[:4] == b"\x89PNG"


def test_the_tuned_model_runs_the_axis_pipeline(tmp_path: Path) -> None:
    from pipeline_fixtures import make_tiny_model, make_user_catalogue

    from personaspace.pipeline.config import AxisConfig
    from personaspace.pipeline.run import run_axis

    base = make_tiny_model(tmp_path / "base")
    lm = load_model(str(base))
    result = tune(
        lm, tokenize_examples(lm, examples()), tmp_path / "tuned", TuneConfig(), base=str(base)
    )
    config = AxisConfig.from_json(
        {
            "model": str(result.final),
            "preset": "tiny",
            "catalogue": str(make_user_catalogue(tmp_path / "catalogue")),
            "catalogue_replace": True,
            "judge": "none",
            "max_new_tokens": 8,
        }
    )
    run = run_axis(config, tmp_path / "axis")
    assert run.verdict is None and (tmp_path / "axis" / "axis.safetensors").is_file()
    summary = json.loads((tmp_path / "axis" / "summary.json").read_text())
    assert summary["model_id"] == str(result.final.resolve())
