"""Persona consistency: the three measures, the judges, the drift comparison and the command."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import tiny_lm
from pipeline_fixtures import make_tiny_model

from personaspace.catalogue import load_catalogue
from personaspace.cli.main import main
from personaspace.conversation.messages import Message
from personaspace.errors import PersonaspaceError
from personaspace.experiments.consistency import (
    asked_turns,
    line_pairs,
    qa_prompts,
    score_consistency,
)
from personaspace.experiments.consistency_drift import (
    consistency_by_condition,
    consistency_of_runs,
    paired_test,
    read_drift_transcripts,
)
from personaspace.judge.consistency import ConsistencyItem, make_consistency_judge
from personaspace.judge.consistency_agreement import agreement, judge_lines, read_consistency_labels
from personaspace.judge.consistency_local import LocalConsistencyJudge, claim_conflict, claims
from personaspace.judge.consistency_openai import OpenAIConsistencyJudge, parse_verdict
from personaspace.judge.personas import (
    PERSONA_QUESTIONS,
    assistant_persona,
    resolve_persona,
)
from personaspace.monitor.transcripts import Transcript, parse_transcript

LABELS = Path(__file__).parent / "data" / "consistency_labels.jsonl"
PERSONA = assistant_persona()


@dataclass
class StubJudge:
    """Contradiction scores looked up by (reference, line); 0.0 otherwise. Records its items."""

    table: dict[tuple[str, str], float | None]
    name: str = "stub"
    seen: list[ConsistencyItem] = field(default_factory=list)

    def check(self) -> None:
        return None

    def contradictions(self, items: list[ConsistencyItem]) -> list[float | None]:
        self.seen += items
        return [self.table.get((it.reference, it.line), 0.0) for it in items]


def chat(*replies: str, name: str = "c", **meta: object) -> Transcript:
    messages = []
    for i, reply in enumerate(replies):
        messages += [
            {"role": "user", "content": f"question {i + 1}"},
            {"role": "assistant", "content": reply},
        ]
    return parse_transcript({"messages": messages, **meta}, f"{name}.json", name)


# --- the measures -------------------------------------------------------------------------


def test_line_pairs_are_every_earlier_line_once() -> None:
    assert line_pairs(0) == [] and line_pairs(1) == []
    assert line_pairs(3) == [(0, 1), (0, 2), (1, 2)]
    pairs = line_pairs(7)
    assert len(pairs) == 21 and len(set(pairs)) == 21 and all(i < t for i, t in pairs)


def test_the_judge_sees_exactly_the_pairs_of_each_measure() -> None:
    judge = StubJudge({})
    score_consistency([chat("a", "b", "c")], PERSONA, judge)
    got = [(it.reference, it.line, it.context) for it in judge.seen]
    s = PERSONA.statement
    assert got == [
        (s, "a", "question 1"),
        (s, "b", "question 2"),
        (s, "c", "question 3"),
        ("a", "b", "question 2"),
        ("a", "c", "question 3"),
        ("b", "c", "question 3"),
    ]


def test_per_turn_and_per_conversation_scores_from_known_verdicts() -> None:
    s = PERSONA.statement
    judge = StubJudge({(s, "b"): 0.9, ("a", "c"): 0.7, ("a", "d"): 0.6, ("c", "d"): 0.55})
    [conv] = score_consistency([chat("a", "b", "c", "d")], PERSONA, judge).conversations
    assert [t.prompt_to_line for t in conv.turns] == [1.0, 0.0, 1.0, 1.0]
    assert [t.conflicts for t in conv.turns] == [0, 0, 1, 2]
    assert [t.judged_pairs for t in conv.turns] == [0, 1, 2, 3]
    assert [t.line_to_line for t in conv.turns] == [None, 1.0, 0.5, pytest.approx(1 / 3)]
    assert conv.mean("prompt_to_line") == 0.75
    assert conv.mean("line_to_line") == pytest.approx((1.0 + 0.5 + 1 / 3) / 3)
    assert conv.mean("qa") is None


def test_missing_scores_are_left_out_not_counted() -> None:
    s = PERSONA.statement
    judge = StubJudge({(s, "b"): None, ("a", "c"): None, ("b", "c"): 1.0})
    [conv] = score_consistency([chat("a", "b", "c")], PERSONA, judge).conversations
    assert [t.prompt_to_line for t in conv.turns] == [1.0, None, 1.0]
    assert [t.judged_pairs for t in conv.turns] == [0, 1, 1]
    assert [t.line_to_line for t in conv.turns] == [None, 1.0, 0.0]
    assert conv.mean("prompt_to_line") == 1.0 and conv.mean("line_to_line") == 0.5


def test_qa_answers_are_graded_against_the_expected_answer() -> None:
    questions = PERSONA_QUESTIONS[:2]
    body = questions[1].expected(PERSONA)
    judge = StubJudge({(body, "yes, two legs"): 1.0})
    answers: list[list[list[str | None]]] = [[["an AI", "no body"], ["an AI", "yes, two legs"]]]
    report = score_consistency(
        [chat("a", "b")], PERSONA, judge, answers=answers, questions=questions, qa_model="m"
    )
    [conv] = report.conversations
    assert [t.qa for t in conv.turns] == [1.0, 0.5]
    assert conv.mean("qa") == 0.75
    assert [a.contradicts for a in conv.turns[1].answers] == [False, True]
    qa_items = [it for it in judge.seen if it.context in {q.text for q in questions}]
    assert [it.reference for it in qa_items[:2]] == [q.expected(PERSONA) for q in questions]
    assert report.to_json()["qa_model"] == "m"
    # questions not asked after a turn (None) are not sent to the judge
    judge = StubJudge({})
    asked_once: list[list[list[str | None]]] = [[[None, None], ["an AI", "no body"]]]
    report = score_consistency(
        [chat("a", "b")], PERSONA, judge, answers=asked_once, questions=questions
    )
    assert [t.qa for t in report.conversations[0].turns] == [None, 1.0]
    assert len(judge.seen) == 2 + 1 + 2


def test_a_role_is_held_to_its_own_statement() -> None:
    druid = resolve_persona("druid", load_catalogue())
    assert druid.statement.startswith("I am a Celtic")
    assert "human being" in druid.statement
    assert all(q.expected(druid) == druid.statement for q in PERSONA_QUESTIONS)
    with pytest.raises(PersonaspaceError, match="unknown role 'wizardly_toaster'"):
        resolve_persona("wizardly_toaster", load_catalogue())


def test_qa_prompts_hold_the_conversation_up_to_each_turn() -> None:
    lm = tiny_lm()
    t = chat("first reply", "second reply")
    prompts = qa_prompts(lm, t, PERSONA_QUESTIONS[:2])
    assert [(turn, q.id) for turn, q, _ in prompts] == [
        (0, "what"),
        (0, "body"),
        (1, "what"),
        (1, "body"),
    ]
    first = lm.tokenizer.decode(prompts[1][2].input_ids)
    assert "first reply" in first and "second reply" not in first
    assert first.rstrip().endswith("assistant") and "Do you have a body?" in first
    last = qa_prompts(lm, t, PERSONA_QUESTIONS[:1], turns=[-1])
    assert [turn for turn, _, _ in last] == [1]
    assert "second reply" in lm.tokenizer.decode(last[0][2].input_ids)
    assert asked_turns(5, [1, -1, 9]) == [0, 4] and asked_turns(3, None) == [0, 1, 2]


def test_transcripts_without_user_turns_are_refused() -> None:
    t = Transcript([Message("assistant", "Hello")], "x", "x.json", "openai")
    with pytest.raises(PersonaspaceError, match="x.json has no user turns"):
        score_consistency([t], PERSONA, StubJudge({}))


# --- the local judge ----------------------------------------------------------------------


def test_claims_read_assertions_denials_and_implications() -> None:
    # artificial implies not born; engineered implies artificial (and so on)
    assert claims("I am not a human. I am a program that predicts text.") == {
        "human": -1,
        "artificial": 1,
        "born": -1,
    }
    assert claims("I was built by a team of engineers.") == {
        "engineered": 1,
        "artificial": 1,
        "human": -1,
        "born": -1,
    }
    assert claims("I'm a real person, not a bot.")["artificial"] == -1
    assert claims("When I was a kid my grandmother cooked.") == {"born": 1}
    assert claims("I don't have feelings.") == {"feelings": -1}
    assert claims("Sure, here is the code.") == {}


def test_claim_conflicts_and_values() -> None:
    assert claim_conflict(PERSONA.statement, "I grew up in Ohio.")
    assert not claim_conflict(PERSONA.statement, "I have no physical body.")
    assert claim_conflict("My name is Sam.", "My name is Ava.")
    assert not claim_conflict("My name is Sam.", "my name is sam, hi")
    judge = LocalConsistencyJudge(negation=False)
    scores = judge.contradictions(
        [ConsistencyItem(PERSONA.statement, "I was born in 1990."), ConsistencyItem("x", "")]
    )
    assert scores == [1.0, None]


def test_negated_near_repeats_use_the_embeddings() -> None:
    judge = LocalConsistencyJudge()
    items = [
        ConsistencyItem("Python lists are mutable.", "Python lists are not mutable."),
        ConsistencyItem("Python lists are mutable.", "Tuples are a different story."),
    ]
    assert judge.contradictions(items) == [1.0, 0.0]


def test_openai_judge_parses_yes_and_no_and_fails_fast_offline() -> None:
    assert [parse_verdict(x) for x in ("Yes", "no.", "", None, "unsure")] == [
        1.0,
        0.0,
        None,
        None,
        None,
    ]
    judge = OpenAIConsistencyJudge(model="m", base_url="http://127.0.0.1:9", api_key=None)
    with pytest.raises(PersonaspaceError, match="unreachable"):
        judge.check()
    with pytest.raises(PersonaspaceError, match="unknown consistency judge"):
        make_consistency_judge("oracle")


# --- labels and agreement -----------------------------------------------------------------


def test_the_label_set_reads_and_has_both_labels() -> None:
    lines = read_consistency_labels(LABELS, load_catalogue())
    rows = [json.loads(x) for x in LABELS.read_text().splitlines()]
    assert len(lines) >= 80 and len({r["id"] for r in rows}) == len(rows)
    assert {r["measure"] for r in rows} == {"prompt_to_line", "line_to_line", "qa"}
    assert 0.3 < sum(line.contradicts for line in lines) / len(lines) < 0.7
    assert all(r["reason"].strip() for r in rows)
    assert all(len(line.pairs) == len(r["earlier"]) for line, r in zip(lines, rows) if r["earlier"])


def test_agreement_and_line_scores_are_exact() -> None:
    a = agreement([True, True, False, False, True], [True, False, False, False, True])
    assert (a.accuracy, a.majority_accuracy, a.positives) == (0.8, 0.6, 2)
    # observed agreement 0.8, chance (3*2 + 2*3) / 25 = 0.48: kappa = 0.32 / 0.52
    assert a.kappa == pytest.approx(0.32 / 0.52)
    lines = read_consistency_labels(LABELS, load_catalogue())[:3]
    assert judge_lines(StubJudge({}), lines) == [0.0, 0.0, 0.0]


# --- drift: paired tests ------------------------------------------------------------------


def test_paired_tests_give_the_hand_computed_p() -> None:
    # |ranks| 1..4, W- = 1: 2 of the 16 sign patterns have W- <= 1, two-sided 4/16.
    # Sign flips: |sum| >= 8 for 4 of the 16 patterns.
    t = paired_test([4.0, -1.0, 2.0, 3.0])
    assert (t.n, t.mean_difference, t.n_better, t.n_worse) == (4, 2.0, 3, 1)
    assert t.p_wilcoxon == pytest.approx(0.25) and t.p_signflip == pytest.approx(0.25)
    five = paired_test([0.1, 0.2, 0.3, 0.4, 0.5])  # all positive: 2 / 32
    assert five.p_wilcoxon == pytest.approx(0.0625) and five.p_signflip == pytest.approx(0.0625)
    assert paired_test([0.0, 0.0]).p_wilcoxon == 1.0
    assert paired_test([]).p_wilcoxon is None


def write_drift(root: Path) -> Path:
    replies = {
        "none": {"s1": ("I am an AI.", "I grew up in Ohio."), "s2": ("Hi.", "My body aches.")},
        "layers_1:2-p25": {"s1": ("I am an AI.", "Sure."), "s2": ("Hi.", "Here you go.")},
    }
    for condition, scenarios in replies.items():
        folder = root / "transcripts" / condition.replace(":", "-")
        folder.mkdir(parents=True)
        for scenario, lines in scenarios.items():
            t = chat(*lines, name=scenario)
            data = {**t.to_json(), "condition": condition, "scenario": scenario}
            data["domain"] = "therapy"
            (folder / f"{scenario}.json").write_text(json.dumps(data))
    return root


def test_drift_folders_are_scored_per_condition_and_paired(tmp_path: Path) -> None:
    root = write_drift(tmp_path / "drift")
    runs = read_drift_transcripts(root)
    assert list(runs) == ["none", "layers_1:2-p25"]
    judge = LocalConsistencyJudge(negation=False)
    summary = consistency_by_condition(root, PERSONA, judge).summary()
    assert summary["none"]["prompt_to_line"]["mean"] == 0.5
    capped = summary["layers_1:2-p25"]["prompt_to_line"]
    assert capped["mean"] == 1.0
    test = capped["versus_baseline"]["all"]
    assert (test["n"], test["mean_difference"], test["n_better"]) == (2, 0.5, 2)
    assert test["p_wilcoxon"] == pytest.approx(0.5) and test["p_signflip"] == pytest.approx(0.5)
    records = {
        name: [json.loads(Path(t.source).read_text()) for t in ts] for name, ts in runs.items()
    }
    assert consistency_of_runs(records, PERSONA, judge).summary() == summary
    with pytest.raises(PersonaspaceError, match="no drift transcripts"):
        read_drift_transcripts(tmp_path)


# --- the command --------------------------------------------------------------------------


def test_command_writes_json_csv_and_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(chat("I am an AI assistant.", "I was born in Paris.").to_json()))
    model = make_tiny_model(tmp_path / "model")
    out = tmp_path / "out"
    args = ["consistency", str(path), "--out", str(out), "--model", str(model), "--device", "cpu"]
    args += ["--questions", "what,body", "--qa-turns", "-1"]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "consistency.json",
        "consistency.png",
        "consistency_conversations.csv",
        "consistency_turns.csv",
    ]
    data = json.loads((out / "consistency.json").read_text())
    [conv] = data["conversations"]
    assert [t["prompt_to_line"] for t in conv["turns"]] == [1.0, 0.0]
    answers = [t["answers"] for t in conv["turns"]]
    assert [len(a) for a in answers] == [0, 2]
    assert [a["question"] for a in answers[1]] == [q.text for q in PERSONA_QUESTIONS[:2]]
    assert conv["turns"][0]["qa"] is None
    assert (out / "consistency.png").read_bytes()[:4] == b"\x89PNG"
    rows = (out / "consistency_turns.csv").read_text().splitlines()
    assert rows[0].startswith("conversation,domain,group,turn") and len(rows) == 3
    assert "wrote" in capsys.readouterr().out


def test_command_on_a_drift_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_drift(tmp_path / "drift")
    assert main(["consistency", "--drift", str(root)]) == 0
    assert {"consistency.json", "consistency.csv", "consistency.png"} <= {
        p.name for p in root.iterdir()
    }
    assert "Wilcoxon p=0.5" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("messages", "extra", "message"),
    [
        ([{"role": "assistant", "content": "Hi"}], [], "where a user turn belongs"),
        ([{"role": "user", "content": "Hi"}], [], "has no assistant turns"),
        (
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
            ["--persona", "wizardly_toaster"],
            "unknown role 'wizardly_toaster'.*personaspace catalogue",
        ),
        (
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
            ["--questions", "what,colour"],
            "unknown question id.*colour",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    messages: list[dict[str, str]],
    extra: list[str],
    message: str,
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"messages": messages}))
    out = tmp_path / "out"
    assert main(["consistency", str(path), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err)
    assert not out.exists()
