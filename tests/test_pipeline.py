"""The axis pipeline on a tiny model: outputs, exact aggregation, resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pipeline_fixtures import make_tiny_model, make_user_catalogue

from personaspace import PersonaspaceError
from personaspace.fileformat import load_vectors
from personaspace.pipeline import AxisConfig, run_axis
from personaspace.runfolder import RunFolder
from personaspace.vectors import load_capping_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("pipeline")
    return make_tiny_model(root / "model"), make_user_catalogue(root / "catalogue")


def config(setup, **kw) -> AxisConfig:  # type: ignore[no-untyped-def]
    model, catalogue = setup
    base = dict(
        model=str(model),
        preset="tiny",
        catalogue=str(catalogue),
        catalogue_replace=True,
        judge="none",
        min_count=1,
        max_new_tokens=8,
        batch_size=4,
    )
    return AxisConfig.from_json({**base, **kw})


def test_outputs_and_exact_aggregation(setup, tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = run_axis(config(setup), tmp_path)
    for name in (
        "responses.jsonl",
        "scores.jsonl",
        "summary.json",
        "report.html",
        "axis.safetensors",
        "vectors/roles.safetensors",
        "vectors/default.safetensors",
        "vectors/traits.safetensors",
    ):
        assert (tmp_path / name).is_file(), name
    records = [json.loads(x) for x in (tmp_path / "responses.jsonl").read_text().splitlines()]
    # tiny preset: 1 default prompt x 2 questions, 4 roles x 1 prompt x 2 questions,
    # 2 traits x 1 pair x 2 questions x (pos, neg)
    kinds = [r["kind"] for r in records]
    assert (kinds.count("default"), kinds.count("role"), kinds.count("trait_pos")) == (2, 8, 4)
    assert len({r["id"] for r in records}) == len(records)
    roles, _ = load_vectors(tmp_path / "vectors" / "roles.safetensors")
    # tiny deals one role from each of the first four categories in sorted order
    assert set(roles) == {"poet", "therapist", "oracle", "ghost"}
    # Recompute every vector from the shards' per-response activations.
    per_role = {}
    for name in roles:
        _, vecs = RunFolder(tmp_path).load_shard(f"role/{name}")
        per_role[name] = vecs.float().mean(0)
        assert torch.equal(roles[name], per_role[name])
    _, default_vecs = RunFolder(tmp_path).load_shard("default")
    axis, meta = load_vectors(tmp_path / "axis.safetensors")
    expected = default_vecs.float().mean(0) - torch.stack(list(per_role.values())).mean(0)
    assert torch.allclose(axis["axis"], expected, atol=1e-6)
    assert meta["layers"] == [0, 1, 2] and "toward the Assistant" in meta["definition"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["analysis"]["analysis_layer"] == 1
    assert set(summary["timings"]) >= {"load_model_s", "generate_s", "judge_s", "total_s"}
    assert run.summary["counts"]["roles_kept"] == 4
    # calibrated on its own replies (10 default + role replies, fewer than the 64 limit)
    cal = RunFolder(tmp_path).calibration()
    assert cal.n_conversations == 10 and cal.layers == [0, 1, 2]
    assert (cal.percentiles.diff(dim=1) >= 0).all() and (cal.norms > 0).all()
    capping = load_capping_config(tmp_path / "capping.safetensors")
    assert capping.ids == ["layers_0:3-p10", "layers_0:3-p25", "layers_0:3-p50"]
    assert capping.interventions("layers_0:3-p25")[1].amount == cal.tau(1, 25)
    assert summary["calibration"]["capping_experiments"] == capping.ids


def test_changed_settings_are_refused_unless_forced(setup, tmp_path) -> None:  # type: ignore[no-untyped-def]
    run_axis(config(setup), tmp_path)
    with pytest.raises(PersonaspaceError, match=r"different settings \(max_new_tokens\)"):
        run_axis(config(setup, max_new_tokens=9), tmp_path)
    run_axis(config(setup, batch_size=2), tmp_path)  # batch size does not change results
    run = run_axis(config(setup, max_new_tokens=9), tmp_path, force=True)
    assert run.summary["config"]["max_new_tokens"] == 9


def test_analysis_settings_reaggregate_without_generating(setup, tmp_path) -> None:  # type: ignore[no-untyped-def]
    run_axis(config(setup), tmp_path)
    responses = (tmp_path / "responses.jsonl").read_bytes()
    shard_files = sorted((tmp_path / "shards").rglob("*"))
    stamps = [f.stat().st_mtime_ns for f in shard_files]
    run = run_axis(config(setup, analysis_layer=0, normalize_rows=True), tmp_path)
    assert run.summary["analysis"]["analysis_layer"] == 0
    assert run.summary["counts"]["generated_tokens_this_session"] == 0
    assert [f.stat().st_mtime_ns for f in sorted((tmp_path / "shards").rglob("*"))] == stamps
    assert (tmp_path / "responses.jsonl").read_bytes() == responses
    saved = json.loads((tmp_path / "config.json").read_text())["config"]
    assert (saved["analysis_layer"], saved["normalize_rows"]) == (0, True)


def test_unreachable_judge_fails_before_generating(setup, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = config(setup, judge="openai", judge_base_url="http://127.0.0.1:9/v1")
    with pytest.raises(PersonaspaceError, match="judge endpoint .* is unreachable"):
        run_axis(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "shards").exists()


def test_write_error_mid_run_keeps_finished_shards(setup, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    real = RunFolder.save_shard
    calls = {"n": 0}

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(RunFolder, "save_shard", flaky)
    with pytest.raises(PersonaspaceError, match="No space left on device.*resume"):
        run_axis(config(setup), tmp_path)
    assert len(list((tmp_path / "shards").glob("*.safetensors"))) == 2
    monkeypatch.setattr(RunFolder, "save_shard", real)
    run_axis(config(setup), tmp_path)
    assert len(list((tmp_path / "shards").glob("*.safetensors"))) == 7


def _cli(setup, out: Path) -> list[str]:  # type: ignore[no-untyped-def]
    model, catalogue = setup
    return [
        sys.executable,
        "-m",
        "personaspace.cli.main",
        "axis",
        "--model",
        str(model),
        "--preset",
        "tiny",
        "--catalogue",
        str(catalogue),
        "--replace-catalogue",
        "--judge",
        "none",
        "--min-count",
        "1",
        "--max-new-tokens",
        "48",
        "--batch-size",
        "2",
        "--out",
        str(out),
    ]


def test_kill_9_and_resume_gives_identical_outputs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    slow = (
        make_tiny_model(tmp_path / "model", hidden=256, layers=6),
        make_user_catalogue(tmp_path / "catalogue"),
    )
    reference = tmp_path / "reference"
    subprocess.run(_cli(slow, reference), check=True, capture_output=True, timeout=300)
    total = len(list((reference / "shards").glob("*.safetensors")))
    killed_mid_run = False
    for attempt in range(3):
        out = tmp_path / f"killed{attempt}"
        proc = subprocess.Popen(
            _cli(slow, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list((out / "shards").glob("*.safetensors"))) >= 2:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait()
        finished = len(list((out / "shards").glob("*.safetensors")))
        if proc.returncode == -signal.SIGKILL and finished < total:
            killed_mid_run = True
            break
    assert killed_mid_run, "the run always finished before it could be killed"
    assert not (out / "summary.json").exists()
    subprocess.run(_cli(slow, out), check=True, capture_output=True, timeout=300)
    assert (out / "responses.jsonl").read_text() == (reference / "responses.jsonl").read_text()
    for name in ("axis.safetensors", "vectors/roles.safetensors", "vectors/traits.safetensors"):
        ours, _ = load_vectors(out / name)
        theirs, _ = load_vectors(reference / name)
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name
        assert all(torch.isfinite(ours[k]).all() for k in ours), name


def test_calibrate_command(setup, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from personaspace.cli.main import main

    run_axis(config(setup), tmp_path / "run")
    run = str(tmp_path / "run")
    assert main(["calibrate", run, "--ranges", "1:3", "--percentiles", "5,95"]) == 0
    capping = load_capping_config(tmp_path / "run" / "capping.safetensors")
    assert capping.ids == ["layers_1:3-p5", "layers_1:3-p95"]
    assert "layers_1:3-p95" in capsys.readouterr().out
    transcript = tmp_path / "t.json"
    transcript.write_text(
        json.dumps([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
    )
    assert main(["calibrate", run, "--conversations", str(transcript)]) == 0
    cal = RunFolder(tmp_path / "run").calibration()
    assert cal.n_conversations == 1 and cal.source == "1 conversations from 1 file(s)"
    before = (tmp_path / "run" / "capping.safetensors").read_bytes()
    for bad, message in (
        (["--ranges", "3:1"], "not a layer range"),
        (["--ranges", "2:9"], "layer 3 of range 2:9"),
        (["--percentiles", "x"], "not a list of numbers"),
        (["--percentiles", "120"], "outside 0..100"),
    ):
        assert main(["calibrate", run, *bad]) == 2
        assert message in capsys.readouterr().err
    assert (tmp_path / "run" / "capping.safetensors").read_bytes() == before  # nothing lost
    assert main(["calibrate", str(tmp_path)]) == 2
    assert "holds no axis.safetensors" in capsys.readouterr().err


@pytest.mark.parametrize("preset", ["tiny", "quick", "full"])
def test_every_preset_can_keep_roles_with_its_own_defaults(preset: str) -> None:
    from personaspace.catalogue import load_catalogue, select
    from personaspace.catalogue.presets import preset_spec

    selection = select(load_catalogue(), preset)
    replies_per_role = min(len(r.prompts) for r in selection.roles) * len(selection.questions)
    config = AxisConfig(preset=preset)
    assert config.kept_per_role == preset_spec(preset).min_count
    assert 1 <= config.kept_per_role <= replies_per_role, (preset, replies_per_role)
    assert len(selection.roles) >= 3  # enough roles for a persona space when they are kept


def test_tiny_preset_finishes_with_its_defaults(setup, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, catalogue = setup
    config = AxisConfig.from_json(
        {
            "model": str(model),
            "preset": "tiny",
            "catalogue": str(catalogue),
            "catalogue_replace": True,
            "judge": "none",
            "max_new_tokens": 8,
        }
    )
    run = run_axis(config, tmp_path)
    assert run.verdict is None and run.summary["counts"]["roles_kept"] == 4
    assert (tmp_path / "axis.safetensors").is_file()


def test_too_few_roles_writes_what_it_has_with_the_verdict(setup, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from personaspace.cli.main import main

    run_axis(config(setup), tmp_path)  # a full run: axis, calibration, report
    # three kept replies per role cannot be met by the tiny preset's two: no persona space
    run = run_axis(config(setup, min_count=3), tmp_path)
    assert run.analysis is None and run.summary["analysis"] is None
    assert run.verdict is not None and run.verdict.startswith("only 0 roles kept at least 3")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["verdict"] == run.verdict and summary["counts"]["roles_kept"] == 0
    assert (tmp_path / "responses.jsonl").is_file() and (tmp_path / "vectors").is_dir()
    for stale in ("axis.safetensors", "calibration.safetensors", "report.html"):
        assert not (tmp_path / stale).exists(), stale
    model, catalogue = setup
    args = ["axis", "--model", str(model), "--preset", "tiny", "--catalogue", str(catalogue)]
    args += ["--replace-catalogue", "--judge", "none", "--max-new-tokens", "8", "--batch-size"]
    assert main([*args, "4", "--min-count", "3", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "verdict: no persona space: only 0 roles kept" in printed
    # the stored replies re-aggregate into a persona space again, with nothing generated
    again = run_axis(config(setup), tmp_path)
    assert again.verdict is None and again.summary["counts"]["generated_tokens_this_session"] == 0
    assert (tmp_path / "axis.safetensors").is_file()


def test_every_run_reports_diagnostics_nulls_and_validation(
    setup, tmp_path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    from personaspace.cli.main import main

    monkeypatch.setenv("PERSONASPACE_CACHE", str(tmp_path / "cache"))
    run = run_axis(config(setup, analysis_layer="auto"), tmp_path / "run")
    d = run.summary["diagnostics"]
    assert d["analysis_layer"]["chosen_by"] == "held-out default-vs-role AUC (auto)"
    assert d["analysis_layer"]["layer"] == d["best_layer_by_auc"]
    assert run.summary["analysis"]["analysis_layer"] == d["best_layer_by_auc"]
    assert len(d["held_out_auc"]) == 3 and len(d["split_half_questions"]) == 3
    boot = d["bootstrap"]["cos_axis_pc1"]
    assert boot["low"] <= boot["estimate"] <= boot["high"]
    null = d["random_init_null"]
    assert null["model"].startswith("random-init:") and len(null["cos_axis_pc1"]) == 3
    assert isinstance(d["verdict"], list)
    # the built-in transcripts are longer than the tiny model's 512 characters: said, not hidden
    assert run.summary["validation"]["passed"] is False
    assert "longer than" in run.summary["validation"]["error"]
    cached = list((tmp_path / "cache" / "nulls").glob("*.safetensors"))
    assert len(cached) == 1
    # re-aggregating reads the null from its cache: the same figures, no new file
    again = run_axis(config(setup, analysis_layer="auto", score_threshold=2), tmp_path / "run")
    assert again.summary["diagnostics"]["random_init_null"] == null
    assert list((tmp_path / "cache" / "nulls").glob("*.safetensors")) == cached
    assert "random-init" in (tmp_path / "run" / "report.html").read_text()
    # personaspace validate on the finished run
    short = tmp_path / "short"
    short.mkdir()
    for name, expect, last in (("calm", "stable", "Sure."), ("slide", "drifting", "Beloved.")):
        chat = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Sure."}]
        chat += [{"role": "user", "content": "And?"}, {"role": "assistant", "content": last}]
        (short / f"{name}.json").write_text(json.dumps({"expect": expect, "messages": chat}))
    args = ["validate", str(tmp_path / "run"), "--transcripts", str(short)]
    assert main([*args, "--directions", "5"]) == 0
    out = capsys.readouterr().out
    assert "conversations as expected" in out
    assert json.loads((tmp_path / "run" / "validate.json").read_text())["null"]["directions"] == 5
    assert main(["validate", str(tmp_path / "run"), "--directions", "0"]) == 2
    assert "--directions is 0" in capsys.readouterr().err


def test_no_null_and_a_bad_layer_word(setup, tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = run_axis(config(setup, null="none"), tmp_path)
    assert "random_init_null" not in run.summary["diagnostics"]
    with pytest.raises(PersonaspaceError, match="analysis_layer is 'middle'"):
        config(setup, analysis_layer="middle")
    with pytest.raises(PersonaspaceError, match="null is 'shuffled'"):
        config(setup, null="shuffled")


def test_role_prompts_follow_the_character_card_and_old_runs_resume_without(
    setup, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from personaspace.catalogue import load_catalogue
    from personaspace.pipeline.work import character_card

    run_axis(config(setup, null="none"), tmp_path / "card")
    catalogue = load_catalogue(str(setup[1]), replace=True)
    lines = (tmp_path / "card" / "responses.jsonl").read_text().splitlines()
    roles = [r for r in map(json.loads, lines) if r["kind"] == "role"]
    for r in roles:
        role = catalogue.roles[r["name"]]
        assert r["system"] == f"{character_card(role)} {role.prompts[r['prompt_index']]}"
    plain = run_axis(config(setup, null="none", role_card=False), tmp_path / "plain")
    assert plain.verdict is None
    # a folder made before the card existed has no role_card in its config: it asked the
    # prompts alone, so it resumes without the card and is refused with it
    path = tmp_path / "plain" / "config.json"
    stored = json.loads(path.read_text())
    del stored["config"]["role_card"]
    path.write_text(json.dumps(stored))
    again = run_axis(config(setup, null="none", role_card=False), tmp_path / "plain")
    assert again.summary["counts"]["generated_tokens_this_session"] == 0
    with pytest.raises(PersonaspaceError, match="role_card"):
        run_axis(config(setup, null="none"), tmp_path / "plain")
