"""Model specs and bad input: every failure is one line naming the problem and the fix."""

from __future__ import annotations

import time

import pytest
import torch
from conftest import ARCHITECTURES, tiny_config
from transformers import AutoModelForCausalLM, BertConfig, BertModel, T5Config, T5Model

from personaspace import PersonaspaceError, load_model
from personaspace.models import adapter_for
from personaspace.models.adapters import LAYER_PATHS

EXPECTED_PATHS = {
    "gpt2": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
    "gemma3": "model.language_model.layers",
}


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_adapter_on_tiny_config(model_type: str) -> None:
    model = AutoModelForCausalLM.from_config(tiny_config(model_type))
    adapter = adapter_for(model)
    assert adapter.model_type == model_type
    assert adapter.layers_path == EXPECTED_PATHS.get(model_type, "model.layers")
    assert (adapter.n_layers, adapter.hidden_size) == (3, 32)
    assert len(adapter.layers(model)) == 3
    assert adapter.check_layers([0, -1]) == [0, 2]


def test_unsupported_architecture_is_a_clear_error() -> None:
    model = AutoModelForCausalLM.from_config(
        tiny_config("llama").__class__(**{**tiny_config("llama").to_dict()})
    )
    model.config.model_type = "mamba"
    with pytest.raises(PersonaspaceError, match="architecture 'mamba' is not supported"):
        adapter_for(model)
    assert "llama" in LAYER_PATHS


def test_layer_out_of_range() -> None:
    adapter = adapter_for(AutoModelForCausalLM.from_config(tiny_config("llama")))
    with pytest.raises(PersonaspaceError, match="layer 3 is out of range.*from 0 to 2"):
        adapter.check_layers([3])
    with pytest.raises(PersonaspaceError, match="same layer twice"):
        adapter.check_layers([1, -2])


def test_unknown_alias_names_the_bundled_ones() -> None:
    with pytest.raises(PersonaspaceError, match="unknown model 'smollm3'.*smollm2-135m-instruct"):
        load_model("smollm3")


def test_hub_id_offline_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PersonaspaceError, match="hub is unreachable.*gemma-3-270m"):
        load_model("Qwen/Qwen3-0.6B")


def test_hub_id_unreachable_endpoint_fails_within_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    started = time.monotonic()
    with pytest.raises(PersonaspaceError, match="cannot connect to 127.0.0.1:9"):
        load_model("someone/some-model")
    assert time.monotonic() - started < 10


def test_missing_and_corrupt_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PersonaspaceError, match="no such file or folder"):
        load_model(str(tmp_path / "absent.gguf"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(PersonaspaceError, match="could not read the GGUF file"):
        load_model(str(bad))
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    with pytest.raises(PersonaspaceError, match="no readable config.json"):
        load_model(str(empty))


def test_non_causal_checkpoint_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bert = BertModel(
        BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        )
    )
    bert.save_pretrained(tmp_path)
    with pytest.raises(PersonaspaceError, match="'bert' model, which is not a causal"):
        load_model(str(tmp_path))
    t5 = tmp_path / "t5"
    T5Model(
        T5Config(vocab_size=50, d_model=16, num_layers=1, num_heads=2, d_kv=8, d_ff=32)
    ).save_pretrained(t5)
    with pytest.raises(PersonaspaceError, match="'t5' model, which is not a causal"):
        load_model(str(t5))


def test_local_folder_loads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from conftest import char_tokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("qwen3"))
    model.save_pretrained(tmp_path)
    char_tokenizer().save_pretrained(tmp_path)
    lm = load_model(str(tmp_path))
    assert lm.adapter.model_type == "qwen3" and lm.chat_tuned
    assert lm.tokenizer.padding_side == "left"
    ids = torch.tensor([[5, 6, 7]])
    with torch.inference_mode():
        assert torch.equal(lm.model(ids).logits, model.eval()(ids).logits)


@pytest.mark.integration
def test_bundled_models_load_with_expected_shapes() -> None:
    smol = load_model("smollm2-135m-instruct")
    assert (smol.adapter.model_type, smol.adapter.n_layers, smol.adapter.hidden_size) == (
        "llama",
        30,
        576,
    )
    assert smol.chat_tuned
    gemma = load_model("gemma-3-270m")
    assert (gemma.adapter.model_type, gemma.adapter.n_layers, gemma.adapter.hidden_size) == (
        "gemma3_text",
        18,
        640,
    )
    assert not gemma.chat_tuned
