"""Exact content spans per template family, checked against hand-verified token indices.

The expected indices were read off the printed token lists (e.g. ChatML:
``<|im_start|> system Ċ Be Ġa Ġpirate . <|im_end|> Ċ ...``): a span covers the content
tokens and nothing of the template, special tokens or separators.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from personaspace.conversation import format_conversation
from personaspace.errors import PersonaspaceError
from personaspace.models.loading import load_tokenizer

TEMPLATES = Path(__file__).parent / "templates"
CONV = [
    {"role": "system", "content": "Be a pirate."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Arr, matey!"},
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "Captain Flint."},
]


def spans(conv):  # type: ignore[no-untyped-def]
    return [(s.role, s.start, s.end) for s in conv.spans]


def decoded(tok, conv):  # type: ignore[no-untyped-def]
    return [tok.decode(conv.input_ids[s.start : s.end]).strip() for s in conv.spans]


CONTENTS = [m["content"] for m in CONV]


@pytest.fixture(scope="module")
def smol_tok():  # type: ignore[no-untyped-def]
    return load_tokenizer("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def gemma_tok():  # type: ignore[no-untyped-def]
    return load_tokenizer("gemma-3-270m")


def test_chatml_smollm2(smol_tok) -> None:  # type: ignore[no-untyped-def]
    conv = format_conversation(smol_tok, CONV)
    assert conv.format == "chat_template"
    assert spans(conv) == [
        ("system", 3, 7),
        ("user", 12, 14),
        ("assistant", 20, 25),
        ("user", 30, 34),
        ("assistant", 40, 43),
    ]
    assert decoded(smol_tok, conv) == CONTENTS
    assert conv.input_ids[25] == smol_tok.convert_tokens_to_ids("<|im_end|>")


def test_chatml_generation_prompt(smol_tok) -> None:  # type: ignore[no-untyped-def]
    conv = format_conversation(smol_tok, CONV[:4], add_generation_prompt=True)
    assert conv.generation_start == len(conv.input_ids) == 40
    assert conv.text.endswith("<|im_start|>assistant\n")
    assert spans(conv)[-1] == ("user", 30, 34)


def test_gemma_template_folds_rejected_system_role(gemma_tok) -> None:  # type: ignore[no-untyped-def]
    gemma_tok.chat_template = (TEMPLATES / "gemma_like.jinja").read_text()
    try:
        conv = format_conversation(gemma_tok, CONV)
    finally:
        gemma_tok.chat_template = None
    assert conv.format == "chat_template+folded_system"
    assert conv.text.startswith("<bos><start_of_turn>user\nBe a pirate.\n\nHi there<end_of_turn>")
    assert spans(conv) == [
        ("system", 4, 8),
        ("user", 9, 11),
        ("assistant", 16, 21),
        ("user", 26, 30),
        ("assistant", 35, 38),
    ]
    assert decoded(gemma_tok, conv) == CONTENTS


def test_llama3_template(smol_tok) -> None:  # type: ignore[no-untyped-def]
    tok = load_tokenizer("smollm2-135m-instruct")
    tok.add_special_tokens(
        {
            "additional_special_tokens": [
                "<|begin_of_text|>",
                "<|start_header_id|>",
                "<|end_header_id|>",
                "<|eot_id|>",
            ]
        }
    )
    tok.chat_template = (TEMPLATES / "llama3_like.jinja").read_text()
    conv = format_conversation(tok, CONV)
    assert spans(conv) == [
        ("system", 6, 10),
        ("user", 16, 18),
        ("assistant", 25, 30),
        ("user", 36, 40),
        ("assistant", 47, 50),
    ]
    assert decoded(tok, conv) == CONTENTS


def test_qwen3_template_excludes_empty_think_blocks() -> None:
    tok = load_tokenizer("smollm2-135m-instruct")
    tok.chat_template = (TEMPLATES / "qwen3_like.jinja").read_text()
    conv = format_conversation(tok, CONV)
    # tokens 20-29 are "<think>\n\n</think>\n\n": template, not content.
    assert spans(conv) == [
        ("system", 3, 7),
        ("user", 12, 14),
        ("assistant", 30, 35),
        ("user", 40, 44),
        ("assistant", 60, 63),
    ]
    assert tok.decode(conv.input_ids[20:30]) == "<think>\n\n</think>\n\n"
    prompt = format_conversation(
        tok, CONV[:4], add_generation_prompt=True, template_kwargs={"enable_thinking": False}
    )
    assert prompt.text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert prompt.generation_start == len(prompt.input_ids)


def test_plain_transcript_for_base_model(gemma_tok) -> None:  # type: ignore[no-untyped-def]
    conv = format_conversation(gemma_tok, CONV)
    assert conv.format == "plain"
    assert conv.text == (
        "<bos>Be a pirate.\n\nUser: Hi there\n\nAssistant: Arr, matey!\n\n"
        "User: Who are you?\n\nAssistant: Captain Flint."
    )
    # SentencePiece attaches the space after "Assistant:" to the first content token.
    assert spans(conv) == [
        ("system", 1, 5),
        ("user", 8, 10),
        ("assistant", 13, 18),
        ("user", 21, 25),
        ("assistant", 28, 31),
    ]
    assert decoded(gemma_tok, conv) == CONTENTS
    prompt = format_conversation(gemma_tok, CONV[:4], add_generation_prompt=True)
    assert prompt.text.endswith("User: Who are you?\n\nAssistant:")


def test_empty_conversation_and_bad_roles_are_one_line_errors(smol_tok) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PersonaspaceError, match="conversation is empty"):
        format_conversation(smol_tok, [])
    with pytest.raises(PersonaspaceError, match="unknown role 'tool'"):
        format_conversation(smol_tok, [{"role": "tool", "content": "x"}])
    with pytest.raises(PersonaspaceError, match="where a user turn belongs"):
        format_conversation(smol_tok, [{"role": "assistant", "content": "x"}])
    with pytest.raises(PersonaspaceError, match="end with a user message"):
        format_conversation(smol_tok, CONV, add_generation_prompt=True)


def test_template_that_rewrites_content_is_refused(smol_tok) -> None:  # type: ignore[no-untyped-def]
    tok = load_tokenizer("smollm2-135m-instruct")
    tok.chat_template = "{% for m in messages %}{{ m['content'] | upper }}\n{% endfor %}"
    with pytest.raises(PersonaspaceError, match="changes message contents"):
        format_conversation(tok, [{"role": "user", "content": "hi"}])
