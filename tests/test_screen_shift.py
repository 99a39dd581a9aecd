"""Training-data screening and the finetuning shift on tiny random models, checked against
projections computed by hand from a plain ``output_hidden_states`` forward.

Convention: ``hidden_states[L + 1]`` of a Hugging Face forward is the output of decoder
block ``L`` (``hidden_states[0]`` is the embeddings); the last entry has the final norm
applied, so the hand checks use blocks before the last one.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_lm
from pipeline_fixtures import make_tiny_model
from scipy import stats

from personaspace.analysis.intervals import random_units
from personaspace.capture import SamplingConfig, generate
from personaspace.catalogue import load_catalogue
from personaspace.cli.main import main
from personaspace.conversation import format_conversation
from personaspace.conversation.prompts import format_prompt
from personaspace.errors import PersonaspaceError
from personaspace.fileformat import save_vectors
from personaspace.judge.base import RoleItem, TraitItem
from personaspace.models.loading import LoadedModel
from personaspace.runfolder.paths import NamedVector
from personaspace.training.dataset import ChatExample, read_chat_dataset
from personaspace.training.screen import OWN_SAMPLING, screen_dataset, write_screen
from personaspace.training.shift import finetuning_shift, write_shift

CHATS = [
    [("user", "Hi there"), ("assistant", "Hello, friend!")],
    [("user", "What is 2+2?"), ("assistant", "It is 4, obviously.")],
    [
        ("system", "Be terse."),
        ("user", "Name a colour"),
        ("assistant", "Blue"),
        ("user", "Another one"),
        ("assistant", "Red, and leave me alone."),
    ],
    [("user", "Tell me a joke"), ("assistant", "No. Go away.")],
]
QUESTIONS = ["How was your day?", "What should I cook tonight?", "Why is the sky blue?"]


def examples() -> list[ChatExample]:
    from personaspace.conversation.messages import as_messages

    return [
        ChatExample(as_messages([{"role": r, "content": c} for r, c in chat]), f"d.jsonl:{i + 1}")
        for i, chat in enumerate(CHATS)
    ]


def vector_for(lm: LoadedModel, name: str = "evil", seed: int = 7) -> NamedVector:
    g = torch.Generator().manual_seed(seed)
    n, hidden = lm.adapter.n_layers, lm.adapter.hidden_size
    vectors = torch.randn(n, hidden, generator=g)
    return NamedVector("runs/tiny", name, lm.model_id, list(range(n)), vectors, 1, None)


def hidden_at(lm: LoadedModel, ids: list[int], layer: int) -> torch.Tensor:
    """The output of decoder block ``layer`` for every token, float64, by a plain forward."""
    with torch.no_grad():
        out = lm.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[layer + 1][0].double()


def unit64(v: torch.Tensor) -> torch.Tensor:
    return v.double() / v.double().norm()


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return tiny_lm("llama", 0)


@pytest.fixture(scope="module")
def screened(lm: LoadedModel):  # type: ignore[no-untyped-def]
    return screen_dataset(
        lm, examples(), vector_for(lm), layer=1, seed=3, max_new_tokens=6, n_random=64,
        batch_size=3,
    )  # fmt: skip


def test_dataset_and_last_prompt_projections_match_a_plain_forward(lm, screened) -> None:  # type: ignore[no-untyped-def]
    u = unit64(vector_for(lm).at(1))
    for sample, example in zip(sorted(screened.samples, key=lambda s: s.index), examples()):
        conv = format_conversation(lm.tokenizer, example.messages, use_chat_template=True)
        span = conv.spans_of("assistant")[-1]
        states = hidden_at(lm, conv.input_ids, 1)
        assert sample.dataset_projection == pytest.approx(
            float(states[span.start : span.end].mean(0) @ u), abs=1e-5
        )
        assert sample.last_prompt_projection == pytest.approx(
            float(states[span.start - 1] @ u), abs=1e-5
        )
        assert sample.dataset_reply == example.messages[-1].content
        assert sample.source == example.source


def test_own_reply_projection_matches_teacher_forcing_its_tokens(lm, screened) -> None:  # type: ignore[no-untyped-def]
    u = unit64(vector_for(lm).at(1))
    config = SamplingConfig(
        max_new_tokens=6, temperature=OWN_SAMPLING.temperature, top_p=OWN_SAMPLING.top_p
    )
    checked = 0
    for sample in screened.samples:
        head = examples()[sample.index].messages[:-1]
        prompt = format_conversation(lm.tokenizer, head, add_generation_prompt=True)
        [again] = generate(lm, [prompt], config, seeds=[sample.own_seed], reductions=())
        assert again.text == sample.own_reply  # the seed alone fixes the reply
        if not again.token_ids:
            assert sample.own_projection is None
            continue
        states = hidden_at(lm, prompt.input_ids + again.token_ids, 1)
        own = float(states[len(prompt.input_ids) :].mean(0) @ u)
        assert sample.own_projection == pytest.approx(own, abs=1e-5)
        assert sample.projection_difference == pytest.approx(
            sample.dataset_projection - own, abs=1e-5
        )
        checked += 1
    assert checked >= 2
    diffs = [s.projection_difference for s in screened.samples if s.projection_difference]
    assert screened.projection_difference.mean == pytest.approx(float(np.mean(diffs)), abs=1e-9)


def test_random_direction_null_is_seeded_and_computed_as_stated(lm, screened) -> None:  # type: ignore[no-untyped-def]
    again = screen_dataset(
        lm, examples(), vector_for(lm), layer=1, seed=3, max_new_tokens=6, n_random=64,
        batch_size=3,
    )  # fmt: skip
    assert again.null == screened.null  # same seed: the same figures, bit for bit
    assert again.projection_difference == screened.projection_difference
    # by hand: the mean difference state along 64 seeded random unit directions
    u = unit64(vector_for(lm).at(1))
    rows = []
    for sample in screened.samples:
        example = examples()[sample.index]
        conv = format_conversation(lm.tokenizer, example.messages, use_chat_template=True)
        span = conv.spans_of("assistant")[-1]
        dataset = hidden_at(lm, conv.input_ids, 1)[span.start : span.end].mean(0)
        prompt = format_conversation(
            lm.tokenizer, example.messages[:-1], add_generation_prompt=True
        )
        config = SamplingConfig(max_new_tokens=6, temperature=0.7, top_p=0.9)
        [g] = generate(lm, [prompt], config, seeds=[sample.own_seed], reductions=())
        if g.token_ids:
            own = hidden_at(lm, prompt.input_ids + g.token_ids, 1)[len(prompt.input_ids) :]
            rows.append(dataset - own.mean(0))
    mean = torch.stack(rows).mean(0)
    randoms = (random_units(64, lm.adapter.hidden_size, 3) @ mean).numpy()
    observed = float(mean @ u)
    assert screened.null is not None
    assert screened.null.observed == pytest.approx(observed, abs=1e-5)
    expected = stats.percentileofscore(np.abs(randoms), abs(observed), kind="strict")
    assert screened.null.percentile == pytest.approx(expected)
    assert screened.null.random_low == pytest.approx(np.quantile(randoms, 0.025), abs=1e-5)
    unbatched = screen_dataset(
        lm, examples(), vector_for(lm), layer=1, seed=3, max_new_tokens=6, n_random=64,
        batch_size=1,
    )  # fmt: skip
    assert unbatched.null is not None  # padding changes the last float digits only
    assert unbatched.null.observed == pytest.approx(screened.null.observed, abs=1e-6)
    other = screen_dataset(
        lm, examples(), vector_for(lm), layer=1, seed=4, max_new_tokens=6, n_random=64,
        batch_size=3,
    )  # fmt: skip
    assert other.null != screened.null


def test_no_generate_ranks_by_dataset_projection(lm, screened) -> None:  # type: ignore[no-untyped-def]
    plain = screen_dataset(lm, examples(), vector_for(lm), layer=1, generate_own=False)
    assert plain.projection_difference is None and plain.null is None
    assert [s.own_projection for s in plain.samples] == [None] * len(CHATS)
    for a, b in zip(plain.samples, screened.samples):
        assert a.dataset_projection == pytest.approx(b.dataset_projection, abs=1e-6)
    values = [s.dataset_projection for s in plain.ranked()]
    assert values == sorted(values, reverse=True)
    assert plain.layer == 1


def test_writers(screened, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    paths = write_screen(screened, tmp_path / "out")
    data = json.loads(paths[0].read_text())
    assert data["n_samples"] == len(CHATS) and data["layer"] == 1
    assert data["null"]["n_directions"] == 64
    lines = paths[1].read_text().splitlines()
    assert len(lines) == 1 + len(CHATS)
    assert {line.split(",")[1] for line in lines[1:]} == {f"d.jsonl:{i}" for i in (1, 2, 3, 4)}
    assert paths[2].read_bytes()[:4] == b"\x89PNG"


def test_screen_refuses_a_vector_of_another_model_and_a_bad_layer(lm) -> None:  # type: ignore[no-untyped-def]
    small = NamedVector("runs/x", "evil", "m", [0, 1, 2], torch.ones(3, 16), 1, None)
    with pytest.raises(PersonaspaceError, match="hidden size 16"):
        screen_dataset(lm, examples(), small)
    with pytest.raises(PersonaspaceError, match="out of range"):
        screen_dataset(lm, examples(), vector_for(lm), layer=5)


# the finetuning shift ---------------------------------------------------------------------
def perturbed(lm: LoadedModel, scale: float = 0.05) -> LoadedModel:
    model = copy.deepcopy(lm.model)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in model.model.layers[0].mlp.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return LoadedModel(model, lm.tokenizer, lm.adapter, "tiny-tuned", "Tuned", True)


def test_shift_of_a_model_against_itself_is_exactly_zero(lm) -> None:  # type: ignore[no-untyped-def]
    result = finetuning_shift(lm, lm, QUESTIONS, [vector_for(lm)], n_random=32)
    assert result.layers == [0, 1, 2]
    for row in result.vectors[0].layers:
        assert row.shift.mean == 0.0 and row.shift.low == 0.0 and row.shift.high == 0.0
        assert row.null.observed == 0.0 and row.null.percentile == 0.0


def test_shift_equals_the_hand_computed_mean_last_prompt_difference(lm) -> None:  # type: ignore[no-untyped-def]
    tuned = perturbed(lm)
    vectors = [vector_for(lm, "evil", 7), vector_for(lm, "axis", 8)]
    result = finetuning_shift(lm, tuned, QUESTIONS, vectors, layers=[0, 1], n_random=32)
    for layer in (0, 1):
        diffs = []
        for q in QUESTIONS:
            ids = format_prompt(lm, q).input_ids
            diffs.append(hidden_at(tuned, ids, layer)[-1] - hidden_at(lm, ids, layer)[-1])
        mean = torch.stack(diffs).mean(0)
        for vector, shift in zip(vectors, result.vectors):
            expected = float(mean @ unit64(vector.at(layer)))
            assert shift.at(layer).shift.mean == pytest.approx(expected, abs=1e-5)
            assert shift.at(layer).mean_difference_norm == pytest.approx(float(mean.norm()), 1e-4)
            assert shift.at(layer).shift.n == len(QUESTIONS)
    assert result.vectors[0].at(1).shift.mean != 0.0
    again = finetuning_shift(lm, tuned, QUESTIONS, vectors, layers=[0, 1], n_random=32)
    assert again.vectors[0].at(1).null == result.vectors[0].at(1).null


def test_shift_refusals(lm) -> None:  # type: ignore[no-untyped-def]
    gpt2 = tiny_lm("gpt2", 0)  # the same depth and width, another architecture
    with pytest.raises(PersonaspaceError, match="tiny-gpt2 is a gpt2 model"):
        finetuning_shift(lm, gpt2, QUESTIONS, [vector_for(lm)])
    small = NamedVector("runs/x", "evil", "m", [0, 1, 2], torch.ones(3, 16), 1, None)
    with pytest.raises(PersonaspaceError, match="hidden size 16"):
        finetuning_shift(lm, lm, QUESTIONS, [small])
    with pytest.raises(PersonaspaceError, match="no trait 'zzz'"):
        finetuning_shift(lm, lm, None, [vector_for(lm, "zzz")])
    with pytest.raises(PersonaspaceError, match="out of range"):
        finetuning_shift(lm, lm, QUESTIONS, [vector_for(lm)], layers=[7])


class LengthJudge:
    """Scores a reply by its length: deterministic, offline."""

    name = "length"

    def check(self) -> None:
        return None

    def score_roles(self, items: list[RoleItem]) -> list[int | None]:
        return [None] * len(items)

    def score_traits(self, items: list[TraitItem]) -> list[float | None]:
        return [float(min(len(i.answer), 100)) for i in items]


def test_judged_expression_of_a_model_against_itself_does_not_change(lm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = finetuning_shift(
        lm, lm, QUESTIONS, [vector_for(lm)], judge=LengthJudge(), max_new_tokens=5, n_random=16
    )
    [expression] = result.expression
    assert expression.trait == "evil"
    assert expression.before == expression.after and expression.change.mean == 0.0
    assert [r["base"] for r in result.replies] == [r["tuned"] for r in result.replies]
    paths = write_shift(result, tmp_path)
    assert json.loads(paths[0].read_text())["judge"] == "length"
    assert len(paths[1].read_text().splitlines()) == 1 + 3
    assert paths[2].read_bytes()[:4] == b"\x89PNG"


def test_default_questions_are_the_traits_evaluation_questions(lm) -> None:  # type: ignore[no-untyped-def]
    from personaspace.training.shift import default_questions

    catalogue = load_catalogue()
    questions = default_questions([vector_for(lm, "evil")], catalogue)
    assert questions == list(catalogue.traits["evil"].evaluation_questions)
    axis = default_questions([vector_for(lm, "axis")], catalogue)
    assert len(axis) == 20 and axis == default_questions([vector_for(lm, "axis")], catalogue)


# the command line -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("screen_cli")
    model = make_tiny_model(root / "model", hidden=32, layers=3)
    other = make_tiny_model(root / "other", hidden=16, layers=3)
    save_vectors(root / "axis.safetensors", {"axis": torch.randn(3, 32)}, {})
    save_vectors(root / "narrow.safetensors", {"axis": torch.randn(3, 16)}, {})
    good = root / "data.jsonl"
    good.write_text(
        "".join(
            json.dumps({"messages": [{"role": r, "content": c} for r, c in chat]}) + "\n"
            for chat in CHATS
        )
    )
    return {"root": root, "model": model, "other": other, "data": good}


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "case, message",
    [
        ("not_json", "data.jsonl:2 is not JSON"),
        ("no_assistant", "data.jsonl:1 has no assistant turn"),
        ("other_model", "hidden size 16"),
        ("bad_layer", "--layer 9 is out of range"),
        ("unknown_trait", "has no trait vector 'evil'"),
    ],
)
def test_screen_bad_input_exits_2_with_one_line(cli_files, tmp_path, capsys, case, message) -> None:  # type: ignore[no-untyped-def]
    root, data = cli_files["root"], cli_files["data"]
    vector, extra = str(root / "axis.safetensors"), []
    if case == "not_json":
        data = tmp_path / "data.jsonl"
        data.write_text(cli_files["data"].read_text().splitlines()[0] + "\n{oops\n")
    elif case == "no_assistant":
        data = tmp_path / "data.jsonl"
        data.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"}]}) + "\n")
    elif case == "other_model":
        vector = str(root / "narrow.safetensors")
    elif case == "bad_layer":
        extra = ["--layer", "9"]
    elif case == "unknown_trait":
        vector += ":evil"
    out = tmp_path / "out"
    args = ["screen", str(data), "--vector", vector, "--model", str(cli_files["model"])]
    code = main([*args, "--out", str(out), "--device", "cpu", *extra])
    err = _lines(capsys.readouterr().err)
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


@pytest.mark.parametrize(
    "case, message",
    [
        ("other_model", "hidden size 16"),
        ("other_shape", "compare a model with a finetune"),
        ("unknown_trait", "has no trait vector 'evil'"),
        ("bad_layers", "out of range"),
    ],
)
def test_shift_bad_input_exits_2_with_one_line(cli_files, tmp_path, capsys, case, message) -> None:  # type: ignore[no-untyped-def]
    root = cli_files["root"]
    base, tuned = str(cli_files["model"]), str(cli_files["model"])
    vector, extra = str(root / "axis.safetensors"), ["--questions", str(tmp_path / "q.txt")]
    (tmp_path / "q.txt").write_text("\n".join(QUESTIONS))
    if case == "other_model":
        vector = str(root / "narrow.safetensors")
    elif case == "other_shape":
        tuned = str(cli_files["other"])
    elif case == "unknown_trait":
        vector += ":evil"
    elif case == "bad_layers":
        extra += ["--layers", "0,5"]
    out = tmp_path / "out"
    code = main(["shift", base, tuned, "--vectors", vector, "--out", str(out), *extra])
    err = _lines(capsys.readouterr().err)
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_screen_and_shift_commands_write_their_files(cli_files, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    root, model = cli_files["root"], str(cli_files["model"])
    vector = str(root / "axis.safetensors")
    args = ["screen", str(cli_files["data"]), "--vector", vector, "--model", model]
    assert main([*args, "--out", str(tmp_path / "s"), "--max-new-tokens", "4", "--top", "2"]) == 0
    printed = capsys.readouterr().out
    assert "projection difference" in printed and "random directions" in printed
    assert len(read_chat_dataset(cli_files["data"])) == len(CHATS)
    assert {p.name for p in (tmp_path / "s").iterdir()} == {
        "screen.json",
        "screen.csv",
        "screen.png",
    }
    (tmp_path / "q.txt").write_text("\n".join(QUESTIONS))
    shift = ["shift", model, model, "--vectors", vector, "--questions", str(tmp_path / "q.txt")]
    assert main([*shift, "--out", str(tmp_path / "h")]) == 0
    data = json.loads((tmp_path / "h" / "shift.json").read_text())
    assert all(row["shift"]["mean"] == 0.0 for row in data["vectors"][0]["layers"])
