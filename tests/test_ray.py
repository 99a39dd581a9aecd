"""The axis pipeline on Ray workers: byte-identical to one process, a killed worker's shards
retried elsewhere, a killed driver resumed, and one-line errors for bad input; drift and
cap-eval on Ray workers (one condition or setting each): byte-identical to one process.

One local Ray instance (2 CPUs, so 2 workers of 1 thread) serves the whole module. Without
the extra (`pip install -e '.[ray]'`) these tests skip, except under CI=true, where they
fail: CI must run them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from pipeline_fixtures import make_tiny_model, make_user_catalogue

from personaspace.cli.main import main
from personaspace.errors import PersonaspaceError
from personaspace.experiments import load_run_capping
from personaspace.experiments.consistency_drift import consistency_by_condition
from personaspace.judge.consistency import make_consistency_judge
from personaspace.judge.personas import assistant_persona
from personaspace.pipeline import AxisConfig, run_axis
from personaspace.pipeline.distributed import RayOptions
from personaspace.runfolder import RunFolder

SETTINGS = dict(
    preset="tiny",
    catalogue_replace=True,
    judge="none",
    min_count=1,
    max_new_tokens=32,
    batch_size=1,  # groups of 4 replies: 5 groups for 2 workers
    device="cpu",
    dtype="float32",
)
# Files that must be equal byte for byte (the summary is compared without its timings).
SAME_BYTES = (
    "config.json",
    "responses.jsonl",
    "scores.jsonl",
    "vectors/roles.safetensors",
    "vectors/default.safetensors",
    "vectors/traits.safetensors",
    "axis.safetensors",
)
# The monitor calibration's projection percentiles are measured in the driver, whose thread
# count differs from the reference's: they agree to float rounding (measured 9.3e-10 on this
# machine), so these files are compared tensor by tensor (and their metadata exactly).
SAME_TENSORS = ("calibration.safetensors", "capping.safetensors")


def _same_tensors(ours: Path, reference: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(ours), "pt") as a, safe_open(str(reference), "pt") as b:
        keys = sorted(a.keys())
        assert a.metadata() == b.metadata() and keys == sorted(b.keys())
        for key in keys:
            torch.testing.assert_close(a.get_tensor(key), b.get_tensor(key), rtol=0, atol=1e-7)


def _ray():  # type: ignore[no-untyped-def]
    try:
        import ray
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "ray is not installed, so the Ray tests cannot run: pip install -e '.[ray]'"
            )
        pytest.skip("ray is not installed (pip install -e '.[ray]')")
    return ray


@pytest.fixture(scope="module")
def cluster():  # type: ignore[no-untyped-def]
    ray = _ray()
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("ray")
    return make_tiny_model(root / "model"), make_user_catalogue(root / "catalogue")


def _config(setup) -> AxisConfig:  # type: ignore[no-untyped-def]
    model, catalogue = setup
    return AxisConfig.from_json({**SETTINGS, "model": str(model), "catalogue": str(catalogue)})


@pytest.fixture(scope="module")
def reference(setup, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("reference") / "run"
    with threads(1):  # as each Ray worker computes: float sums depend on the thread count
        run_axis(_config(setup), out)
    return out


@contextmanager
def threads(count: int) -> Iterator[None]:
    """torch computing on ``count`` threads inside the block (``--threads`` sets it too)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _summary(out: Path, resumed: bool) -> dict:  # type: ignore[type-arg]
    summary = json.loads((out / "summary.json").read_text())
    summary.pop("timings")
    summary.pop("generated_tokens_per_s", None)
    if resumed:  # a resumed session generated only what was left
        summary["counts"].pop("generated_tokens_this_session")
    return summary  # type: ignore[no-any-return]


def assert_same_run(ours: Path, reference: Path, *, resumed: bool = False) -> None:
    for name in SAME_BYTES:
        assert (ours / name).read_bytes() == (reference / name).read_bytes(), name
    for name in SAME_TENSORS:
        _same_tensors(ours / name, reference / name)
    # (a driver killed mid-write may leave a hidden temp file there, never read)
    shards = sorted(p.name for p in (reference / "shards").glob("*.safetensors"))
    assert sorted(p.name for p in (ours / "shards").glob("*.safetensors")) == shards
    for name in shards:
        assert (ours / "shards" / name).read_bytes() == (reference / "shards" / name).read_bytes()
    assert _summary(ours, resumed) == _summary(reference, resumed)


def test_two_workers_write_what_one_process_writes(cluster, setup, reference, tmp_path) -> None:  # type: ignore[no-untyped-def]
    seen: list[tuple[int, int]] = []
    run = run_axis(
        _config(setup),
        tmp_path / "run",
        ray=RayOptions(workers=2),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert_same_run(tmp_path / "run", reference)
    assert seen[0] == (0, 18) and seen[-1] == (18, 18)  # one bar over both workers
    assert {"workers_s", "generate_s", "judge_s"} <= set(run.summary["timings"])


def _worker_computing(method: bytes = b"ShardWorker.run_group") -> int | None:
    """The pid of a Ray worker process computing an item (Ray titles it by the method)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"ray::" + method):
                return int(entry.name)
    return None


@contextmanager
def killing_one_worker(method: bytes = b"ShardWorker.run_group") -> Iterator[list[int]]:
    """Within the block, the first worker seen computing an item is killed (its pid kept)."""
    killed: list[int] = []
    stop = threading.Event()

    def killer() -> None:
        while not stop.is_set() and not killed:
            pid = _worker_computing(method)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.005)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        yield killed
    finally:
        stop.set()
        thread.join()


def test_a_worker_killed_mid_shard_is_retried_elsewhere_with_nothing_duplicated(  # type: ignore[no-untyped-def]
    cluster, setup, reference, tmp_path, monkeypatch
) -> None:
    saved: Counter[str] = Counter()
    real = RunFolder.save_shard

    def counting(folder, shard, *args, **kwargs):  # type: ignore[no-untyped-def]
        saved[shard] += 1
        return real(folder, shard, *args, **kwargs)

    monkeypatch.setattr(RunFolder, "save_shard", counting)
    events: list[str] = []
    with killing_one_worker() as killed:
        run_axis(
            _config(setup), tmp_path / "run", ray=RayOptions(workers=2), on_event=events.append
        )
    assert killed, "no worker was seen computing a group"
    assert any("died during shards" in e for e in events), events
    assert_same_run(tmp_path / "run", reference)
    assert set(saved.values()) == {1} and len(saved) == 7  # every shard written once


def _cli(setup, out: Path, *extra: str) -> list[str]:  # type: ignore[no-untyped-def]
    model, catalogue = setup
    return [
        sys.executable,
        "-m",
        "personaspace.cli.main",
        "axis",
        *("--model", str(model), "--preset", "tiny", "--catalogue", str(catalogue)),
        *("--replace-catalogue", "--judge", "none", "--min-count", "1"),
        *("--max-new-tokens", "32", "--batch-size", "1", "--device", "cpu"),
        *("--dtype", "float32", "--out", str(out), *extra),
    ]


def test_a_killed_driver_resumes_from_the_finished_shards(  # type: ignore[no-untyped-def]
    cluster, setup, reference, tmp_path
) -> None:
    killed_mid_run = False
    for attempt in range(3):
        out = tmp_path / str(attempt) / "run"  # named as the reference (the calibration says)
        command = _cli(setup, out, "--ray", cluster, "--workers", "2")
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list((out / "shards").glob("*.safetensors"))) >= 2:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait()
        finished = len(list((out / "shards").glob("*.safetensors")))
        if proc.returncode == -signal.SIGKILL and finished < 7:
            killed_mid_run = True
            break
    assert killed_mid_run, "the run always finished before it could be killed"
    assert not (out / "summary.json").exists()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert_same_run(out, reference, resumed=True)


def test_a_worker_that_cannot_load_the_model_names_its_node(cluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ray = _ray()
    config = AxisConfig(model=str(tmp_path / "no-such-model"), preset="tiny", judge="none")
    with pytest.raises(PersonaspaceError) as err:
        run_axis(config, tmp_path / "run", ray=RayOptions(workers=1))
    node = ray.util.get_node_ip_address()
    assert f"the worker on node {node} could not load the model" in str(err.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ray", "--workers", "0"], "--workers is 0: use 1 or more"),
        (["--threads", "0"], "--threads is 0: use 1 or more"),
        (["--workers", "2"], "--workers is given without --ray"),
        (["--ray", "127.0.0.1:9"], "the Ray cluster at 127.0.0.1:9 is unreachable"),
        (["--ray", "nonsense"], "is not HOST:PORT"),
        (["--ray", "{cluster}", "--device", "cuda", "--workers", "1"], "has no GPU"),
        (["--ray", "{cluster}", "--workers", "3"], "--workers is 3 but the Ray cluster has 2 CPUs"),
    ],
)
def test_bad_ray_input_is_one_line_exit_2_and_writes_nothing(  # type: ignore[no-untyped-def]
    cluster, setup, tmp_path, capsys, extra, message
) -> None:
    out = tmp_path / "run"
    args = _cli(setup, out, *(e.format(cluster=cluster) for e in extra))[3:]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_more_gpus_than_the_cluster_has_is_refused() -> None:
    from personaspace.pipeline.distributed import plan_workers

    with pytest.raises(PersonaspaceError, match="workers is 9 but the Ray cluster has 8 GPUs"):
        plan_workers(RayOptions(workers=9), "auto", cluster_gpus=8, cluster_cpus=64)


@pytest.mark.parametrize("command", ["axis", "drift", "cap-eval"])
def test_ray_not_installed_is_one_line_exit_2(
    setup, tmp_path, capsys, monkeypatch, command
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    out = tmp_path / "run"
    if command == "axis":
        args = _cli(setup, out, "--ray")[3:]
    else:  # refused before the axis is read
        args = _experiment(command, setup, tmp_path / "no-axis", out, "--ray")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "Ray is not installed: install the extra: pip install 'personaspace[ray]'" in err
    assert len(err.splitlines()) == 1 and not out.exists()


# drift and cap-eval ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """A catalogue of two short scenarios (the built-in ones outgrow the tiny model's 512
    positions), named to come first in their domains."""
    folder = tmp_path_factory.mktemp("scenarios")
    (folder / "scenarios").mkdir()
    scripts = [
        {
            "id": f"{domain}-000",
            "domain": domain,
            "title": domain,
            "user_turns": [f"{domain} {i}?" for i in range(8)],
        }
        for domain in ("coding", "therapy")
    ]
    (folder / "scenarios" / "s.json").write_text(json.dumps(scripts))
    return folder


def _experiment(command: str, setup, reference: Path, out: Path, *extra: str) -> list[str]:  # type: ignore[no-untyped-def]
    model, _ = setup
    return [
        command,
        *("--axis", str(reference), "--model", str(model), "--device", "cpu"),
        *("--dtype", "float32", "--out", str(out), *extra),
    ]


def _drift_args(reference: Path, scenarios: Path) -> list[str]:
    [cap, *_] = load_run_capping(reference).ids
    return [
        *("--catalogue", str(scenarios), "--domains", "coding,therapy", "--scenarios", "1"),
        *("--max-new-tokens", "4", "--cap", cap),
    ]


CAP_EVAL_ARGS = (
    *("--judge", "none", "--limit", "2", "--steer", "0.5"),
    *("--persona-max-new-tokens", "4", "--capability-max-new-tokens", "3"),
)


def assert_same_tree(ours: Path, reference: Path) -> None:
    """Every file of ``reference`` (and no other) in ``ours``, byte for byte."""
    files = sorted(p.relative_to(reference) for p in reference.rglob("*") if p.is_file())
    assert sorted(p.relative_to(ours) for p in ours.rglob("*") if p.is_file()) == files
    for name in files:
        assert (ours / name).read_bytes() == (reference / name).read_bytes(), name


@pytest.fixture(scope="module")
def alone(setup, reference, scenarios, tmp_path_factory) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """drift and cap-eval run in this process: what a Ray run must write."""
    outs = {}
    for command in ("drift", "cap-eval"):
        out = tmp_path_factory.mktemp(command) / "out"
        extra = _drift_args(reference, scenarios) if command == "drift" else CAP_EVAL_ARGS
        with threads(2):  # --threads 1 must win over this process's own count
            assert main(_experiment(command, setup, reference, out, *extra, "--threads", "1")) == 0
            assert torch.get_num_threads() == 1
        outs[command] = out
    return outs


@pytest.mark.parametrize("command", ["drift", "cap-eval"])
def test_experiments_on_two_workers_write_what_one_process_writes(  # type: ignore[no-untyped-def]
    cluster, setup, reference, scenarios, alone, tmp_path, command
) -> None:
    # drift: 2 conditions of 2 conversations; cap-eval: 5 settings (none, 3 caps, 1 steer)
    extra = _drift_args(reference, scenarios) if command == "drift" else CAP_EVAL_ARGS
    ray_args = ("--ray", cluster, "--workers", "2")
    assert main(_experiment(command, setup, reference, tmp_path, *extra, *ray_args)) == 0
    assert_same_tree(tmp_path, alone[command])  # no timings in these outputs: every byte
    assert len(list(tmp_path.rglob("*.json"))) == 6  # drift: 4 transcripts + consistency


def test_drift_reports_each_conditions_consistency_with_the_assistant(  # type: ignore[no-untyped-def]
    alone, reference
) -> None:
    out = alone["drift"]
    found = json.loads((out / "drift.json").read_text(encoding="utf-8"))["consistency"]
    again = consistency_by_condition(out, assistant_persona(), make_consistency_judge("local"))
    assert found == json.loads(json.dumps(again.summary()))  # what the folder's files give
    assert sorted(found) == sorted(["none", load_run_capping(reference).ids[0]])
    assert (out / "consistency.png").stat().st_size > 0
    written = json.loads((out / "consistency.json").read_text(encoding="utf-8"))
    assert sorted(written["per_condition"]) == sorted(found)


def test_a_worker_killed_mid_condition_is_retried_elsewhere(  # type: ignore[no-untyped-def]
    cluster, setup, reference, scenarios, alone, tmp_path, capsys
) -> None:
    extra = (*_drift_args(reference, scenarios), "--ray", cluster, "--workers", "2")
    with killing_one_worker(b"ModelWorker.apply") as killed:
        assert main(_experiment("drift", setup, reference, tmp_path, *extra)) == 0
    assert killed, "no worker was seen playing a condition"
    assert "died during condition" in capsys.readouterr().err
    assert_same_tree(tmp_path, alone["drift"])


@pytest.mark.parametrize("command", ["drift", "cap-eval"])
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ray", "--workers", "0"], "--workers is 0: use 1 or more"),
        (["--threads", "0"], "--threads is 0: use 1 or more"),
        (["--workers", "2"], "--workers is given without --ray"),
        (["--ray", "{cluster}", "--workers", "3"], "--workers is 3 but the Ray cluster has 2 CPUs"),
    ],
)
def test_bad_ray_input_to_experiments_is_one_line_exit_2_and_writes_nothing(  # type: ignore[no-untyped-def]
    cluster, setup, reference, tmp_path, capsys, command, extra, message
) -> None:
    out = tmp_path / "run"
    options = [e.format(cluster=cluster) for e in extra]
    assert main(_experiment(command, setup, reference, out, *options)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()
