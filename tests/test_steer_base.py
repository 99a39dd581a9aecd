"""``steer-base`` with its random-direction null: exact p-values, seeded directions, both
directions of the test (a base model along a chat model's axis and the converse)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import char_tokenizer
from pipeline_fixtures import make_tiny_model, tiny_axis_run

from personaspace.analysis.intervals import empirical_p, figure_null, random_units
from personaspace.capture import SamplingConfig
from personaspace.catalogue import load_catalogue, select
from personaspace.cli.main import main
from personaspace.experiments.base_steering import (
    MYSTICAL_CATEGORY,
    SteeringSettings,
    open_prompt_ids,
    role_reference,
    steer_base_model,
)
from personaspace.models import load_model
from personaspace.runfolder import RunFolder, load_axis
from personaspace.vectors.axis import save_axis

# The keys of steer_base.json before the null existed (and with --random-directions 0).
OLD_KEYS = [
    "model_id",
    "axis_model_id",
    "axis_source",
    "layer",
    "norm",
    "norm_unit",
    "settings",
    "roles_compared",
    "empty_completions",
    "judge_evidence",
    "by_coefficient",
    "completions",
]
OLD_COEFFICIENT_KEYS = [
    "coef_frac",
    "n",
    "mean_tokens",
    "reread_on_axis_mean",
    "reread_on_axis_sd",
    "nearest_by_activation",
    "activation_cos",
    "helpful_share_activation",
    "helpful_minus_other_activation",
    "nearest_by_judge",
]
QUICK = ["--coefs", "0,3", "--samples", "1", "--steer-tokens", "6", "--no-judge-evidence"]


# --- the p-value and its verdict -----------------------------------------------------------


def test_empirical_p_counts_the_observed_draw_and_ties() -> None:
    null = [0.2, 0.4, 0.6, 0.6, 0.8]
    assert empirical_p(0.6, null) == 4 / 6  # 0.6, 0.6, 0.8 and the observed one
    assert empirical_p(0.6, null, tail="less") == 5 / 6
    assert empirical_p(0.9, null) == 1 / 6  # beyond every random direction
    assert empirical_p(0.1, null, tail="less") == 1 / 6
    assert empirical_p(0.9, null, tail="two-sided") == 2 / 6
    assert empirical_p(0.6 + 1e-13, null) == 4 / 6  # a tie within 1e-12 counts


def test_figure_null_says_when_random_directions_go_as_far() -> None:
    far = figure_null(0.6, [0.0] * 15 + [0.2] * 4, tail="greater")
    assert far.p == 1 / 20 and far.n_at_least_as_far == 0 and far.percentile == 100.0
    assert far.separable and far.verdict == "separable from random directions (p = 0.05)"
    assert far.random_mean == pytest.approx(0.8 / 19)
    near = figure_null(0.6, [0.2, 0.4, 0.6, 0.8, 1.0], tail="greater")
    assert near.p == 4 / 6 and near.n_at_least_as_far == 3 and near.percentile == 40.0
    assert near.to_json()["verdict"] == (
        "not separable from random directions (p = 0.67; 5 directions cannot give p below 0.17)"
    )
    assert figure_null(-0.5, [0.0] * 19, tail="less").separable  # away, for a negative coef
    assert not figure_null(-0.5, [0.0] * 19, tail="greater").separable


# --- tiny runs: a chat model and the same weights as a base model ----------------------------


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):  # type: ignore[no-untyped-def]
    """A chat run and a base run of the same tiny weights (hidden size 64)."""
    root = tmp_path_factory.mktemp("steer-null")
    chat = make_tiny_model(root / "chat", hidden=64)
    base = root / "base"
    shutil.copytree(chat, base, ignore=shutil.ignore_patterns("chat_template*", "tokenizer*"))
    char_tokenizer(chat_template=None).save_pretrained(base)  # no template: a base model
    roles = [r.name for r in select(load_catalogue(), "quick").roles[::6]]  # one per category
    runs = {
        n: tiny_axis_run(m, root / f"run-{n}", roles) for n, m in (("chat", chat), ("base", base))
    }
    return {"chat": chat, "base": base}, runs


def _steer(runs: dict[str, Path], out: Path, *extra: str, run: str = "base") -> dict:  # type: ignore[type-arg]
    args = ["steer-base", str(runs[run]), "--out", str(out), *QUICK, *extra]
    assert main(args) == 0
    return json.loads((out / "steer_base.json").read_text())  # type: ignore[no-any-return]


def test_random_directions_are_seeded_and_the_file_repeats_byte_for_byte(  # type: ignore[no-untyped-def]
    tiny_pair, tmp_path, capsys
) -> None:
    _, runs = tiny_pair
    first = _steer(runs, tmp_path / "a", "--axis", str(runs["chat"]), "--random-directions", "3")
    _steer(runs, tmp_path / "b", "--axis", str(runs["chat"]), "--random-directions", "3")
    assert (tmp_path / "a" / "steer_base.json").read_bytes() == (
        tmp_path / "b" / "steer_base.json"
    ).read_bytes()
    assert (tmp_path / "a" / "steer_base.png").stat().st_size > 1000
    null = first["random_null"]
    assert null["n_directions"] == 3 and null["seed"] == 0 and len(null["by_direction"]) == 3
    # the directions are random_units(3, 64, seed 0), compared with the unit axis
    axis = load_axis(runs["chat"])
    layer = first["layer"]
    expected = random_units(3, 64, 0).float() @ axis.unit(layer)
    got = [d["cos_with_axis"] for d in null["by_direction"]]
    assert got == pytest.approx(expected.tolist(), abs=1e-5)
    assert null["mystical_category"] is None and "no mystical_spiritual" in null["notes"][0]
    assert null["figures"] == [
        "reread_on_axis_mean",
        "helpful_share_activation",
        "helpful_minus_other_activation",
    ]
    for entry in first["by_coefficient"]:
        for name in null["figures"]:
            fig = entry["null"][name]
            assert fig["observed"] == entry[name] and fig["n_directions"] == 3
            values = [
                row[name]
                for d in null["by_direction"]
                for row in d["by_coefficient"]
                if row["coef_frac"] == entry["coef_frac"]
            ]
            assert fig["random_mean"] == pytest.approx(sum(values) / 3, abs=1e-6)
            tail = "two-sided" if entry["coef_frac"] == 0 else "greater"
            assert fig["tail"] == tail
            assert fig["p"] == pytest.approx(empirical_p(fig["observed"], values, tail=tail))
            assert fig["verdict"].startswith("not separable")  # 3 directions never can
    assert len(null["verdicts"]) == 2 * 3
    out = capsys.readouterr().out
    assert "not separable from random directions (p = " in out
    assert "beside 3 random unit directions of the same norm" in out
    # another seed, other directions
    other = _steer(runs, tmp_path / "c", "--axis", str(runs["chat"]), "--random-directions", "3")
    assert other["random_null"]["by_direction"] == null["by_direction"]
    reseeded = _steer(
        runs,
        tmp_path / "d",
        "--axis",
        str(runs["chat"]),
        "--random-directions",
        "3",
        "--null-seed",
        "1",
    )
    assert reseeded["random_null"]["by_direction"] != null["by_direction"]


def test_no_random_directions_gives_the_old_keys_and_the_same_figures(  # type: ignore[no-untyped-def]
    tiny_pair, tmp_path
) -> None:
    _, runs = tiny_pair
    plain = _steer(runs, tmp_path / "plain", "--random-directions", "0")
    assert list(plain) == OLD_KEYS
    assert all(list(e) == OLD_COEFFICIENT_KEYS for e in plain["by_coefficient"])
    assert "null" not in json.dumps(plain["settings"])
    with_null = _steer(runs, tmp_path / "null", "--random-directions", "2")
    del with_null["random_null"]
    for entry in with_null["by_coefficient"]:
        del entry["null"]
    assert with_null == plain  # the null adds figures and changes none


def test_both_directions_of_the_test_and_a_chat_model(tiny_pair, tmp_path) -> None:  # type: ignore[no-untyped-def]
    models, runs = tiny_pair
    # a base model along the chat model's axis, and the chat model along the base model's
    forward = _steer(runs, tmp_path / "f", "--axis", str(runs["chat"]), "--random-directions", "1")
    converse = _steer(
        runs,
        tmp_path / "c",
        "--axis",
        str(runs["base"]),
        "--random-directions",
        "1",
        "--model",
        str(models["chat"]),
        run="chat",
    )
    assert forward["axis_source"].startswith(str(runs["chat"]))
    assert converse["axis_source"].startswith(str(runs["base"]))
    assert forward["roles_compared"] == converse["roles_compared"] == 9
    assert [e["coef_frac"] for e in converse["by_coefficient"]] == [0.0, 3.0]
    # the chat model reads the open prompts as plain text, like the base model: no template
    chat, base = load_model(str(models["chat"])), load_model(str(models["base"]))
    assert chat.chat_tuned and not base.chat_tuned
    ids = open_prompt_ids(chat.tokenizer, "My name is")
    assert ids == open_prompt_ids(base.tokenizer, "My name is")
    assert chat.tokenizer.decode(ids) == "<bos>My name is"


def test_the_library_null_matches_the_cli(tiny_pair, tmp_path) -> None:  # type: ignore[no-untyped-def]
    models, runs = tiny_pair
    lm = load_model(str(models["base"]))
    axis = load_axis(runs["chat"], lm)
    compared = RunFolder(runs["base"]).compared()
    roles = role_reference(compared.roles, compared.row(1), list(load_catalogue().roles.values()))
    first = sorted(roles.categories)[0]  # as if a catalogue had a mystical category
    roles = dataclasses.replace(roles, categories={**roles.categories, first: MYSTICAL_CATEGORY})
    settings = SteeringSettings(
        coefs=(0.0, -3.0, 3.0),
        prompts=("My name is",),
        samples_per_prompt=2,
        sampling=SamplingConfig(max_new_tokens=6, temperature=0.7, top_p=0.9),
        random_directions=2,
    )
    done: list[tuple[int, int]] = []
    result = steer_base_model(
        lm,
        axis,
        1,
        10.0,
        roles,
        settings,
        judge_evidence=False,
        progress=lambda d, t: done.append((d, t)),
    )
    assert done == [(1, 2), (2, 2)]
    entries = {e["coef_frac"]: e["null"] for e in result["by_coefficient"]}
    assert {c: n["reread_on_axis_mean"]["tail"] for c, n in entries.items()} == {
        0.0: "two-sided",
        -3.0: "less",
        3.0: "greater",
    }
    # toward the Assistant end means fewer mystical roles
    assert {c: n["mystical_share_activation"]["tail"] for c, n in entries.items()} == {
        0.0: "two-sided",
        -3.0: "greater",
        3.0: "less",
    }
    assert result["random_null"]["mystical_category"] == MYSTICAL_CATEGORY
    assert result["random_null"]["notes"] == []
    # coefficient 0 is not regenerated: every direction's figures there use the same texts
    zero = [c for c in result["completions"] if c["coef_frac"] == 0.0]
    assert len(zero) == 2


# --- checks before the model loads -----------------------------------------------------------


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(spec: str) -> object:
        raise AssertionError(f"the model {spec} was loaded")

    monkeypatch.setattr("personaspace.cli.common.load_model", refuse)


def test_an_axis_of_another_hidden_size_exits_2_before_the_model_loads(  # type: ignore[no-untyped-def]
    tiny_pair, tmp_path, capsys, no_model
) -> None:
    _, runs = tiny_pair
    other = tmp_path / "other.safetensors"
    save_axis(other, torch.ones(3, 32), {"model_id": "m", "layers": [0, 1, 2], "n_layers": 3})
    out = tmp_path / "o"
    assert main(["steer-base", str(runs["base"]), "--axis", str(other), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hidden size 32" in err[0] and "has 64" in err[0]
    assert "same model family" in err[0]
    assert not out.exists()


def test_negative_random_directions_exits_2(tiny_pair, tmp_path, capsys, no_model) -> None:  # type: ignore[no-untyped-def]
    _, runs = tiny_pair
    out = tmp_path / "o"
    assert (
        main(["steer-base", str(runs["base"]), "--out", str(out), "--random-directions", "-1"]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--random-directions is -1" in err[0]
    assert not out.exists()
