"""The personality inventory: its file, the answer read from the next-token distribution, the
scores and their statistics, and ``personaspace inventory`` on a tiny model."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import char_tokenizer, tiny_lm
from pipeline_fixtures import make_tiny_model

from personaspace.capture.hooks import residual_hooks
from personaspace.catalogue import load_catalogue
from personaspace.catalogue.inventory import BUILTIN_INVENTORY, load_inventory, parse_inventory
from personaspace.cli.main import main
from personaspace.conversation.prompts import format_prompt
from personaspace.errors import PersonaspaceError
from personaspace.experiments.inventory import (
    ORDERS,
    Administration,
    InventoryPrompt,
    ItemAnswer,
    administer,
    answer_tokens,
    inventory_prompts,
)
from personaspace.experiments.inventory_stats import (
    answer_values,
    calibrated_probs,
    cronbach_alpha,
    expected_value,
    item_scores,
    option_shares,
    prompt_projections,
    reading_check,
    summarise_scale,
)
from personaspace.runfolder import RunFolder
from personaspace.vectors.axis import save_axis

SHORT = {
    "name": "short",
    "instruction": "{statement} {options}.",
    "options": [
        {"label": "1", "value": 1, "text": "no"},
        {"label": "2", "value": 2, "text": "so-so"},
        {"label": "3", "value": 3, "text": "yes"},
    ],
    "traits": [
        {"name": "extraversion", "catalogue_trait": "extraverted", "opposite": "introverted"},
        {"name": "agreeableness", "catalogue_trait": "agreeable"},
    ],
    "items": [
        {"id": "e1", "trait": "extraversion", "keyed": 1, "text": "I like crowds."},
        {"id": "e2", "trait": "extraversion", "keyed": -1, "text": "I stay home."},
        {"id": "a1", "trait": "agreeableness", "keyed": 1, "text": "I am kind."},
        {"id": "a2", "trait": "agreeableness", "keyed": -1, "text": "I am rude."},
    ],
}


def test_builtin_inventory_has_ten_balanced_items_per_trait() -> None:
    inventory = load_inventory()
    catalogue = load_catalogue()
    assert len(inventory.items) >= 50
    assert len({i.id for i in inventory.items}) == len(inventory.items)
    assert [o.value for o in inventory.options] == [1, 2, 3, 4, 5]
    for scale in inventory.scales:
        items = inventory.items_of(scale.name)
        assert len(items) >= 10
        assert sum(i.keyed == 1 for i in items) == sum(i.keyed == -1 for i in items)
        assert scale.catalogue_trait in catalogue.traits and scale.opposite in catalogue.traits
    assert {s.name for s in inventory.scales} == {
        "openness",
        "conscientiousness",
        "extraversion",
        "agreeableness",
        "neuroticism",
    }
    assert BUILTIN_INVENTORY.parent.name == "inventory"  # under catalogue/data/**: package data


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("keyed", "short.json: item 'e2' has no 'keyed'"),
        ("text", "short.json: item 'e2' has no 'text'"),
        ("trait", "short.json: item 'e2' has no 'trait'"),
    ],
)
def test_an_item_missing_a_key_is_named_in_one_line(
    tmp_path: Path, drop: str, message: str
) -> None:
    data = json.loads(json.dumps(SHORT))
    del data["items"][1][drop]
    path = tmp_path / "short.json"
    path.write_text(json.dumps(data))
    with pytest.raises(PersonaspaceError) as err:
        load_inventory(path)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_inventory_refuses_bad_keying_and_unknown_traits() -> None:
    data = json.loads(json.dumps(SHORT))
    data["items"][0]["keyed"] = 2
    with pytest.raises(PersonaspaceError, match="item 'e1': 'keyed' is 2"):
        parse_inventory(data, "x.json")
    data["items"][0]["keyed"], data["items"][0]["trait"] = 1, "humour"
    with pytest.raises(PersonaspaceError, match="trait 'humour' is not one of"):
        parse_inventory(data, "x.json")
    with pytest.raises(PersonaspaceError, match="has no trait 'humour'"):
        parse_inventory(SHORT, "x.json").scale("humour")


def test_expected_value_renormalises_over_the_options_and_keying_mirrors() -> None:
    # p = (0.1, 0.2, 0.1) of which the options hold 0.4: (0.1*1 + 0.2*2 + 0.1*3) / 0.4 = 2.0
    assert expected_value([0.1, 0.2, 0.1], [1, 2, 3]) == pytest.approx(2.0)
    assert expected_value([0.3, 0.0, 0.1], [1, 2, 3]) == pytest.approx(1.5)
    inventory = parse_inventory(SHORT, "x.json")
    assert inventory.keyed_value(1.5, 1) == 1.5 and inventory.keyed_value(1.5, -1) == 2.5
    with pytest.raises(PersonaspaceError, match="no probability"):
        expected_value([0.0, 0.0, 0.0], [1, 2, 3])


def test_cronbach_alpha_of_constructed_data() -> None:
    # item variances 1 and 1/3, totals 3, 5, 6 with variance 7/3: 2 * (1 - (4/3) / (7/3)) = 6/7
    assert cronbach_alpha([[1, 2], [2, 3], [3, 3]]) == pytest.approx(6 / 7)
    # identical items: alpha 1; items that cancel: totals constant, alpha undefined
    assert cronbach_alpha([[1, 1, 1], [2, 2, 2], [4, 4, 4]]) == pytest.approx(1.0)
    assert math.isnan(cronbach_alpha([[1, 3], [2, 2], [3, 1]]))
    x = np.random.default_rng(0).normal(size=(9, 4))
    c = np.cov(x, rowvar=False)
    assert cronbach_alpha(x) == pytest.approx(4 / 3 * (1 - np.trace(c) / c.sum()))


def test_answer_tokens_chat_and_plain_transcript() -> None:
    lm = tiny_lm("llama")
    tok = lm.tokenizer
    digits = [tok.convert_tokens_to_ids(d) for d in "123"]
    prompt = format_prompt(lm, "Rate it.", "Be brief.")
    context, options = answer_tokens(lm, prompt, ["1", "2", "3"])
    assert context == prompt.input_ids and options == digits
    lm.tokenizer = char_tokenizer(chat_template=None)
    lm.chat_tuned = False
    plain = format_prompt(lm, "Rate it.", "Be brief.")
    assert plain.text.endswith("Assistant:")
    context, options = answer_tokens(lm, plain, ["1", "2", "3"])
    # the space every option starts with joins the context; the digits come after it
    assert context == [*plain.input_ids, tok.convert_tokens_to_ids(" ")] and options == digits
    with pytest.raises(PersonaspaceError, match="start with the same token"):
        answer_tokens(lm, plain, ["10", "12"])


def _prompts(n_per_pole: int = 2) -> list[InventoryPrompt]:
    inventory = parse_inventory(SHORT, "x.json")
    return inventory_prompts(
        load_catalogue(),
        inventory,
        chat_tuned=True,
        model_name="Tiny",
        variants=n_per_pole,
        baseline=1,
    )


def test_administer_reads_the_next_token_distribution_batched_as_alone() -> None:
    lm = tiny_lm("llama")
    inventory = parse_inventory(SHORT, "x.json")
    prompts = _prompts()[:3]
    together = administer(lm, inventory, prompts, layer=1, batch_size=7)
    alone = administer(lm, inventory, prompts, layer=1, batch_size=1)
    assert len(together.answers) == 3 * 4 == len(alone.answers)
    for a, b in zip(together.answers, alone.answers):
        assert (a.prompt_id, a.item_id) == (b.prompt_id, b.item_id)
        assert a.option_probs == pytest.approx(b.option_probs, rel=1e-4, abs=1e-7)
    assert together.states is not None and alone.states is not None
    torch.testing.assert_close(together.states, alone.states, atol=1e-5, rtol=1e-4)
    # the first answer by hand: softmax of the last position's logits at the digit tokens,
    # and block 1's output at that position
    item = inventory.items[0]
    prompt = format_prompt(lm, inventory.question(item), prompts[0].system)
    seen: list[torch.Tensor] = []
    with (
        torch.inference_mode(),
        residual_hooks(lm.model, lm.adapter, [1], lambda _i, h: seen.append(h)),
    ):
        logits = lm.model(torch.tensor([prompt.input_ids])).logits[0, -1]
    p = torch.softmax(logits, -1)
    digits = [lm.tokenizer.convert_tokens_to_ids(d) for d in "123"]
    assert alone.answers[0].option_probs == pytest.approx([float(p[d]) for d in digits], rel=1e-5)
    torch.testing.assert_close(alone.states[0], seen[0][0, -1], atol=1e-5, rtol=1e-5)


def _answers(probs: Mapping[str, tuple[float, ...]], prompt_ids: list[str]) -> list[ItemAnswer]:
    return [ItemAnswer(p, i, probs[f"{p}:{i}"]) for p in prompt_ids for i in ("e1", "e2")]


def test_summarise_scale_shift_interval_permutation_and_baseline() -> None:
    inventory = parse_inventory(SHORT, "x.json")
    every = ("extraversion",)
    prompts = [
        InventoryPrompt("default/0", "default", "default", 0, None, every),
        InventoryPrompt("pos/extraversion/0", "pos", "extraversion", 0, "a", every),
        InventoryPrompt("neg/extraversion/0", "neg", "extraversion", 0, "b", every),
        InventoryPrompt("pos/extraversion/1", "pos", "extraversion", 1, "c", every),
        InventoryPrompt("neg/extraversion/1", "neg", "extraversion", 1, "d", every),
        InventoryPrompt("baseline_pos/x/0", "baseline_pos", "x", 0, "e", every),
        InventoryPrompt("baseline_neg/x/0", "baseline_neg", "x", 0, "f", every),
    ]
    yes, no, mid = (0.0, 0.0, 0.5), (0.5, 0.0, 0.0), (0.0, 0.25, 0.0)
    probs = {
        "default/0:e1": mid, "default/0:e2": mid,
        "pos/extraversion/0:e1": yes, "pos/extraversion/0:e2": no,  # scores 3 and 3
        "pos/extraversion/1:e1": yes, "pos/extraversion/1:e2": mid,  # 3 and 2
        "neg/extraversion/0:e1": no, "neg/extraversion/0:e2": yes,  # 1 and 1
        "neg/extraversion/1:e1": mid, "neg/extraversion/1:e2": yes,  # 2 and 1
        "baseline_pos/x/0:e1": yes, "baseline_pos/x/0:e2": yes,  # 3 and 1
        "baseline_neg/x/0:e1": mid, "baseline_neg/x/0:e2": mid,  # 2 and 2
    }  # fmt: skip
    states = torch.tensor([[float(k), 0.0] for k in range(14)])
    adm = Administration(prompts, _answers(probs, [p.id for p in prompts]), 0, states)
    scores = item_scores(adm, inventory)
    assert (
        scores[("neg/extraversion/0", "e2")] == 1.0 and scores[("pos/extraversion/0", "e2")] == 3.0
    )
    projections = prompt_projections(adm, ["e1", "e2"], torch.tensor([1.0, 0.0]))
    assert projections["default/0"] == 0.5 and projections["baseline_neg/x/0"] == 12.5
    r = summarise_scale(adm, inventory, "extraversion", projections=projections)
    assert r.default.mean == 2.0 and r.pos.mean == pytest.approx(2.75) and r.neg.mean == 1.25
    # per item: e1 pos 3, neg 1.5 -> 1.5; e2 pos 2.5, neg 1 -> 1.5
    assert r.shift.mean == pytest.approx(1.5) and r.shift.low == pytest.approx(1.5)
    assert r.pos_minus_default.mean == pytest.approx(0.75) and r.neg_minus_default.mean == -0.75
    assert r.shift_keyed == pytest.approx(1.5) and r.shift_reversed == pytest.approx(1.5)
    # prompt scores pos (3, 2.5), neg (1, 1.5): of the 6 splits only the observed and its mirror
    assert r.permutation.statistic == pytest.approx(1.5)
    assert r.permutation.p_value == pytest.approx(2 / 6)
    assert r.baseline_shifts == {"x": 0.0} and r.baseline_p == pytest.approx(1 / 2)
    assert r.alpha_respondents == 7 and r.mass["default"] == pytest.approx(0.25)
    matrix = [[2, 2], [3, 3], [1, 1], [3, 2], [2, 1], [3, 1], [2, 2]]
    assert r.alpha == pytest.approx(cronbach_alpha(matrix))
    assert r.correlation is not None and r.correlation.n == 7
    # renormalised, each answer is one option: 'no' 2 of the 14, the middle 6, 'yes' 6
    assert r.option_shares == pytest.approx([2 / 14, 6 / 14, 6 / 14])
    assert option_shares(adm, ["e1"]) == pytest.approx([1 / 7, 3 / 7, 3 / 7])
    assert json.dumps(r.to_json())


def test_inventory_prompts_layout_and_checks() -> None:
    prompts = _prompts(3)
    kinds = [p.kind for p in prompts]
    assert kinds.count("default") == len(load_catalogue().default_prompts)
    assert kinds.count("pos") == kinds.count("neg") == 2 * 3
    assert kinds.count("baseline_pos") == kinds.count("baseline_neg") == 1
    assert all(p.scales == (p.name,) for p in prompts if p.kind in ("pos", "neg"))
    pos = [p.system for p in prompts if p.kind == "pos" and p.name == "extraversion"]
    assert pos == [q.pos for q in load_catalogue().traits["extraverted"].pairs[:3]]
    inventory = parse_inventory(SHORT, "x.json")
    with pytest.raises(PersonaspaceError, match="has 5 prompts per pole"):
        inventory_prompts(load_catalogue(), inventory, chat_tuned=True, model_name="m", variants=6)


def _tiny_run(tmp_path: Path, model: Path, hidden: int) -> Path:
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    g = torch.Generator().manual_seed(0)
    meta = {"model_id": str(model), "layers": [0, 1, 2], "n_layers": 3}
    run.save_axis(torch.randn(3, hidden, generator=g), meta, analysis_layer=1)
    run.save_vectors(
        meta,
        roles={"pirate": torch.randn(3, hidden, generator=g)},
        role_counts={"pirate": 1},
        default=torch.randn(3, hidden, generator=g),
        default_count=1,
        traits={"extraverted": torch.randn(3, hidden, generator=g)},
        trait_counts={"extraverted": 1},
    )
    return run.path


def test_inventory_cli_writes_the_results(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    model = make_tiny_model(tmp_path / "model")
    (tmp_path / "short.json").write_text(json.dumps(SHORT))
    run = _tiny_run(tmp_path, model, 64)
    out = tmp_path / "inventory.json"
    (tmp_path / "short.json").write_text(json.dumps({**SHORT, "content_free": ["N/A", ""]}))
    argv = ["inventory", "--model", str(model), "--inventory", str(tmp_path / "short.json"),
            "--axis", str(run), "--variants", "2", "--baseline", "1", "--roles", "therapist",
            "--device", "cpu", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "extraversion" in table and "agreeableness" in table
    assert "order agreement (raw, 4 items" in table and "order agreement (calibrated" in table
    data = json.loads(out.read_text())
    assert data["settings"]["layer"] == 1 and data["settings"]["roles"] == ["therapist"]
    assert data["settings"]["orders"] == ["forward", "reversed"] and data["settings"]["calibrated"]
    n_default = len(load_catalogue().default_prompts)
    n_prompts = n_default + 2 + 1 + 2 * 2 * 2
    # default, baseline and role prompts ask all 4 items; each pole prompt its trait's 2;
    # every statement in both orders; each prompt the 2 content-free statements in both
    assert len(data["answers"]) == 2 * ((n_default + 2 + 1) * 4 + 2 * 2 * 2 * 2)
    assert len(data["calibration_answers"]) == 2 * 2 * n_prompts
    assert [c["calibrated"] for c in data["reading_check"]] == [False, True]
    assert data["reading_check"][0]["order_agreement"]["n"] == 4
    assert [s["calibrated"] for s in data["scales"]] == [True, True]
    assert [s["calibrated"] for s in data["scales_uncalibrated"]] == [False, False]
    # the calibrated default score recomputed from the written answers
    inventory = parse_inventory({**SHORT, "content_free": ["N/A", ""]}, "short.json")
    answers = [ItemAnswer(r["prompt"], r["item"], tuple(r["option_probs"]), r["order"])
               for r in data["answers"]]  # fmt: skip
    calibration = [ItemAnswer(r["prompt"], r["item"], tuple(r["option_probs"]), r["order"])
                   for r in data["calibration_answers"]]  # fmt: skip
    every = ("extraversion", "agreeableness")
    prompts = [InventoryPrompt(p["id"], p["kind"], p["name"], p["variant"], p["system"], every)
               for p in data["prompts"]]  # fmt: skip
    adm = Administration(prompts, answers, None, None, calibration)
    scores = item_scores(adm, inventory, calibrated=True)
    default_ids = [p["id"] for p in data["prompts"] if p["kind"] == "default"]
    expected = np.mean([np.mean([scores[(p, i)] for p in default_ids]) for i in ("e1", "e2")])
    assert data["scales"][0]["default"]["mean"] == pytest.approx(expected, abs=1e-4)
    extraversion, agreeableness = data["scales"]
    assert extraversion["direction"] == "trait vector extraverted"
    assert agreeableness["direction"].startswith("assistant axis")
    assert extraversion["correlation"]["n"] == n_default + 4 + 2 + 1
    for row in data["answers"]:
        values = [1, 2, 3] if row["order"] == "forward" else [3, 2, 1]
        assert row["value"] == pytest.approx(expected_value(row["option_probs"], values), abs=1e-12)
        assert 0 < row["mass"] <= 1


def test_inventory_cli_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    model = make_tiny_model(tmp_path / "model")
    other = tmp_path / "other.safetensors"
    save_axis(other, torch.ones(3, 16), {"model_id": "other", "layers": [0, 1, 2], "n_layers": 3})
    broken = json.loads(json.dumps(SHORT))
    del broken["items"][0]["keyed"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    (tmp_path / "short.json").write_text(json.dumps(SHORT))
    out = tmp_path / "out.json"
    base = ["inventory", "--model", str(model), "--device", "cpu", "--out", str(out)]
    cases = [
        (
            ["--inventory", str(tmp_path / "short.json"), "--no-calibrate", "--axis", str(other)],
            "hidden size 16",
        ),
        (["--inventory", str(tmp_path / "broken.json")], "item 'e1' has no 'keyed'"),
        (["--traits", "humour"], "--traits: the inventory has no trait 'humour'"),
        (["--roles", "nobody"], "no role 'nobody'"),
        (["--variants", "1"], "--variants is 1"),
        (["--inventory", str(tmp_path / "short.json")], "no content-free statements"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not out.exists()


def test_reversed_options_keep_the_labels_and_reverse_the_meanings() -> None:
    inventory = parse_inventory(SHORT, "x.json")
    flipped = inventory.reversed()
    assert [o.label for o in flipped.options] == ["1", "2", "3"]
    assert [(o.value, o.text) for o in flipped.options] == [(3, "yes"), (2, "so-so"), (1, "no")]
    assert flipped.question(inventory.items[0]) == "I like crowds. 1 = yes, 2 = so-so, 3 = no."
    assert flipped.order == "reversed" and flipped.reversed() == inventory
    assert load_inventory().content_free == ("N/A", "", "...")
    with pytest.raises(PersonaspaceError, match="'content_free' is not a list"):
        parse_inventory({**SHORT, "content_free": "N/A"}, "x.json")


def test_calibration_divides_out_the_prompts_option_bias() -> None:
    inventory = parse_inventory(SHORT, "x.json")
    # the bias alone (the answer is the content-free distribution): the middle, exactly
    assert calibrated_probs([0.6, 0.3, 0.1], [0.6, 0.3, 0.1]) == pytest.approx((1 / 3,) * 3)
    # p / c = (0.5/0.5, 0.3/0.25, 0.2/0.25) = (1, 1.2, 0.8), over 3
    assert calibrated_probs([0.5, 0.3, 0.2], [0.5, 0.25, 0.25]) == pytest.approx(
        (1 / 3, 0.4, 0.8 / 3)
    )
    prompt = InventoryPrompt("p", "default", "default", 0, None, ("extraversion",))
    bias = (0.7, 0.2, 0.1)
    answers = [
        ItemAnswer("p", "e1", (0.35, 0.1, 0.05)),  # the bias at half the mass: 2 calibrated
        ItemAnswer("p", "e1", (0.6, 0.2, 0.2), "reversed"),
        ItemAnswer("p", "e2", (0.7, 0.2, 0.1)),
        ItemAnswer("p", "e2", (0.7, 0.2, 0.1), "reversed"),
    ]
    calibration = [ItemAnswer("p", "content-free/0", bias, o) for o in ("forward", "reversed")]
    adm = Administration([prompt], answers, None, None, calibration)
    raw = answer_values(adm, inventory)
    # forward 1.4 and reversed (values 3,2,1) 2.4 for e1; 1.4 and 2.6 for e2
    assert raw[("p", "e1")] == pytest.approx((1.4 + 2.4) / 2)
    assert raw[("p", "e2")] == pytest.approx(2.0)
    calibrated = answer_values(adm, inventory, calibrated=True)
    reversed_e1 = calibrated_probs((0.6, 0.2, 0.2), bias)
    expected_e1 = (2.0 + expected_value(reversed_e1, [3, 2, 1])) / 2
    assert calibrated[("p", "e1")] == pytest.approx(expected_e1)
    assert calibrated[("p", "e2")] == pytest.approx(2.0)
    no_reference = Administration([prompt], answers, None, None, [])
    with pytest.raises(PersonaspaceError, match="no content-free answers"):
        answer_values(no_reference, inventory, calibrated=True)


def test_reading_check_tells_a_reader_from_a_positional_respondent() -> None:
    inventory = parse_inventory(SHORT, "x.json")
    every = ("extraversion", "agreeableness")
    prompt = InventoryPrompt("default/0", "default", "default", 0, None, every)
    agreement = {"e1": 0, "e2": 1, "a1": 2, "a2": 2}  # the option index a reader agrees with

    def one_hot(k: int) -> tuple[float, ...]:
        return tuple(0.9 if j == k else 0.05 for j in range(3))

    reader = [ItemAnswer("default/0", i, one_hot(k)) for i, k in agreement.items()] + [
        ItemAnswer("default/0", i, one_hot(2 - k), "reversed") for i, k in agreement.items()
    ]
    check = reading_check(Administration([prompt], reader, None, None), inventory)
    assert check.prompts == 1 and check.agreement.n == 4 and check.agreement.rho == 1.0
    # a respondent leaning to "1" by an amount that varies by item: each item low in one
    # order is high in the other
    lean = {"e1": 0.9, "e2": 0.7, "a1": 0.5, "a2": 0.8}
    positional = [
        ItemAnswer("default/0", i, (w, 1 - w, 0.0), o) for i, w in lean.items() for o in ORDERS
    ]
    check = reading_check(Administration([prompt], positional, None, None), inventory)
    assert check.agreement.rho == -1.0
    with pytest.raises(PersonaspaceError, match="both option orders"):
        reading_check(Administration([prompt], reader[:4], None, None), inventory)


def test_administer_both_orders_with_content_free_statements() -> None:
    lm = tiny_lm("llama")
    inventory = parse_inventory({**SHORT, "content_free": ["N/A"]}, "x.json")
    prompts = _prompts()[:2]
    adm = administer(lm, inventory, prompts, layer=1, orders=ORDERS, calibrate=True)
    assert [a.order for a in adm.answers] == ["forward"] * 8 + ["reversed"] * 8
    assert adm.states is not None and adm.states.shape[0] == 16
    assert [(a.prompt_id, a.item_id, a.order) for a in adm.calibration] == [
        (p.id, "content-free/0", o) for o in ORDERS for p in prompts
    ]
    forward = administer(lm, inventory, prompts, layer=1)
    for a, b in zip(adm.answers[:8], forward.answers):
        assert a.option_probs == pytest.approx(b.option_probs, rel=1e-4, abs=1e-7)
    # the reversed order asks a different question (the options listed the other way); an
    # order is the file's or its reverse, whichever order the Inventory object holds
    for held in (inventory, inventory.reversed()):
        flipped = administer(lm, held, prompts[:1], orders=("reversed",))
        assert adm.answers[8].option_probs == pytest.approx(
            flipped.answers[0].option_probs, rel=1e-4, abs=1e-7
        )
    assert adm.answers[8].option_probs != pytest.approx(adm.answers[0].option_probs)
    with pytest.raises(PersonaspaceError, match="no content-free statements"):
        administer(lm, parse_inventory(SHORT, "x.json"), prompts, calibrate=True)
    with pytest.raises(PersonaspaceError, match="orders is"):
        administer(lm, inventory, prompts, orders=("sideways",))  # type: ignore[arg-type]
