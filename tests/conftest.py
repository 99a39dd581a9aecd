"""Shared fixtures: a character-level tokenizer, tiny random models, the bundled models."""

from __future__ import annotations

import string

import pytest
import torch
from tokenizers import Tokenizer, decoders, models
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from personaspace.models.adapters import adapter_for
from personaspace.models.loading import LoadedModel, load_model, prepare_tokenizer

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<pad>", "<bos>", "<|im_start|>", "<|im_end|>"]
CHARS = list(string.ascii_letters + string.digits + string.punctuation + " \n")


def char_tokenizer(chat_template: str | None = CHATML) -> PreTrainedTokenizerFast:
    """One token per character (plus four special tokens): spans are easy to verify by eye."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    backend.decoder = decoders.Fuse()  # characters concatenate back without spaces
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tok.chat_template = chat_template
    return prepare_tokenizer(tok)


VOCAB = len(SPECIALS) + len(CHARS)
TINY = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=3,
)
ARCHITECTURES = [
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3_text",
    "gemma3",
    "phi3",
    "gpt2",
    "gpt_neox",
]


def tiny_config(model_type: str):  # type: ignore[no-untyped-def]
    if model_type == "gpt2":
        return AutoConfig.for_model(
            "gpt2",
            vocab_size=VOCAB,
            n_embd=32,
            n_layer=3,
            n_head=4,
            n_positions=512,
            bos_token_id=1,
            eos_token_id=3,
            pad_token_id=0,
        )
    if model_type == "gpt_neox":
        return AutoConfig.for_model(
            "gpt_neox",
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=512,
            bos_token_id=1,
            eos_token_id=3,
            pad_token_id=0,
        )
    if model_type == "gemma3":
        return AutoConfig.for_model(
            "gemma3",
            text_config=dict(TINY, head_dim=8, model_type="gemma3_text"),
            bos_token_id=1,
            eos_token_id=3,
            pad_token_id=0,
        )
    extra = {"head_dim": 8} if model_type.startswith("gemma") or model_type == "qwen3" else {}
    return AutoConfig.for_model(model_type, **TINY, **extra)


def tiny_lm(model_type: str = "llama", seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type)).eval()
    model.generation_config.eos_token_id = 3
    return LoadedModel(
        model=model,
        tokenizer=char_tokenizer(),
        adapter=adapter_for(model),
        model_id=f"tiny-{model_type}",
        display_name="Tiny",
        chat_tuned=True,
    )


@pytest.fixture(scope="session")
def smollm2() -> LoadedModel:
    return load_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma_tokenizer():  # type: ignore[no-untyped-def]
    return load_model("gemma-3-270m").tokenizer
