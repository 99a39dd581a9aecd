"""Integration tests on the real bundled SmolLM2-135M-Instruct."""

from __future__ import annotations

import pytest
import torch

from personaspace import load_model
from personaspace.capture import SamplingConfig, capture_conversations, generate, with_reply
from personaspace.conversation import format_conversation

pytestmark = pytest.mark.integration

QUESTIONS = [
    "Hi!",
    "What is your favourite colour, and why do you like it so much more than the others?",
    "Describe the sea in one sentence.",
]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).norm(dim=-1) / b.norm(dim=-1)


@pytest.fixture(scope="module")
def prompts(smollm2):  # type: ignore[no-untyped-def]
    return [
        format_conversation(
            smollm2.tokenizer,
            [
                {"role": "system", "content": "You are a grumpy lighthouse keeper."},
                {"role": "user", "content": q},
            ],
            add_generation_prompt=True,
        )
        for q in QUESTIONS
    ]


def test_single_pass_equals_teacher_forced_per_layer(smollm2, prompts) -> None:  # type: ignore[no-untyped-def]
    config = SamplingConfig(max_new_tokens=24, temperature=0.7, top_p=0.9, seed=11)
    gens = generate(smollm2, prompts, config, batch_size=3)
    forced = capture_conversations(
        smollm2, [with_reply(p, g.token_ids) for p, g in zip(prompts, gens)]
    )
    assert any(g.finish_reason == "stop" for g in gens) or all(len(g.token_ids) == 24 for g in gens)
    for g, f in zip(gens, forced):
        assert g.response_mean.shape == (30, 576)
        assert float(rel_err(g.response_mean, f.turn_means[0]).max()) <= 1e-4


def test_retokenized_transcript_gives_same_vector_when_tokens_agree(smollm2, prompts) -> None:  # type: ignore[no-untyped-def]
    [g] = generate(smollm2, prompts[:1], SamplingConfig(max_new_tokens=20))
    conv = format_conversation(
        smollm2.tokenizer,
        [
            *[{"role": m.role, "content": m.content} for m in prompts[0].messages],
            {"role": "assistant", "content": g.text},
        ],
    )
    span = conv.spans_of("assistant")[0]
    assert conv.input_ids[span.start : span.end] == g.token_ids  # same tokens here
    [f] = capture_conversations(smollm2, [conv])
    assert float(rel_err(g.response_mean, f.turn_means[0]).max()) <= 1e-4


def test_batch_equals_one_by_one(smollm2, prompts) -> None:  # type: ignore[no-untyped-def]
    config = SamplingConfig(max_new_tokens=16)
    batched = generate(smollm2, prompts, config, batch_size=3)
    for p, b in zip(prompts, batched):
        [alone] = generate(smollm2, [p], config)
        assert alone.token_ids == b.token_ids
        assert float(rel_err(b.response_mean, alone.response_mean).max()) <= 1e-4


def test_outputs_bit_identical_to_fresh_load_after_capture(smollm2, prompts) -> None:  # type: ignore[no-untyped-def]
    ids = torch.tensor([prompts[0].input_ids])
    generate(
        smollm2,
        prompts,
        SamplingConfig(max_new_tokens=8),
        batch_size=3,
        reductions=("response_mean", "last_prompt", "all_tokens"),
    )
    fresh = load_model("smollm2-135m-instruct")
    with torch.inference_mode():
        assert torch.equal(smollm2.model(ids).logits, fresh.model(ids).logits)


def test_cached_weights_equal_direct_gguf_dequantization(smollm2) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM

    from personaspace.models.bundled import BUNDLED_MODELS
    from personaspace.models.cache import cache_root

    gguf = BUNDLED_MODELS["smollm2-135m-instruct"].locate_gguf(cache_root())
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    cached = smollm2.model.state_dict()
    for name, tensor in direct.state_dict().items():
        assert torch.equal(tensor, cached[name]), name


@pytest.mark.parametrize("alias", ["smollm2-135m-instruct", "gemma-3-270m"])
def test_bfloat16_generation_agrees_with_float32(alias: str) -> None:
    """Replies generated in bf16, re-read in fp32 over the same tokens: the response means
    of the two passes point the same way (median cosine >= 0.999 over replies x layers)."""
    from personaspace.catalogue import load_catalogue, select
    from personaspace.conversation.prompts import format_prompt
    from personaspace.pipeline.work import build_work

    low, full = load_model(alias, dtype=torch.bfloat16), load_model(alias)
    selection = select(load_catalogue(), "quick")
    shards = build_work(selection, low.display_name, 0, 4, chat_tuned=low.chat_tuned)
    items = [it for s, v in shards.items() if s.startswith("role/") for it in v][::40][:12]
    prompts = [format_prompt(low, it.question, it.system) for it in items]
    config = SamplingConfig(max_new_tokens=24, temperature=0.7, top_p=0.9).for_model(low.chat_tuned)
    gens = [g for g in generate(low, prompts, config, seeds=[it.seed for it in items])]
    pairs = [(p, g) for p, g in zip(prompts, gens) if g.token_ids]
    assert len(pairs) >= 8
    forced = capture_conversations(full, [with_reply(p, g.token_ids) for p, g in pairs])
    cosines = torch.stack(
        [
            torch.nn.functional.cosine_similarity(g.response_mean, f.turn_means[0], dim=-1)
            for (_, g), f in zip(pairs, forced)
        ]
    )
    assert float(cosines.median()) >= 0.999
    assert float(cosines.min()) >= 0.99
