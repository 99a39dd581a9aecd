"""Trait datasets and datasets from transcripts: the plan, the keep rule, the card, the files
and ``personaspace data`` (tiny random models, a judge with fixed scores)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_lm

from personaspace.capture.generate import Generation
from personaspace.catalogue import Trait, TraitPair, load_catalogue
from personaspace.cli.main import main
from personaspace.errors import PersonaspaceError
from personaspace.judge.base import RoleItem, TraitItem
from personaspace.training import trait_data
from personaspace.training.dataset import read_chat_dataset
from personaspace.training.trait_data import (
    DROP_REASONS,
    MILD_TEMPLATE,
    card_path,
    coherence,
    make_trait_dataset,
    plan_trait_items,
    trait_questions,
    write_dataset,
)

TRAIT = Trait(
    "tester",
    "moral",
    "a trait for tests",
    (TraitPair("Be very A.", "Never be A."), TraitPair("Be very B.", "Never be B.")),
    ("First question?", "Second question?", "Third question?"),
    ("A held-out question?", "Another held-out one?"),
    "",
)
GOOD = "This reply reads like an ordinary answer with enough words in it."
LOOP = "again and again and again and again and again and again"


class FixedJudge:
    """Scores each question's replies from a table, in the order they arrive."""

    name = "fixed"

    def __init__(self, scores: dict[str, list[float | None]]) -> None:
        self.scores = {q: list(v) for q, v in scores.items()}
        self.items: list[TraitItem] = []
        self.checked = False

    def check(self) -> None:
        self.checked = True

    def score_roles(self, items: list[RoleItem]) -> list[int | None]:
        return [None] * len(items)

    def score_traits(self, items: list[TraitItem]) -> list[float | None]:
        self.items += items
        return [self.scores[it.question].pop(0) for it in items]


class ScriptedGenerate:
    """Stands in for the engine: replies from a table, prompts recorded."""

    def __init__(self, replies: dict[str, list[str]]) -> None:
        self.replies = {q: list(v) for q, v in replies.items()}
        self.prompts: list[str] = []
        self.seeds: list[int] = []

    def __call__(
        self,
        lm: Any,
        prompts: Sequence[Any],
        config: Any,
        *,
        reductions: Sequence[str],
        batch_size: int | None,
        seeds: Sequence[int],
        on_batch: Any,
    ) -> list[Generation]:
        assert reductions == ()
        out = []
        for prompt in prompts:
            self.prompts.append(prompt.text)
            question = prompt.messages[-1].content
            out.append(Generation([1], [2], self.replies[question].pop(0), "stop", []))
        self.seeds += list(seeds)
        on_batch(len(prompts))
        return out


@pytest.fixture(scope="module")
def lm() -> Any:
    return tiny_lm("llama")


def test_plan_asks_the_extraction_questions_with_distinct_seeds_and_cycles_pairs() -> None:
    plan = plan_trait_items(TRAIT, "strong", samples_per_question=2, seed=3)
    assert [p.question for p in plan] == [q for q in TRAIT.extraction_questions for _ in (0, 1)]
    assert [p.pair for p in plan] == [0, 1, 0, 1, 0, 1]
    assert [p.system for p in plan] == [TRAIT.pairs[i % 2].pos for i in range(6)]
    assert len({p.seed for p in plan}) == 6
    normal = plan_trait_items(TRAIT, "normal", samples_per_question=2, seed=3)
    assert [p.seed for p in normal] == [p.seed for p in plan]  # levels share seeds
    assert {p.system for p in normal} == {None}
    assert plan_trait_items(TRAIT, "strong", samples_per_question=2, seed=4)[0].seed != plan[0].seed


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"level": "extreme"}, "level"),
        ({"samples_per_question": 0}, "samples_per_question"),
        ({"questions": ["First question?", "A held-out question?"]}, "questions"),
        ({"questions": []}, None),
    ],
)
def test_plan_refuses_bad_requests(kwargs: dict[str, Any], param: str | None) -> None:
    level = kwargs.pop("level", "strong")
    with pytest.raises(PersonaspaceError) as err:
        plan_trait_items(TRAIT, level, **kwargs)
    assert err.value.param == param


def test_catalogue_questions_are_added_but_never_evaluation_questions() -> None:
    catalogue = load_catalogue()
    evil = catalogue.traits["evil"]
    asked = trait_questions(evil, catalogue, extra=6)
    assert asked[:20] == list(evil.extraction_questions) and len(asked) == 26
    assert not set(asked) & set(evil.evaluation_questions)
    assert set(asked[20:]) <= {q.text for q in catalogue.questions.values()}


def _scripted(
    monkeypatch: pytest.MonkeyPatch, lm: Any, level: str, **kwargs: Any
) -> tuple[trait_data.TraitDataset, ScriptedGenerate, FixedJudge]:
    q1, q2, q3 = TRAIT.extraction_questions
    fake = ScriptedGenerate({q1: [GOOD, GOOD], q2: [GOOD, LOOP], q3: [GOOD, ""]})
    judge = FixedJudge({q1: [75.0, 55.0], q2: [30.0, 90.0], q3: [None, 80.0]})
    monkeypatch.setattr(trait_data, "generate", fake)
    data = make_trait_dataset(
        lm, TRAIT, level, judge=judge, samples_per_question=2, seed=1, **kwargs
    )
    return data, fake, judge


@pytest.mark.parametrize(
    ("level", "kwargs", "kept_scores", "dropped"),
    [
        ("strong", {}, [75.0], {"below_min_score": 2, "unscored": 1}),
        ("mild", {}, [75.0, 55.0], {"below_min_score": 1, "unscored": 1}),
        ("normal", {}, [30.0], {"above_max_score": 2, "unscored": 1}),
        (
            "strong",
            {"min_score": 50.0, "max_score": 70.0},
            [55.0],
            {"below_min_score": 1, "above_max_score": 1, "unscored": 1},
        ),
    ],
)
def test_keeps_exactly_the_level_scores_and_drops_incoherent_replies(
    monkeypatch: pytest.MonkeyPatch,
    lm: Any,
    level: str,
    kwargs: dict[str, Any],
    kept_scores: list[float],
    dropped: dict[str, int],
) -> None:
    data, _, judge = _scripted(monkeypatch, lm, level, **kwargs)
    assert judge.checked and len(judge.items) == 6
    assert [e.meta["trait_score"] for e in data.examples] == kept_scores
    # the loop and the empty reply are incoherent whatever their scores (90 and 80)
    expected = {reason: 0 for reason in DROP_REASONS} | dropped | {"incoherent": 2}
    assert data.card["dropped"] == expected
    card = data.card
    assert card["generated"] == 6 == card["kept"] + sum(card["dropped"].values())
    assert card["kept"] == len(data.examples) and len(data.dropped) == 6 - card["kept"]
    assert card["trait_score"]["all"]["n"] == 5 and card["trait_score"]["all"]["mean"] == 66.0
    assert card["trait_score"]["kept"]["mean"] == sum(kept_scores) / len(kept_scores)
    assert card["coherence"]["kept"]["n"] == card["kept"]


def test_the_system_prompt_is_asked_but_dropped_from_the_data(
    monkeypatch: pytest.MonkeyPatch, lm: Any, tmp_path: Path
) -> None:
    data, fake, _ = _scripted(monkeypatch, lm, "mild", min_coherence=0.0)
    wrapped = [MILD_TEMPLATE.format(instruction=TRAIT.pairs[i % 2].pos) for i in range(6)]
    assert all(w in p for w, p in zip(wrapped, fake.prompts))
    assert data.card["system_prompts"] == wrapped[:2]
    assert data.card["system_prompt_in_data"] is False
    path, card = write_dataset(tmp_path / "d.jsonl", data.examples, data.card)
    text = path.read_text()
    assert "system" not in text and "Be very" not in text
    for example in read_chat_dataset(path):
        assert [m.role for m in example.messages] == ["user", "assistant"]
        assert example.messages[0].content in TRAIT.extraction_questions
        assert {"question", "trait_score", "coherence", "level", "seed"} <= set(example.meta)
    assert card == card_path(path) == tmp_path / "d.card.json"
    assert json.loads(card.read_text())["kept"] == len(data.examples)


def test_normal_level_asks_without_a_system_prompt(
    monkeypatch: pytest.MonkeyPatch, lm: Any
) -> None:
    data, fake, _ = _scripted(monkeypatch, lm, "normal")
    assert not any("system" in p for p in fake.prompts)
    assert data.card["system_prompts"] == []


def test_without_a_judge_only_coherence_filters(monkeypatch: pytest.MonkeyPatch, lm: Any) -> None:
    q1, q2, q3 = TRAIT.extraction_questions
    monkeypatch.setattr(
        trait_data, "generate", ScriptedGenerate({q1: [GOOD], q2: [LOOP], q3: [GOOD]})
    )
    data = make_trait_dataset(lm, TRAIT, "strong", judge=None, samples_per_question=1)
    assert [e.meta["question"] for e in data.examples] == [q1, q3]
    assert data.card["judge"] == "none" and data.card["keep_rule"]["scored"] is False
    assert data.card["dropped"]["incoherent"] == 1 and data.card["trait_score"]["all"]["n"] == 0


def test_coherence_measures_loops_and_length_not_truncation() -> None:
    assert coherence(GOOD) == 0.981  # 53 letters of 54 characters: the full stop
    assert coherence("This answer was cut off at the token limit in the middle of") == 1.0
    assert coherence(LOOP) == 0.222  # 2 distinct of 9 trigrams
    assert coherence("Yes, I can.") == 0.0  # fewer than MIN_WORDS words
    assert coherence("~~ ## a b c d e !! @@ ** $$") == 0.294  # 5 letters of 17 characters


def _run_tiny(lm: Any, seed: int, out: Path) -> bytes:
    judge = FixedJudge({q: [50.0] * 2 for q in TRAIT.extraction_questions})
    data = make_trait_dataset(
        lm,
        TRAIT,
        "mild",
        judge=judge,
        samples_per_question=2,
        seed=seed,
        max_new_tokens=8,
        min_coherence=0.0,
    )
    path, card = write_dataset(out, data.examples, data.card)
    return path.read_bytes() + card.read_bytes()


def test_same_seed_gives_byte_identical_files(lm: Any, tmp_path: Path) -> None:
    first = _run_tiny(lm, 0, tmp_path / "a.jsonl")
    assert first == _run_tiny(lm, 0, tmp_path / "b.jsonl")
    assert first != _run_tiny(lm, 1, tmp_path / "c.jsonl")
    examples = read_chat_dataset(tmp_path / "a.jsonl")
    assert len(examples) == 6 and len({e.messages[1].content for e in examples}) > 1


def _fake_model(monkeypatch: pytest.MonkeyPatch, lm: Any) -> list[str]:
    loaded: list[str] = []

    def load(spec: str, args: Any) -> Any:
        loaded.append(spec)
        return lm

    monkeypatch.setattr("personaspace.cli.data_cmd.load_model_as_asked", load)
    return loaded


def test_data_trait_cli_writes_dataset_and_card(
    monkeypatch: pytest.MonkeyPatch, lm: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded = _fake_model(monkeypatch, lm)
    judges: list[FixedJudge] = []

    def make_judge(kind: str, catalogue: Any, **_: Any) -> FixedJudge:
        evil = catalogue.traits["evil"]
        judges.append(FixedJudge({q: [10.0] for q in evil.extraction_questions}))
        return judges[-1]

    monkeypatch.setattr("personaspace.cli.data_cmd.make_judge", make_judge)
    out = tmp_path / "evil-normal.jsonl"
    args = ["data", "trait", "evil", "--level", "normal", "--out", str(out)]
    args += ["--samples-per-question", "1", "--max-new-tokens", "8", "--min-coherence", "0"]
    assert main(args) == 0
    assert loaded == ["smollm2-135m-instruct"] and judges[0].checked
    card = json.loads(card_path(out).read_text())
    assert (card["generated"], card["kept"], card["level"]) == (20, 20, "normal")
    assert card["licence"].startswith("data generated by tiny-llama inherits its terms")
    evil = load_catalogue().traits["evil"]
    asked = [e.messages[0].content for e in read_chat_dataset(out)]
    assert asked == list(evil.extraction_questions)
    assert "kept / generated" in capsys.readouterr().out
    assert main([*args, "--force"]) == 0  # a dataset we wrote may be replaced


TRANSCRIPT = [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "How are you?"},
    {"role": "assistant", "content": "Fine."},
]


def test_data_chat_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ours = tmp_path / "ours.json"
    ours.write_text(json.dumps({"messages": TRANSCRIPT, "model": "smollm2-135m-instruct"}))
    lists = tmp_path / "lists.jsonl"
    lists.write_text(
        json.dumps(TRANSCRIPT[1:3]) + "\n" + json.dumps({"conversation": TRANSCRIPT[1:4]}) + "\n"
    )
    out = tmp_path / "chat.jsonl"
    assert main(["data", "chat", str(ours), str(lists), "--out", str(out), "--drop-system"]) == 0
    examples = read_chat_dataset(out)
    assert [[m.content for m in e.messages] for e in examples] == [
        ["Hi", "Hello.", "How are you?", "Fine."],
        ["Hi", "Hello."],
        ["Hi", "Hello."],  # the trailing user turn is cut
    ]
    assert examples[0].meta == {"transcript": "ours", "model": "smollm2-135m-instruct"}
    card = json.loads(card_path(out).read_text())
    assert (card["transcripts"], card["examples"], card["assistant_turns"]) == (3, 3, 4)
    assert (card["system_prompts_dropped"], card["trailing_user_turns_dropped"]) == (1, 1)
    assert "Apache-2.0" in card["licence"]
    kept = tmp_path / "kept.jsonl"
    assert main(["data", "chat", str(ours), "--out", str(kept)]) == 0
    assert read_chat_dataset(kept)[0].messages[0].role == "system"
    assert "examples" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["trait", "evl", "--level", "strong"], "unknown trait 'evl' (did you mean evil?)"),
        (
            ["trait", "evil", "--level", "strong", "--samples-per-question", "0"],
            "--samples-per-question is 0",
        ),
        (
            ["trait", "evil", "--level", "strong", "--extra-questions", "-1"],
            "--extra-questions is -1",
        ),
        (["trait", "evil", "--level", "strong", "--min-score", "120"], "--min-score is 120"),
        (["trait", "evil", "--level", "normal", "--max-new-tokens", "0"], "--max-new-tokens is 0"),
        (["chat", "NOREPLY"], "has no assistant turns"),
    ],
)
def test_data_bad_input_exits_2_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch,
    lm: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    loaded = _fake_model(monkeypatch, lm)
    noreply = tmp_path / "noreply.json"
    noreply.write_text(json.dumps([{"role": "user", "content": "Hello?"}]))
    out = tmp_path / "d.jsonl"
    args = [str(noreply) if a == "NOREPLY" else a for a in extra]
    judge = ["--judge", "none"] if args[0] == "trait" else []
    assert main(["data", *args, *judge, "--out", str(out)]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("personaspace:")]
    assert len(errors) == 1 and message in errors[0], errors
    assert not loaded and list(tmp_path.iterdir()) == [noreply]


def test_data_refuses_to_overwrite(
    monkeypatch: pytest.MonkeyPatch, lm: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded = _fake_model(monkeypatch, lm)
    other = tmp_path / "notes.jsonl"
    other.write_text("not a dataset\n")
    base = ["data", "trait", "evil", "--level", "strong", "--judge", "none"]
    assert main([*base, "--out", str(other)]) == 2
    assert main([*base, "--out", str(other), "--force"]) == 2
    assert main([*base, "--out", str(tmp_path / "d.txt")]) == 2
    assert main(["data", "chat", str(other), "--out", str(other), "--force"]) == 2
    err = capsys.readouterr().err
    assert f"{other} exists: pass --force" in err
    assert "is not a chat dataset" in err and "does not end in .jsonl" in err
    assert "is one of the inputs" in err
    assert other.read_text() == "not a dataset\n" and not loaded
    with pytest.raises(SystemExit) as exit_:
        main([*base[:4], "extreme", "--out", str(tmp_path / "x.jsonl")])
    assert exit_.value.code == 2 and sorted(tmp_path.iterdir()) == [other]
