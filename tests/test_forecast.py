"""Forecasting the next reply's axis position: grouped ridge CV, the forecaster file, the
forecast-triggered cap (live and in the drift condition) and `personaspace forecast`."""

from __future__ import annotations

import dataclasses
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_lm
from pipeline_fixtures import make_tiny_model

from personaspace.analysis.ridge import GroupedRidgeCV, fit_ridge, group_folds, grouped_r2
from personaspace.capture import SamplingConfig, capture_conversations
from personaspace.catalogue import Scenario
from personaspace.cli.main import main
from personaspace.conversation import format_conversation
from personaspace.errors import PersonaspaceError
from personaspace.experiments.conditions import Condition, baseline
from personaspace.experiments.drift import DriftSettings, drift_work, play_condition
from personaspace.experiments.forecast_capping import (
    condition_summary,
    forecast_condition,
    play_forecast_condition,
)
from personaspace.fileformat import save_vectors
from personaspace.interventions import calibrate
from personaspace.models import load_model
from personaspace.monitor import LiveChat, chat_turn
from personaspace.monitor.forecast import (
    Forecaster,
    ForecastGate,
    load_forecaster,
    prompt_states,
)
from personaspace.monitor.forecast_fit import fit_forecaster, turn_table
from personaspace.monitor.transcripts import parse_transcript
from personaspace.pipeline.replicas import ModelFacts
from personaspace.runfolder import RunFolder, load_axis
from personaspace.serve import ServeEngine
from personaspace.serve.schemas import PersonaspaceOptions
from personaspace.vectors import Axis, build_capping_config, save_calibration, save_capping_config
from personaspace.vectors.intervention import cap

USER_TURNS = ["Hi there", "Who are you?", "Tell me a secret", "Why?", "Ok, bye", "Sing!"]


def _axis(lm, seed: int = 1) -> Axis:  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    n, h = lm.adapter.n_layers, lm.adapter.hidden_size
    return Axis(lm.model_id, list(range(n)), torch.randn(n, h, generator=g), n, "test")


def _projection_forecaster(lm, axis: Axis, layer: int = 1) -> Forecaster:  # type: ignore[no-untyped-def]
    """forecast = the last prompt token's projection on the axis, exactly."""
    return Forecaster(
        lm.model_id,
        lm.adapter.hidden_size,
        lm.adapter.n_layers,
        layer,
        axis.source,
        axis.fingerprint(),
        ("projection",),
        np.ones(1),
        0.0,
        np.zeros(1),
        np.ones(1),
        1.0,
        0.0,
        "test",
    )


# --- grouped cross-validation ----------------------------------------------------------------


def test_grouped_folds_never_put_a_conversation_in_train_and_test() -> None:
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 23, size=211).astype(str)
    folds = group_folds(groups, 5)
    assert sorted(np.concatenate(folds).tolist()) == list(range(211))  # a partition
    for fold in folds:
        test = set(groups[fold].tolist())
        train = set(np.delete(groups, fold).tolist())
        assert test and not test & train
    cv = GroupedRidgeCV(rng.normal(size=(211, 3)), groups, n_folds=5)
    for split, inner in zip(cv.outer, cv.inner):
        assert not set(groups[split.train]) & set(groups[split.test])
        assert len(split.train) + len(split.test) == 211
        for s in inner:  # the alpha is chosen without the outer test rows, grouped too
            assert not set(s.train.tolist()) & set(split.test.tolist())
            assert not set(groups[s.train]) & set(groups[s.test])
    with pytest.raises(PersonaspaceError, match="cannot fill"):
        group_folds(["a", "a", "b"], 3)


def test_ridge_matches_scikit_learn() -> None:
    linear_model = pytest.importorskip("sklearn.linear_model")
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 60)) * rng.uniform(0.1, 5, 60), rng.normal(size=40)
    ours = fit_ridge(x, y, 3.0)
    xs = preprocessing.StandardScaler().fit_transform(x)
    theirs = linear_model.Ridge(alpha=3.0).fit(xs, y)
    assert np.allclose(ours.coef, theirs.coef_, atol=1e-8)
    assert np.allclose(ours.predict(x), theirs.predict(xs), atol=1e-8)


def test_a_known_linear_target_gives_r2_near_one_and_the_null_near_zero() -> None:
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(40), 6)
    x = rng.normal(size=(240, 30))
    y = x @ rng.normal(size=30) + 0.05 * rng.normal(size=240)
    report, _, _ = grouped_r2(x, y, groups, n_permutations=100, n_bootstrap=200)
    assert report.r2 > 0.98
    assert report.interval[0] > 0.95 and report.interval[1] <= 1.0
    assert -0.3 < report.null_mean < 0.05 and report.null_p95 < 0.1
    assert report.p_value == pytest.approx(1 / 101)
    noise, _, _ = grouped_r2(x, rng.normal(size=240), groups, n_permutations=20, n_bootstrap=0)
    assert noise.r2 < 0.1 and noise.p_value > 0.05


def test_grouped_cv_does_not_learn_conversation_identity() -> None:
    # The target is one random level per conversation, the features name the conversation:
    # folds that split conversations would score it near 1; grouped folds cannot.
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(30), 8)
    identity = rng.normal(size=(30, 20))[groups] + 0.01 * rng.normal(size=(240, 20))
    level = rng.normal(size=30)[groups]
    report, _, _ = grouped_r2(identity, level, groups, n_permutations=0, n_bootstrap=0)
    assert report.r2 < 0.15
    mixed, _, _ = grouped_r2(identity, level, np.arange(240), n_permutations=0, n_bootstrap=0)
    assert mixed.r2 > 0.8  # the same data with rows as groups: the leak is real


# --- the forecaster and its file ------------------------------------------------------------


def _tiny_transcripts(n: int = 6) -> list:  # type: ignore[type-arg]
    out = []
    for i in range(n):
        messages = []
        for k in range(3):
            messages += [
                {"role": "user", "content": USER_TURNS[(i + k) % len(USER_TURNS)]},
                {"role": "assistant", "content": f"Reply {i}.{k}: " + "ok " * (i % 3 + k)},
            ]
        out.append(parse_transcript({"messages": messages, "domain": "d"}, f"c{i}.json"))
    return out


def test_the_state_at_the_last_prompt_token_is_the_prompt_only_passs() -> None:
    lm = tiny_lm()
    axis = _axis(lm)
    transcripts = _tiny_transcripts(2)
    table = turn_table(lm, axis, transcripts, layer=1, embeddings=False)
    assert len(table) == 6 and table.turn == [0, 1, 2, 0, 1, 2]
    assert np.isnan(table.previous[0]) and table.previous[1] == table.target[0]
    prompts = []
    for t in transcripts:
        for k in range(3):
            history = t.messages[: 2 * k + 1]
            prompts.append(format_conversation(lm.tokenizer, history, add_generation_prompt=True))
    alone = prompt_states(lm, prompts, 1, batch_size=1)
    assert np.abs(alone - table.features.state).max() < 1e-4 * np.abs(alone).max()
    unit = axis.unit(1).double().numpy()
    assert np.allclose(table.features.projection, table.features.state @ unit)


def test_save_and_load_give_bit_identical_predictions(tmp_path: Path) -> None:
    lm = tiny_lm()
    axis = _axis(lm)
    table = turn_table(lm, axis, _tiny_transcripts(), layer=1, embeddings=False)
    f = fit_forecaster(lm, axis, table, ("state", "projection"), n_folds=2, floor_percentile=25)
    path = f.save(tmp_path / "f.safetensors")
    back = load_forecaster(path, lm, axis)
    assert np.array_equal(f.predict(table.features), back.predict(table.features))
    assert back.features == ("state", "projection") and back.layer == 1
    assert back.floor == float(np.percentile(table.target, 25))
    other = dataclasses.replace(lm, model_id="another-model")
    with pytest.raises(PersonaspaceError, match="fitted on tiny-llama"):
        load_forecaster(path, other, axis)
    with pytest.raises(PersonaspaceError, match="fitted on the axis"):
        load_forecaster(path, lm, _axis(lm, seed=9))


# --- forecast-triggered capping ------------------------------------------------------------


def test_forecast_triggered_capping_caps_exactly_the_turns_forecast_below_threshold() -> None:
    lm = tiny_lm()
    axis = _axis(lm)
    u = axis.unit(1)
    forecaster = _projection_forecaster(lm, axis)
    histories = [[{"role": "user", "content": t}] for t in USER_TURNS]
    prompts = [format_conversation(lm.tokenizer, h, add_generation_prompt=True) for h in histories]
    [last] = [c.last_prompt for c in capture_conversations(lm, prompts[:1], layers=[1])]
    expected = prompt_states(lm, prompts, 1, batch_size=1) @ u.double().numpy()
    assert last is not None and float(last[0] @ u) == pytest.approx(expected[0], abs=1e-5)
    threshold = float(np.median(expected))
    gate = ForecastGate(forecaster, threshold)
    config = SamplingConfig(max_new_tokens=6)
    always = [cap(1, u, 1e6)]
    capped = []
    for history, value in zip(histories, expected):
        turn = chat_turn(lm, axis, history, interventions=always, sampling=config, cap_gate=gate)
        assert turn.forecast is not None
        assert turn.forecast.forecast == pytest.approx(value, abs=1e-5)
        assert turn.forecast.capped == (turn.forecast.forecast < threshold)
        capped.append(turn.forecast.capped)
        if turn.forecast.capped:  # the cap ran at every prompt position
            assert turn.cap_engaged_prompt == {1: len(turn.prompt.input_ids)}
            same = chat_turn(lm, axis, history, interventions=always, sampling=config)
        else:
            assert turn.cap_engaged == {} and turn.cap_engaged_prompt == {}
            same = chat_turn(lm, axis, history, sampling=config)
        assert turn.token_ids == same.token_ids
        assert turn.to_json()["forecast"]["capped"] == turn.forecast.capped
        assert "forecast" not in same.to_json()
    assert 0 < sum(capped) < len(capped)
    chat = LiveChat(lm, axis, interventions=always, sampling=config, cap_gate=gate)
    for text in USER_TURNS[:3]:
        turn = chat.send(text)
        assert turn.forecast is not None and turn.capped == turn.forecast.capped


def test_the_drift_condition_with_extreme_thresholds_is_no_cap_or_always_cap(
    tmp_path: Path,
) -> None:
    lm = tiny_lm()
    axis = _axis(lm)
    u = axis.unit(1)
    forecaster = _projection_forecaster(lm, axis)
    scenarios = (
        Scenario("s1", "coding", "t", ("Hi", "More?")),
        Scenario("s2", "therapy", "t", ("I am sad", "Why?", "Ok")),
    )
    settings = DriftSettings(SamplingConfig(max_new_tokens=5, temperature=0.7, top_p=0.9, seed=0))
    capping = Condition("always", "cap", (cap(1, u, 0.5),), {"experiment_id": "always"})
    facts = ModelFacts.of(lm)

    def play(condition: Condition, gate: ForecastGate | None, name: str) -> list[dict]:  # type: ignore[type-arg]
        work = drift_work(facts, axis, scenarios, condition, [1], settings, tmp_path / name)
        if gate is None:
            return play_condition(lm, work)
        return play_forecast_condition(lm, work, gate)

    plain = play(baseline(), None, "none")
    capped = play(capping, None, "cap")
    never = play(
        forecast_condition(capping, ForecastGate(forecaster, -1e9), "x"),
        ForecastGate(forecaster, -1e9),
        "never",
    )
    every = play(
        forecast_condition(capping, ForecastGate(forecaster, 1e9), "x"),
        ForecastGate(forecaster, 1e9),
        "every",
    )
    assert [t["messages"] for t in never] == [t["messages"] for t in plain]
    assert [t["messages"] for t in every] == [t["messages"] for t in capped]
    assert all(not d["capped"] for t in never for d in t["forecast"])
    assert all(d["capped"] for t in every for d in t["forecast"])
    assert [len(t["forecast"]) for t in every] == [2, 3]
    row = condition_summary(every, plain, layer=1, floor=0.0, always_capped=False)
    assert row["share_turns_capped"] == 1.0 and row["n_replies"] <= 5


# --- the command line ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("forecast")
    folder = make_tiny_model(root / "model")
    lm = load_model(str(folder))
    run = root / "run"
    g = torch.Generator().manual_seed(3)
    save_vectors(
        run / "axis.safetensors",
        {"axis": torch.randn(3, 64, generator=g)},
        {"model_id": lm.model_id, "layers": [0, 1, 2], "n_layers": 3, "hidden_size": 64},
    )
    axis = load_axis(run, lm)
    convs = [format_conversation(lm.tokenizer, t.messages) for t in _tiny_transcripts(2)]
    cal = calibrate(lm, axis, convs, source="test")
    save_calibration(run / "calibration.safetensors", cal)
    save_capping_config(
        run / "capping.safetensors", build_capping_config(axis, cal, [(0, 2)], [25])
    )
    data = root / "transcripts.json"
    data.write_text(json.dumps([t.to_json() for t in _tiny_transcripts()]))
    return folder, run, data


def test_the_cli_fit_writes_the_forecaster_and_its_figures(
    tiny_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, run, data = tiny_run
    out = tmp_path / "f" / "forecaster.safetensors"
    args = ["forecast", "fit", str(data), "--axis", str(run), "--out", str(out), "--folds", "2"]
    assert main([*args, "--permutations", "5", "--bootstrap", "10", "--dtype", "float32"]) == 0
    printed = capsys.readouterr().out
    assert "position" in printed and "change" in printed
    f = load_forecaster(out)
    assert f.features == ("embedding", "state") and f.hidden_size == 64
    fit = json.loads((out.parent / "fit.json").read_text())
    assert fit["n_rows"] == 18 and fit["n_conversations"] == 6
    assert set(fit["position"]) == {"embedding", "state", "projection", "embedding+state"}
    assert fit["position"]["state"]["n_permutations"] == 5
    rows = (out.parent / "fit.csv").read_text().splitlines()
    assert len(rows) == 19 and rows[0].startswith("conversation,turn")
    assert main(["forecast", "show", str(out)]) == 0
    assert "floor" in capsys.readouterr().out
    # Applying it to another model: one line, exit 2.
    other = make_tiny_model(tmp_path / "other")
    bad = ["forecast", "eval", str(out), str(data), "--axis", str(run), "--model", str(other)]
    assert main(bad) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the forecaster was fitted on" in err


def test_cli_fit_refuses_transcripts_without_user_turns(
    tiny_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, run, _ = tiny_run
    empty = tmp_path / "drift" / "transcripts" / "none"
    empty.mkdir(parents=True)
    (empty / "s.json").write_text(json.dumps({"messages": [{"role": "system", "content": "x"}]}))
    out = tmp_path / "f" / "forecaster.safetensors"
    for source in (tmp_path / "drift", empty / "s.json"):
        assert main(["forecast", "fit", str(source), "--axis", str(run), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "personaspace: error:" in err
    assert not (tmp_path / "f").exists()


def _saved_projection_forecaster(folder: Path, run: Path, out: Path) -> Path:
    lm = load_model(str(folder))
    return _projection_forecaster(lm, load_axis(run, lm)).save(out)


@pytest.mark.parametrize(("threshold", "verdict"), [("1e9", "cap applied"), ("-1e9", "no cap")])
def test_chat_caps_when_the_forecast_is_below_the_threshold(
    tiny_run: tuple[Path, Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    threshold: str,
    verdict: str,
) -> None:
    folder, run, _ = tiny_run
    path = _saved_projection_forecaster(folder, run, tmp_path / "f.safetensors")
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\nAgain\n"))
    args = ["chat", "--axis", str(run), "--cap", "layers_0:2-p25", "--max-new-tokens", "4"]
    assert main([*args, "--forecaster", str(path), f"--cap-when-forecast={threshold}"]) == 0
    out = capsys.readouterr().out
    assert out.count("  forecast ") == 2 and out.count(verdict) == 2
    engaged = out.count("cap layers_0:2-p25: engaged") + out.count("not engaged")
    assert engaged == 2


def test_chat_and_serve_refuse_a_forecaster_of_another_axis(
    tiny_run: tuple[Path, Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder, run, _ = tiny_run
    lm = load_model(str(folder))
    path = _projection_forecaster(lm, _axis(lm, seed=7)).save(tmp_path / "f.safetensors")
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\n"))
    args = ["--axis", str(run), "--forecaster", str(path), "--cap-when-forecast", "floor"]
    assert main(["chat", *args, "--cap", "layers_0:2-p25"]) == 2
    assert main(["serve", *args, "--port", "0"]) == 2
    for line in capsys.readouterr().err.strip().splitlines():
        assert "the forecaster was fitted on the axis" in line
    assert main(["chat", "--axis", str(run), "--forecaster", str(path)]) == 2
    assert "go together" in capsys.readouterr().err


def test_served_caps_follow_the_forecast(tiny_run: tuple[Path, Path, Path]) -> None:
    folder, run, _ = tiny_run
    lm = load_model(str(folder))
    axis = load_axis(run, lm)
    capping = RunFolder(run).capping()
    for threshold, capped in ((1e9, True), (-1e9, False)):
        gate = ForecastGate(_projection_forecaster(lm, axis), threshold)
        engine = ServeEngine(lm, axis, capping=capping, cap_gate=gate)
        plan = engine.plan(PersonaspaceOptions(cap="layers_0:2-p25"))
        sampling = engine.sampling(None, None, None, 4)
        result = engine.turn([{"role": "user", "content": "Hi"}], plan, sampling)
        extension = engine.extension(result, plan, sampling.seed)
        assert extension["cap"]["forecast"]["capped"] is capped
        assert bool(result.cap_engaged_prompt) is capped
        assert engine.info()["forecast"]["threshold"] == threshold
    plain = ServeEngine(lm, axis, capping=capping)
    plan = plain.plan(PersonaspaceOptions(cap="layers_0:2-p25"))
    sampling = plain.sampling(None, None, None, 4)
    result = plain.turn([{"role": "user", "content": "Hi"}], plan, sampling)
    assert "forecast" not in plain.extension(result, plan, sampling.seed)["cap"]
    assert "forecast" not in plain.info()


def test_the_cli_compare_writes_the_three_condition_table(
    tiny_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, run, _ = tiny_run
    path = _saved_projection_forecaster(folder, run, tmp_path / "f.safetensors")
    catalogue = tmp_path / "catalogue" / "scenarios"
    catalogue.mkdir(parents=True)
    turns = ["Hi", "More?", "Why?", "Ok", "And?", "Go on", "Hm", "Bye"]
    scenario = {"id": "0-tiny", "domain": "coding", "title": "t", "user_turns": turns}
    (catalogue / "tiny.json").write_text(json.dumps([scenario]))
    out = tmp_path / "drift"
    args = ["forecast", "compare", "--axis", str(run), "--forecaster", str(path)]
    args += ["--cap", "layers_0:2-p25", "--cap-when-forecast=1e9", "--out", str(out)]
    args += ["--catalogue", str(catalogue.parent), "--domains", "coding", "--scenarios", "1"]
    args += ["--capability-items", "2", "--max-new-tokens", "6"]
    assert main([*args, "--dtype", "float32"]) == 0
    data = json.loads((out / "forecast_capping.json").read_text())
    policies = [r["policy"] for r in data["rows"]]
    assert policies == ["no capping", "always-on cap", "forecast-triggered cap"]
    none, always, triggered = data["rows"]
    assert none["share_turns_capped"] == 0.0 and always["share_turns_capped"] == 1.0
    assert triggered["share_turns_capped"] == 1.0  # every forecast is below 1e9
    assert triggered["capability"]["share_capped"] == 1.0
    assert triggered["capability"]["accuracy"] == always["capability"]["accuracy"]
    assert none["share_replies_changed"] == 0.0 and triggered["forecast_seconds_per_turn"] > 0
    assert (out / "forecast_capping.csv").read_text().startswith("policy,")
    assert "forecast-triggered cap" in capsys.readouterr().out
