"""The ladder: rungs of one architecture against the final rung, exact figures on
constructed vectors, the nulls, and `compare --ladder` on tiny run folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from compare_fixtures import N_ROLES, NAMES, make_run, synthetic, write_run

from personaspace.analysis.compare import ComparedRun
from personaspace.analysis.ladder import (
    Rung,
    check_ladder,
    headline,
    ladder,
    ladder_table,
    random_direction_baseline,
)
from personaspace.cli.main import main
from personaspace.errors import PersonaspaceError
from personaspace.report.ladder_report import ladder_figures

FAST = {"n_permutations": 99, "n_bootstrap": 50, "n_random": 200}


def rotated(run: ComparedRun, degrees: float) -> ComparedRun:
    """``run`` with its axis (5 e0) turned by ``degrees`` toward e1, at every layer."""
    theta = math.radians(degrees)
    axis = torch.zeros_like(run.axis)
    axis[:, 0], axis[:, 1] = 5 * math.cos(theta), 5 * math.sin(theta)
    return make_run(run.label, run.roles, axis=axis)


def three(base: ComparedRun, mid: ComparedRun, final: ComparedRun) -> list[Rung]:
    return [Rung(base, "base", None, "base"), Rung(mid, "mid", 0.5), Rung(final, "final", 1.0)]


# --- exact figures ----------------------------------------------------------------------------


def test_rotated_axes_give_the_cosine_of_the_angle_at_every_layer() -> None:
    final = make_run("final", synthetic())
    rungs = three(rotated(final, 60), rotated(final, 30), final)
    result = ladder(rungs, **FAST)
    cos30, cos60 = math.cos(math.radians(30)), 0.5
    rows = result["rungs"]
    assert [r["axis_cos_final"] for r in rows] == pytest.approx([cos60, cos30, 1.0], abs=1e-6)
    assert [r["axis_cos_base"] for r in rows] == pytest.approx([1.0, cos30, cos60], abs=1e-6)
    for row, expected in zip(rows, [cos60, cos30, 1.0]):
        by_layer = [c["cos"] for c in row["axis_cos_final_by_layer"]]
        assert by_layer == pytest.approx([expected] * 3, abs=1e-6)
    assert result["final"] == "final" and result["base"] == "base" and result["layer"] == 1


def test_identical_rungs_give_one_everywhere() -> None:
    run = make_run("m", synthetic())
    result = ladder(three(run, run, run), **FAST)
    for row in result["rungs"]:
        assert row["axis_cos_final"] == pytest.approx(1.0, abs=1e-6)
        assert row["axis_cos_base"] == pytest.approx(1.0, abs=1e-6)
        for key in ("role_cos_final_raw", "role_cos_final_centred"):
            interval = row[key]
            assert interval["mean"] == pytest.approx(1.0, abs=1e-6), key
            assert interval["low"] == pytest.approx(1.0, abs=1e-6), key
            assert interval["high"] == pytest.approx(1.0, abs=1e-6), key
            assert interval["n"] == N_ROLES
        assert row["pc_cos_final"]["matched"] == pytest.approx([1.0] * 3, abs=1e-5)
        assert row["pc_cos_base"]["principal"] == pytest.approx([1.0] * 3, abs=1e-5)
        assert row["spearman_axis_final"]["rho"] == 1.0
        assert row["spearman_pc1_base"]["rho"] == 1.0
        assert row["default_shift_from_base"] == 0.0 and row["default_moved_from_base_sd"] == 0.0
    assert result["k"] == 3 and result["roles"]["shared"] == N_ROLES


def test_permuted_roles_give_the_hand_computed_spearman() -> None:
    order = list(range(N_ROLES))
    order[0], order[3] = order[3], order[0]
    order[7], order[11] = order[11], order[7]
    d2 = sum((i - o) ** 2 for i, o in enumerate(order))  # 9 + 9 + 16 + 16 = 50
    expected = 1 - 6 * d2 / (N_ROLES * (N_ROLES**2 - 1))
    base, final = make_run("base", synthetic()), make_run("final", synthetic())
    mid = make_run("mid", synthetic(order=order))
    rows = ladder(three(base, mid, final), **FAST)["rungs"]
    assert d2 == 50
    for key in ("spearman_axis_final", "spearman_pc1_final", "spearman_axis_base"):
        assert rows[1][key]["rho"] == pytest.approx(expected, abs=1e-4), key
    assert rows[1]["axis_cos_final"] == pytest.approx(1.0, abs=1e-6)  # names do not move axes


def plane(second: int, degrees: float = 0.0) -> ComparedRun:
    """Eight roles in the plane of e0 and e``second``: PC1 = e0 (variance 7.5), PC2 =
    e``second`` (variance 1), uncorrelated; the whole plane turned by ``degrees``."""
    a = [-4.0, -3.0, -2.0, -1.0, 1.0, 2.0, 3.0, 4.0]
    b = [-1.0, 1.0, -1.0, 1.0, 1.0, -1.0, 1.0, -1.0]  # even in a, sums to 0
    theta = math.radians(degrees)
    roles = {}
    for i, (x, y) in enumerate(zip(a, b)):
        v = torch.zeros(1, 4)
        v[0, 0] = x * math.cos(theta) - y * math.sin(theta)
        v[0, second] = x * math.sin(theta) + y * math.cos(theta)
        roles[f"role_{i}"] = v
    run = make_run(f"plane-{second}-{degrees:g}", roles)
    axis = torch.zeros(1, 4)
    axis[0, 0], axis[0, second] = 5 * math.cos(theta), 5 * math.sin(theta)
    return make_run(run.label, roles, axis=axis, default=axis.clone())


def test_principal_angles_of_known_subspaces() -> None:
    final = plane(1)
    rows = ladder(three(plane(1), plane(2), final), k=2, **FAST)["rungs"]
    # span{e0, e2} against span{e0, e1}: one common direction, one orthogonal
    assert rows[1]["pc_cos_final"]["matched"] == pytest.approx([1.0, 0.0], abs=1e-6)
    assert rows[1]["pc_cos_final"]["principal"] == pytest.approx([1.0, 0.0], abs=1e-6)
    turned = ladder(three(plane(1), plane(1, 45), final), k=2, **FAST)["rungs"][1]
    # the same span turned by 45 degrees: matched PCs at cos 45, the spans identical
    half = 2**-0.5
    assert turned["pc_cos_final"]["matched"] == pytest.approx([half, half], abs=1e-6)
    assert turned["pc_cos_final"]["principal"] == pytest.approx([1.0, 1.0], abs=1e-6)
    assert turned["axis_cos_final"] == pytest.approx(half, abs=1e-6)


def test_where_the_default_sits_and_how_far_it_moved() -> None:
    roles = synthetic()
    base, final = make_run("base", roles), make_run("final", roles)
    moved = base.default.clone()
    moved[:, 0] += 2.0  # 7 e0 past the mean role instead of 5
    mid = make_run("mid", roles, default=moved)
    row = ladder(three(base, mid, final), **FAST)["rungs"][1]
    sd = math.sqrt(13.0)  # sample sd of the projections 1..12
    assert row["default_on_final_axis"] == pytest.approx(7.0, abs=1e-4)
    assert row["default_on_final_axis_sd"] == pytest.approx(7.0 / sd, abs=1e-3)
    assert row["default_moved_from_base_sd"] == pytest.approx(2.0 / sd, abs=1e-3)
    assert row["default_shift_from_base"] == pytest.approx(2.0, abs=1e-4)
    assert row["default_pc1_rank"] == 1  # 13.5 along e0: past role_11 (12)
    assert row["default_null"]["default_rank"] == 1 and row["default_null"]["n_roles"] == N_ROLES


# --- nulls ------------------------------------------------------------------------------------


def test_the_random_direction_baseline_is_seeded() -> None:
    axis = torch.randn(400, generator=torch.Generator().manual_seed(1))
    one = random_direction_baseline(axis, n_random=500, seed=7)
    assert one == random_direction_baseline(axis, n_random=500, seed=7)
    assert one != random_direction_baseline(axis, n_random=500, seed=8)
    assert one["hidden_size"] == 400 and one["n_directions"] == 500 and one["seed"] == 7
    assert 0.07 < one["abs_cos_p95"] < 0.13  # about 1.96 / sqrt(400) = 0.098
    # the same for any scale of the direction
    assert random_direction_baseline(3 * axis, n_random=500, seed=7) == one


def random_rung(label: str = "random") -> ComparedRun:
    gen = torch.Generator().manual_seed(5)
    roles = {n: torch.randn(3, 8, generator=gen) for n in NAMES}
    return make_run(label, roles, axis=torch.randn(3, 8, generator=gen))


def test_the_random_init_rung_stands_beside_every_cosine() -> None:
    final = make_run("final", synthetic())
    rungs = [Rung(random_rung(), "random", None, "random_init"), *three(final, final, final)]
    result = ladder(rungs, seed=3, **FAST)
    [random_row] = [r for r in result["rungs"] if r["kind"] == "random_init"]
    assert result["random_init"] == "random" and result["final"] == "final"
    assert result["nulls"]["random_init"] == headline(random_row)
    expected = random_direction_baseline(final.axis[1], n_random=200, seed=3)
    assert result["nulls"]["random_direction"] == expected
    assert [r["x"] for r in result["rungs"]] == [None, None, 0.5, 1.0]
    table = ladder_table(result)
    assert "| random (random-init) | - |" in table
    assert f"| {expected['abs_cos_p95']:.3f} |" in table.splitlines()[-1]
    pngs = ladder_figures(result)
    assert all(png[:4] == b"\x89PNG" for png in pngs.values()) and set(pngs) == {
        "ladder",
        "ladder_layers",
    }


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "progress", "kinds", "message"),
    [
        (["a", "b"], [None, 1.0], ["base", "tuned"], "a ladder of 2 rungs"),
        (["a", "b", "c"], [None, 1.0], ["base", "tuned", "tuned"], "progress has 2 values"),
        (["a", "a", "c"], [None] * 3, ["base", "tuned", "tuned"], "are empty or repeat"),
        (["a", "b", "c"], [None] * 3, ["base", "base", "tuned"], "2 base, 0 random-init"),
        (["a", "b", "c"], [0.0, None, None], ["random_init", "base", "tuned"], "random-init"),
        (["a", "b", "c"], [None, 0.5, 0.25], ["base", "tuned", "tuned"], "goes back from 0.5"),
        (["a", "b", "c"], [None, 1.5, None], ["base", "tuned", "tuned"], "not a fraction"),
        (["a", "b", "c"], [None, 0.5, None], ["base", "tuned", "tuned"], "some trained rungs"),
    ],
)
def test_check_ladder_refuses(labels, progress, kinds, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PersonaspaceError, match=message):
        check_ladder(labels, progress, kinds)


def test_other_architectures_and_too_few_roles_are_refused() -> None:
    final = make_run("final", synthetic())
    wide = make_run("wide", synthetic(hidden=6))
    with pytest.raises(PersonaspaceError, match="rung mid .*hidden size 6 and 3 layers, but final"):
        ladder(three(final, wide, final), **FAST)
    few = make_run("few", synthetic(names=NAMES[:5]))
    with pytest.raises(
        PersonaspaceError, match=r"share only 5 roles \(base: 12, mid: 5, final: 12\)"
    ):
        ladder(three(final, few, final), **FAST)


# --- the command line -------------------------------------------------------------------------


def ladder_folders(root: Path) -> list[Path]:
    final = make_run("model", synthetic())
    return [
        write_run(root / "random", random_rung("model")),
        write_run(root / "base", rotated(final, 60)),
        write_run(root / "half", rotated(final, 30)),
        write_run(root / "final", final),
    ]


STATS = ["--permutations", "99", "--bootstrap", "50"]


def test_cli_writes_the_ladder(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    runs = [str(p) for p in ladder_folders(tmp_path)]
    out = tmp_path / "out"
    args = ["compare", "--ladder", *runs, "--random-init", runs[0], "--progress=-,-,0.5,1"]
    assert main([*args, "--out", str(out), *STATS]) == 0
    for name in ("ladder.json", "ladder.md", "ladder.png", "ladder_layers.png"):
        assert (out / name).stat().st_size > 100, name
    result = json.loads((out / "ladder.json").read_text())
    rows = result["rungs"]
    assert [r["label"] for r in rows] == ["random", "base", "half", "final"]
    assert [r["kind"] for r in rows] == ["random_init", "base", "tuned", "tuned"]
    assert [r["progress"] for r in rows] == [None, None, 0.5, 1.0]
    assert [r["axis_cos_final"] for r in rows[1:]] == pytest.approx([0.5, 0.866025, 1.0])
    printed = capsys.readouterr().out
    assert "| half | 50 % | 0.866 | 0.866 |" in printed
    assert "| half | 50 % |" in (out / "ladder.md").read_text()


def test_cli_labels_and_order_without_progress(tmp_path) -> None:  # type: ignore[no-untyped-def]
    runs = [str(p) for p in ladder_folders(tmp_path)[1:]]
    out = tmp_path / "out"
    assert main(["compare", "--ladder", *runs, "--labels", "b,h,f", "--out", str(out), *STATS]) == 0
    rows = json.loads((out / "ladder.json").read_text())["rungs"]
    assert [(r["label"], r["kind"], r["x"]) for r in rows] == [
        ("b", "base", 0.0),
        ("h", "tuned", 1.0),
        ("f", "tuned", 2.0),
    ]


@pytest.mark.parametrize(
    ("pick", "extra", "message"),
    [
        ([1, 2], [], "--ladder: a ladder of 2 rungs: give at least 3"),
        ([1, 2, 3], ["--progress", "0.5,1"], "--progress has 2 values for 3 runs"),
        ([1, 2, 3], ["--labels", "a,b"], "--labels has 2 values for 3 runs"),
        ([1, 2, 3], ["--labels", "a,,c"], "--labels a,,c are empty or repeat"),
        ([1, 2, 3], ["--progress", "0,x,1"], "--progress value 'x' is not a fraction"),
        ([1, 2, 3], ["--progress", "0,0.5,0.25"], "--progress goes back from 0.5"),
        ([1, 2, 3, 4], [], "rung wide (model) has hidden size 6 and 3 layers, but base"),
        ([1, 2, 3], ["--base", "elsewhere"], "--base elsewhere is not one of the --ladder runs"),
        ([1, 2, 3], ["--steer-base"], "--steer-base compares two runs"),
    ],
)
def test_cli_bad_ladders_exit_2_and_write_nothing(  # type: ignore[no-untyped-def]
    tmp_path, capsys, pick, extra, message
) -> None:
    folders = ladder_folders(tmp_path)
    folders.append(write_run(tmp_path / "wide", make_run("model", synthetic(hidden=6))))
    runs = [str(folders[i]) for i in pick]
    out = tmp_path / "out"
    assert main(["compare", "--ladder", *runs, *extra, "--out", str(out), *STATS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_cli_two_run_compare_still_needs_two_runs(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    run = str(write_run(tmp_path / "a", make_run("model", synthetic())))
    assert main(["compare", run]) == 2
    assert "compare needs two runs, RUN_A and RUN_B" in capsys.readouterr().err
    assert main(["compare", run, run, "--labels", "x,y"]) == 2
    assert "--labels describes the runs of a ladder" in capsys.readouterr().err
