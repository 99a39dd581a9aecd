"""Comparing two persona spaces: exact figures on synthetic runs, the CLI, base steering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from compare_fixtures import N_ROLES, NAMES, make_run, synthetic, write_run
from pipeline_fixtures import make_tiny_model, tiny_axis_run

from personaspace.analysis.compare import (
    MIN_SHARED_ROLES,
    compare_runs,
    default_null,
    layer_profile,
    subspace_cosines,
)
from personaspace.analysis.stats import average_ranks, rank_correlation, spearman
from personaspace.capture import SamplingConfig, generate
from personaspace.catalogue import load_catalogue, select
from personaspace.cli.main import main
from personaspace.conversation import BASE_DEFAULT_FRAME, format_conversation
from personaspace.errors import PersonaspaceError
from personaspace.experiments.base_steering import (
    SteeringSettings,
    role_reference,
    steer_base_model,
)
from personaspace.models import load_model
from personaspace.pipeline.work import build_work
from personaspace.report.compare_report import _layers
from personaspace.runfolder import RunFolder, load_axis

DOCS = Path(__file__).resolve().parent.parent / "docs"

# --- statistics ----------------------------------------------------------------------------


def test_average_ranks_and_spearman_with_ties() -> None:
    assert average_ranks([3.0, 1.0, 3.0, 2.0]).tolist() == [3.5, 1.0, 3.5, 2.0]
    # Known value: one adjacent swap among n = 10 gives 1 - 6 * 2 / (10 * 99).
    b = list(range(10))
    b[3], b[4] = b[4], b[3]
    assert spearman(list(range(10)), b) == pytest.approx(1 - 12 / 990, abs=1e-12)


def test_rank_correlation_of_a_reversal() -> None:
    r = rank_correlation(range(10), range(10, 0, -1), n_permutations=999, n_bootstrap=100)
    assert r.rho == -1.0 and r.ci_high == -1.0
    assert r.p_permutation == pytest.approx(1 / 1000)  # no shuffle reaches |rho| = 1


# --- same architecture and rank figures ------------------------------------------------------


def test_identical_runs_give_cosines_one_and_rho_one() -> None:
    a = make_run("a", synthetic())
    result = compare_runs(a, a, n_permutations=200, n_bootstrap=50)
    assert result["mode"] == "same_architecture"
    same = result["same_architecture"]
    assert all(r["cos"] == pytest.approx(1.0, abs=1e-6) for r in same["axis_cosine_by_layer"])
    assert same["role_pair_cosine_summary"]["raw_min"] == pytest.approx(1.0, abs=1e-6)
    assert same["role_pair_cosine_summary"]["centred_min"] == pytest.approx(1.0, abs=1e-6)
    assert same["pc_cosines"]["matched"] == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    assert same["default_movement"]["shift_along_b"] == 0.0
    ranks = result["ranks"]
    assert ranks["spearman_axis"]["rho"] == 1.0 and ranks["spearman_pc1"]["rho"] == 1.0
    assert ranks["axis_ends"]["top"] == 6  # 12 shared roles: lists of half
    assert ranks["axis_ends"]["top_overlap"] == 6 and ranks["axis_ends"]["bottom_overlap"] == 6
    assert ranks["nearest_to_default"]["a"][0][0] == "role_11"  # furthest along the axis


def test_permuted_roles_give_the_known_rank_correlation() -> None:
    order = list(range(N_ROLES))
    order[0], order[1] = order[1], order[0]
    order[5], order[9] = order[9], order[5]
    a = make_run("a", synthetic())
    b = make_run("b", synthetic(order=order))
    d2 = sum((i - o) ** 2 for i, o in enumerate(order))
    expected = 1 - 6 * d2 / (N_ROLES * (N_ROLES**2 - 1))
    result = compare_runs(a, b, n_permutations=500, n_bootstrap=100)
    assert result["ranks"]["spearman_axis"]["rho"] == pytest.approx(expected, abs=1e-4)
    assert result["ranks"]["spearman_pc1"]["rho"] == pytest.approx(expected, abs=1e-4)
    # the axis does not depend on which name a vector carries
    assert result["same_architecture"]["axis_cosine_at_layer"] == pytest.approx(1.0, abs=1e-6)


def test_default_shift_along_the_axis() -> None:
    a = make_run("a", synthetic())
    roles = synthetic()
    b = make_run("b", roles)
    moved = b.default.clone()
    moved[:, 0] += 2.0
    b = make_run("b", roles, default=moved, axis=b.axis)
    result = compare_runs(a, b, n_permutations=100, n_bootstrap=20)
    movement = result["same_architecture"]["default_movement"]
    assert movement["shift_along_b"] == pytest.approx(2.0, abs=1e-4)
    assert movement["default_b_on_axis_b"] == pytest.approx(7.0, abs=1e-4)


def test_subspace_cosines_see_through_a_rotation_inside_the_span() -> None:
    e = torch.eye(4)
    rotated = torch.stack([(e[0] + e[1]) / 2**0.5, (e[0] - e[1]) / 2**0.5])
    result = subspace_cosines(e[:2], rotated)
    assert result["matched"] == pytest.approx([2**-0.5, 2**-0.5], abs=1e-6)
    assert result["principal"] == pytest.approx([1.0, 1.0], abs=1e-6)


def test_layer_profile_ranks_the_default_among_the_roles() -> None:
    roles = synthetic()
    # make_run puts the default at mean + 5 e0 = 11.5: beyond every role but role_11 (12)
    rows = layer_profile(make_run("a", roles), NAMES)
    assert [r["default_pc1_rank"] for r in rows] == [2, 2, 2]
    mean = torch.stack(list(roles.values())).mean(0)
    beyond = mean.clone()
    beyond[:, 0] += 10.0  # 16.5: past every role at the Assistant end
    rows = layer_profile(make_run("a", roles, default=beyond), NAMES)
    assert [r["default_pc1_rank"] for r in rows] == [1, 1, 1]
    assert all(abs(r["cos_axis_pc1"]) == pytest.approx(1.0, abs=1e-3) for r in rows)


def test_different_hidden_sizes_rank_only_or_refused() -> None:
    a = make_run("a", synthetic(hidden=8))
    b = make_run("b", synthetic(hidden=6, layers=5))
    result = compare_runs(a, b, n_permutations=100, n_bootstrap=20)
    assert result["mode"] == "rank_only" and "same_architecture" not in result
    assert result["ranks"]["spearman_axis"]["rho"] == 1.0
    with pytest.raises(PersonaspaceError, match="equal hidden sizes.*has 8.*has 6"):
        compare_runs(a, b, mode="same")


def test_too_few_shared_roles_is_refused_with_the_count() -> None:
    a = make_run("a", synthetic())
    few = [*NAMES[: MIN_SHARED_ROLES - 1], "other_1", "other_2", "other_3"]
    b = make_run("b", synthetic(names=few))
    with pytest.raises(PersonaspaceError, match=f"share only {MIN_SHARED_ROLES - 1} roles"):
        compare_runs(a, b)


def test_different_catalogues_compare_the_shared_roles_and_say_so() -> None:
    a = make_run("a", synthetic(), catalogue=None)
    names = [*NAMES[:10], "extra_a", "extra_b"]
    b = make_run("b", synthetic(names=names), catalogue="/my/catalogue")
    result = compare_runs(a, b, n_permutations=100, n_bootstrap=20)
    assert result["roles"]["shared"] == 10
    assert result["roles"]["only_a"] == ["role_10", "role_11"]
    assert result["roles"]["only_b"] == ["extra_a", "extra_b"]
    assert any("different catalogues" in n for n in result["notes"])


# --- run folders and the CLI ------------------------------------------------------------------


def test_cli_writes_json_html_and_plots(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    a = write_run(tmp_path / "a", make_run("model-a", synthetic()))
    b = write_run(tmp_path / "b", make_run("model-b", synthetic(hidden=6, layers=5)))
    out = tmp_path / "cmp"
    code = main(["compare", str(a), str(b), "--out", str(out), "--permutations", "200"])
    assert code == 0
    result = json.loads((out / "compare.json").read_text())
    assert result["mode"] == "rank_only" and result["roles"]["shared"] == N_ROLES
    assert result["a"]["analysis_layer"] == 1 and result["b"]["analysis_layer"] == 2
    for name in ("compare.html", "compare_persona_spaces.png", "compare_role_ranks.png"):
        assert (out / name).stat().st_size > 1000, name
    assert "Spearman, roles on each own axis" in capsys.readouterr().out
    loaded = RunFolder(a).compared()
    assert loaded.hidden_size == 8 and loaded.chat_tuned is False


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mode", "same"], "equal hidden sizes"),
        (["--steer-base"], "hidden sizes differ"),
    ],
)
def test_cli_bad_input_exits_2(tmp_path, capsys, extra, message) -> None:  # type: ignore[no-untyped-def]
    a = write_run(tmp_path / "a", make_run("model-a", synthetic()))
    b = write_run(tmp_path / "b", make_run("model-b", synthetic(hidden=6)))
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--top", "0"], "--top is 0: give at least 2"),
        (["--top", "1"], "--top is 1: give at least 2"),
        (["--permutations", "0"], "--permutations is 0: give at least 1"),
        (["--bootstrap", "0"], "--bootstrap is 0: give at least 1"),
        (["--k", "0"], "--k is 0: compare at least 1 principal component"),
    ],
)
def test_cli_bad_counts_exit_2(tmp_path, capsys, extra, message) -> None:  # type: ignore[no-untyped-def]
    a = write_run(tmp_path / "a", make_run("model-a", synthetic()))
    b = write_run(tmp_path / "b", make_run("model-b", synthetic()))
    out = tmp_path / "o"
    assert main(["compare", str(a), str(b), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()
    with pytest.raises(PersonaspaceError, match="top is 0"):
        compare_runs(make_run("a", synthetic()), make_run("b", synthetic()), top=0)


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model fails the test: every error below must come first."""

    def refuse(spec: str) -> object:
        raise AssertionError(f"the model {spec} was loaded")

    monkeypatch.setattr("personaspace.cli.common.load_model", refuse)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--coefs", "0,abc"], "--coefs '0,abc' is not a comma-separated list of numbers"),
        (["--coefs", "0,inf"], "--coefs '0,inf' holds a non-finite value"),
        (["--samples", "0"], "--samples is 0"),
        (["--steer-tokens", "0"], "--steer-tokens is 0"),
    ],
)
def test_steer_base_checks_its_options_before_the_model_loads(  # type: ignore[no-untyped-def]
    tmp_path, capsys, no_model, extra, message
) -> None:
    a = write_run(tmp_path / "a", make_run("model-a", synthetic()))
    assert main(["steer-base", str(a), "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    b = write_run(tmp_path / "b", make_run("model-b", synthetic()))
    args = ["compare", str(a), str(b), "--out", str(tmp_path / "c"), "--steer-base", *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_steer_base_on_a_missing_folder_says_so(capsys, no_model) -> None:  # type: ignore[no-untyped-def]
    assert main(["steer-base", "nowhere"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere is not an axis run folder" in err[0]


def test_layer_cosine_plot_labels_the_published_line_at_every_layer() -> None:
    import matplotlib.pyplot as plt

    a = make_run("a", synthetic())
    result = compare_runs(a, a, n_permutations=10, n_bootstrap=10)
    fig = plt.figure()
    try:
        ax = fig.subplots()
        _layers(ax, result)
        labels = ax.get_legend_handles_labels()[1]
    finally:
        plt.close(fig)
    assert "published cos(axis, PC1) > 0.60 at every layer" in labels


def test_cli_too_few_shared_roles_exits_2(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    a = write_run(tmp_path / "a", make_run("model-a", synthetic()))
    b = write_run(tmp_path / "b", make_run("model-b", synthetic(names=NAMES[:5])))
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "o")]) == 2
    assert "share only 5 roles" in capsys.readouterr().err


# --- base-model default prompts ---------------------------------------------------------------


def test_base_models_read_the_default_as_an_assistant_transcript() -> None:
    selection = select(load_catalogue(), "quick")
    chat = build_work(selection, "Gemma", 0, 4)
    base = build_work(selection, "Gemma", 0, 4, chat_tuned=False)
    assert [i.id for s in chat.values() for i in s] == [i.id for s in base.values() for i in s]
    assert [i.seed for i in chat["default"]] == [i.seed for i in base["default"]]
    for c, b in zip(chat["default"], base["default"]):
        assert b.system == BASE_DEFAULT_FRAME + ("\n\n" + c.system if c.system else "")
    for shard in chat:  # roles and traits are untouched
        if shard != "default":
            assert [i.system for i in chat[shard]] == [i.system for i in base[shard]]
    assert chat["default"][0].system is None  # chat models: no system prompt at all


def test_formats_doc_quotes_the_base_default_frame() -> None:
    text = (DOCS / "formats.md").read_text()
    assert f"\n{BASE_DEFAULT_FRAME}\n" in text  # quoted exactly, on a line of its own
    assert "compare.md#base-models-in-the-axis-pipeline" in text


def test_base_default_prompt_as_rendered_text(gemma_tokenizer) -> None:  # type: ignore[no-untyped-def]
    selection = select(load_catalogue(), "quick")
    item = build_work(selection, "Gemma", 0, 4, chat_tuned=False)["default"][
        len(selection.questions) * 3
    ]
    messages = [
        {"role": "system", "content": item.system},
        {"role": "user", "content": item.question},
    ]
    conv = format_conversation(gemma_tokenizer, messages, add_generation_prompt=True)
    assert conv.format == "plain"
    assert conv.text == (
        f"<bos>{BASE_DEFAULT_FRAME}\n\nYou are Gemma.\n\nUser: {item.question}\n\nAssistant:"
    )


# --- steering a base model (tiny random models of one architecture) ---------------------------


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("steer")
    model = make_tiny_model(root / "model", hidden=64)
    catalogue = load_catalogue()
    roles = [r.name for r in select(catalogue, "quick").roles[:9]]
    runs = [tiny_axis_run(model, root / f"run{seed}", roles, seed) for seed in (0, 1)]
    return model, runs


def test_steering_a_base_model_with_an_axis(tiny_runs) -> None:  # type: ignore[no-untyped-def]
    model, (run_a, run_b) = tiny_runs
    lm = load_model(str(model))
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    axis = load_axis(run_b, lm)
    base = RunFolder(run_a).compared()
    reference = role_reference(base.roles, base.row(1), list(load_catalogue().roles.values()))
    settings = SteeringSettings(
        coefs=(0.0, 4.0),
        prompts=("My name is", "I am"),
        samples_per_prompt=2,
        sampling=SamplingConfig(max_new_tokens=8, temperature=0.7, top_p=0.9),
    )
    result = steer_base_model(lm, axis, 1, 10.0, reference, settings, judge_evidence=False)
    by_coef = {r["coef_frac"]: r for r in result["by_coefficient"]}
    assert set(by_coef) == {0.0, 4.0} and result["roles_compared"] == 9
    assert set(by_coef[4.0]["nearest_by_activation"]) <= set(base.roles)
    # coefficient 0 is plain generation: same seeds, same completions
    texts = ("My name is", "My name is", "I am", "I am")
    ids = [list(lm.tokenizer("<bos>" + t, add_special_tokens=False)["input_ids"]) for t in texts]
    sampling = SamplingConfig(max_new_tokens=8, temperature=0.7, top_p=0.9)
    plain = generate(lm, ids, sampling, reductions=(), seeds=[0, 1, 2, 3])
    zero = [c["completion"] for c in result["completions"] if c["coef_frac"] == 0.0]
    steered = [c["completion"] for c in result["completions"] if c["coef_frac"] == 4.0]
    assert zero == [g.text for g in plain if g.token_ids]
    assert steered != zero  # a large coefficient changes what the model writes
    assert all(torch.equal(before[k], v) for k, v in lm.model.state_dict().items())


def test_cli_compare_with_base_steering(tiny_runs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, (run_a, run_b) = tiny_runs
    out = tmp_path / "cmp"
    args = ["compare", str(run_a), str(run_b), "--out", str(out), "--steer-base"]
    args += ["--coefs", "0,2", "--samples", "1", "--steer-tokens", "6", "--permutations", "100"]
    assert main(args) == 0
    result = json.loads((out / "compare.json").read_text())
    assert result["mode"] == "same_architecture" and result["roles"]["shared"] == 9
    assert [r["coef_frac"] for r in result["steering"]["by_coefficient"]] == [0.0, 2.0]
    assert (out / "compare_steering.png").is_file()


def test_default_null_counts_the_roles_at_the_ends() -> None:
    roles = synthetic()
    mean = torch.stack(list(roles.values())).mean(0)
    beyond = mean.clone()
    beyond[:, 0] += 10.0  # past every role at the Assistant end
    run = make_run("a", roles, default=beyond)
    null = default_null(run, NAMES, 1)
    # the default is rank 1; as pseudo-defaults only role_00 and role_11 are at an end
    assert null["default_rank"] == 1
    assert sorted(null["null_rank"])[:3] == [1, 1, 2]
    assert null["p_extreme"] == pytest.approx(3 / 13)
    result = compare_runs(run, run, n_permutations=50, n_bootstrap=10)
    own = result["own_roles"]["a"]
    assert own["n_roles"] == N_ROLES and [n["layer"] for n in own["null"]] == [0, 1, 2]
    assert own["null"][1] == null
