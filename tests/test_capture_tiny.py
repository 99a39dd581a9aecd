"""Single-pass capture on tiny random models: exactness, batching, stop handling, hook hygiene."""

from __future__ import annotations

import pytest
import torch
from conftest import ARCHITECTURES, tiny_lm

from personaspace.capture import SamplingConfig, capture_conversations, generate, with_reply
from personaspace.capture.generate import end_of_turn_ids
from personaspace.conversation import format_conversation
from personaspace.errors import PersonaspaceError

QUESTIONS = ["Hi", "Tell me a long story about the sea, please.", "Why?", "abc def ghi"]


def prompts_for(lm, questions=QUESTIONS, system=None):  # type: ignore[no-untyped-def]
    head = [{"role": "system", "content": system}] if system else []
    return [
        format_conversation(
            lm.tokenizer, [*head, {"role": "user", "content": q}], add_generation_prompt=True
        )
        for q in questions
    ]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1)).max())


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_single_pass_equals_teacher_forced(model_type: str) -> None:
    lm = tiny_lm(model_type)
    prompts = prompts_for(lm)
    gens = generate(
        lm,
        prompts,
        SamplingConfig(max_new_tokens=12),
        batch_size=4,
        reductions=("response_mean", "last_prompt"),
    )
    forced = capture_conversations(lm, [with_reply(p, g.token_ids) for p, g in zip(prompts, gens)])
    for g, f in zip(gens, forced):
        assert len(g.token_ids) > 0
        assert rel_err(g.response_mean, f.turn_means[0]) <= 1e-4
        assert rel_err(g.last_prompt, f.last_prompt) <= 1e-4


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gemma3_text"])
def test_mixed_length_batch_equals_one_by_one(model_type: str) -> None:
    lm = tiny_lm(model_type)
    prompts = prompts_for(lm)
    batched = generate(lm, prompts, SamplingConfig(max_new_tokens=10), batch_size=4)
    for prompt, b in zip(prompts, batched):
        [alone] = generate(lm, [prompt], SamplingConfig(max_new_tokens=10))
        assert alone.token_ids == b.token_ids
        assert rel_err(b.response_mean, alone.response_mean) <= 1e-4


def test_sampling_depends_on_seed_not_batch() -> None:
    lm = tiny_lm("llama")
    prompts = prompts_for(lm)
    config = SamplingConfig(max_new_tokens=10, temperature=0.7, top_p=0.9, seed=5)
    batched = generate(lm, prompts, config, batch_size=4)
    alone = [generate(lm, [p], config, seeds=[5 + i])[0] for i, p in enumerate(prompts)]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]
    other_seed = generate(lm, prompts, SamplingConfig(max_new_tokens=10, temperature=0.7, seed=99))
    assert [g.token_ids for g in other_seed] != [g.token_ids for g in batched]


def test_end_of_turn_token_and_later_padding_are_excluded() -> None:
    lm = tiny_lm("llama")
    [free] = generate(lm, prompts_for(lm, ["Hi"]), SamplingConfig(max_new_tokens=12))
    assert len(free.token_ids) == 12  # random model: runs to the length limit
    # Make the 4th generated token an end-of-turn token: the reply is the 3 before it.
    stop_id = free.token_ids[3]
    assert stop_id not in free.token_ids[:3]
    lm.model.generation_config.eos_token_id = [3, stop_id]
    assert stop_id in end_of_turn_ids(lm)
    prompts = prompts_for(lm, ["Hi", "Tell me a long story about the sea, please."])
    gens = generate(lm, prompts, SamplingConfig(max_new_tokens=12), batch_size=2)
    stopped = gens[0]
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == free.token_ids[:3]
    forced = capture_conversations(lm, [with_reply(prompts[0], stopped.token_ids)])[0]
    assert rel_err(stopped.response_mean, forced.turn_means[0]) <= 1e-4
    # The mean is over exactly the three content tokens' states.
    states = capture_conversations(lm, [with_reply(prompts[0], free.token_ids)], all_tokens=True)
    tokens = states[0].tokens
    start = len(prompts[0].input_ids)
    assert rel_err(stopped.response_mean, tokens[start : start + 3].mean(0)) <= 1e-4


def test_stop_string_cuts_reply_and_mean() -> None:
    lm = tiny_lm("llama")
    [free] = generate(lm, prompts_for(lm, ["Why?"]), SamplingConfig(max_new_tokens=12))
    text = lm.tokenizer.decode(free.token_ids)
    assert len(text) == len(free.token_ids)  # one character per token
    # The first two-character string (from position 3 on) that does not occur earlier.
    k = next(k for k in range(3, len(text) - 1) if text[k : k + 2] not in text[: k + 1])
    config = SamplingConfig(max_new_tokens=12, stop_strings=(text[k : k + 2],))
    [cut] = generate(lm, prompts_for(lm, ["Why?"]), config)
    assert cut.finish_reason == "stop"
    assert cut.token_ids == free.token_ids[:k]
    forced = capture_conversations(lm, [with_reply(prompts_for(lm, ["Why?"])[0], cut.token_ids)])
    assert rel_err(cut.response_mean, forced[0].turn_means[0]) <= 1e-4


def test_all_tokens_reduction_covers_prompt_and_reply() -> None:
    lm = tiny_lm("qwen2")
    prompts = prompts_for(lm, ["Hi", "Why not?"])
    gens = generate(
        lm,
        prompts,
        SamplingConfig(max_new_tokens=6),
        layers=[0, -1],
        reductions=("all_tokens", "response_mean"),
        batch_size=2,
    )
    for p, g in zip(prompts, gens):
        forced = capture_conversations(
            lm, [with_reply(p, g.token_ids)], layers=[0, 2], all_tokens=True
        )[0]
        assert g.tokens.shape == (len(p.input_ids) + len(g.token_ids), 2, 32)
        assert rel_err(g.tokens, forced.tokens) <= 1e-4
        assert g.layers == [0, 2]


def test_hooks_are_gone_and_outputs_bit_identical_after_capture() -> None:
    lm = tiny_lm("llama")
    ids = torch.tensor([prompts_for(lm, ["Hello there"])[0].input_ids])
    with torch.inference_mode():
        before = lm.model(ids).logits.clone()
    generate(
        lm,
        prompts_for(lm),
        SamplingConfig(max_new_tokens=5),
        batch_size=2,
        reductions=("response_mean", "last_prompt", "all_tokens"),
    )
    capture_conversations(lm, prompts_for(lm))
    assert all(not block._forward_hooks for block in lm.adapter.layers(lm.model))
    with torch.inference_mode():
        after = lm.model(ids).logits
    assert torch.equal(before, after)


def test_hooks_removed_when_generation_raises() -> None:
    lm = tiny_lm("llama")

    def boom(*_args: object) -> None:
        raise RuntimeError("stop here")

    from personaspace.capture import residual_hooks

    with pytest.raises(RuntimeError), residual_hooks(lm.model, lm.adapter, [0, 1], boom):
        lm.model(torch.tensor([[5, 6, 7]]))
    assert all(not block._forward_hooks for block in lm.adapter.layers(lm.model))


def test_multi_turn_teacher_forced_turn_means() -> None:
    lm = tiny_lm("gemma2")
    conv = format_conversation(
        lm.tokenizer,
        [
            {"role": "user", "content": "One"},
            {"role": "assistant", "content": "Two two"},
            {"role": "user", "content": "Three"},
            {"role": "assistant", "content": "Four!"},
        ],
    )
    [cap] = capture_conversations(lm, [conv], all_tokens=True)
    spans = conv.spans_of("assistant")
    assert cap.turn_means.shape == (2, 3, 32)
    for turn, span in enumerate(spans):
        expected = cap.tokens[span.start : span.end].mean(0)
        assert torch.allclose(cap.turn_means[turn], expected, rtol=1e-5, atol=1e-6)


def test_generation_refuses_a_prompt_that_leaves_no_room_before_running() -> None:
    lm = tiny_lm()  # context 512 tokens, one per character
    calls: list[int] = []
    hook = lm.model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        prompt = format_conversation(
            lm.tokenizer, [{"role": "user", "content": "x" * 480}], add_generation_prompt=True
        )
        with pytest.raises(PersonaspaceError, match="plus 64 to generate but tiny-llama reads"):
            generate(lm, [prompt], SamplingConfig(max_new_tokens=64))
        assert calls == []
        [fits] = generate(lm, [prompt], SamplingConfig(max_new_tokens=8))
        assert calls and len(fits.token_ids) <= 8
    finally:
        hook.remove()


def test_generation_and_capture_raise_no_deprecation_warnings() -> None:
    import warnings

    lm = tiny_lm()
    prompt = format_conversation(
        lm.tokenizer, [{"role": "user", "content": "Hi there"}], add_generation_prompt=True
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        [reply] = generate(lm, [prompt], SamplingConfig(max_new_tokens=4))
        capture_conversations(lm, [with_reply(prompt, reply.token_ids)])
    assert [str(w.message) for w in caught] == []


SYSTEMS = ["You are a lighthouse keeper on a stormy coast.", "You are a tired night-shift baker."]


def shared_prefix_prompts(lm):  # type: ignore[no-untyped-def]
    """Six prompts: two system prompts x three questions, and one without a system prompt."""
    prompts = [p for s in SYSTEMS for p in prompts_for(lm, QUESTIONS[:3], system=s)]
    return [*prompts, *prompts_for(lm, QUESTIONS[3:])]


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_shared_prefixes_equal_teacher_forcing_and_rows_alone(model_type: str) -> None:
    from personaspace.capture.generate import shareable_prefix
    from personaspace.capture.prefill import plan_prefill

    lm = tiny_lm(model_type)
    prompts = shared_prefix_prompts(lm)
    plan = plan_prefill([p.input_ids for p in prompts], [shareable_prefix(p) for p in prompts])
    assert len(plan.prefixes) == 2 and plan.row_prefix[-1] == -1  # sharing is in use
    config = SamplingConfig(max_new_tokens=10, temperature=0.9, top_p=0.95, seed=3)
    reductions = ("response_mean", "last_prompt")
    gens = generate(lm, prompts, config, batch_size=len(prompts), reductions=reductions)
    forced = capture_conversations(lm, [with_reply(p, g.token_ids) for p, g in zip(prompts, gens)])
    assert sum(len(g.token_ids) > 0 for g in gens) >= 4
    for g, f in zip(gens, forced):
        assert rel_err(g.last_prompt, f.last_prompt) <= 1e-5
        if g.token_ids:  # an immediate end of turn has no mean
            assert rel_err(g.response_mean, f.turn_means[0]) <= 1e-5
    for i, (prompt, g) in enumerate(zip(prompts, gens)):
        [alone] = generate(lm, [prompt], config, seeds=[g.seed], reductions=reductions)
        assert alone.token_ids == g.token_ids, i
        if g.token_ids:
            assert rel_err(alone.response_mean, g.response_mean) <= 1e-5
