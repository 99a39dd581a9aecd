"""The finetuning-shift study's analysis on hand-made shift and screen files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from personaspace.experiments.finetune_shift import (
    Finetune,
    cross_trait,
    projection_predicts_shift,
    read_finetune,
    shift_tracks_expression,
)
from personaspace.fileformat import save_vectors


def write_shift(folder: Path, shifts: dict[str, float], changes: dict[str, float]) -> None:
    folder.mkdir(parents=True)
    vectors = [
        {"name": name, "layers": [{"layer": 0, "shift": {"mean": 9.0}},
                                  {"layer": 1, "shift": {"mean": value}}]}
        for name, value in shifts.items()
    ]  # fmt: skip
    expression = [{"trait": t, "change": {"mean": c}} for t, c in changes.items()]
    (folder / "shift.json").write_text(json.dumps({"vectors": vectors, "expression": expression}))
    diff = torch.arange(8, dtype=torch.float32).reshape(2, 4)
    save_vectors(folder / "mean_difference.safetensors", {"mean_difference": diff},
                 {"layers": [0, 1]})  # fmt: skip


def test_read_finetune_takes_the_study_layer(tmp_path: Path) -> None:
    write_shift(tmp_path / "shift", {"evil": 2.5, "sycophantic": -1.0}, {"evil": 7.0})
    screen = tmp_path / "screen"
    screen.mkdir()
    (screen / "screen.json").write_text(json.dumps({"projection_difference": {"mean": 0.25}}))
    f = read_finetune("evil-strong", tmp_path / "shift", screen, layer=1)
    assert (f.trait, f.level) == ("evil", "strong")
    assert f.shift == {"evil": 2.5, "sycophantic": -1.0}
    assert f.expression == {"evil": 7.0}
    assert f.difference.tolist() == [4.0, 5.0, 6.0, 7.0]
    assert f.projection_difference == 0.25


def finetunes() -> list[Finetune]:
    rows = [[0, 3, 2], [1, -1, 7], [2, 4, 1], [3, -1, 8], [4, 5, 2]]
    return [
        Finetune(f"a-{i}", "a", "x", {"a": float(r[0]), "b": float(r[1])},
                 {"a": 2.0 * r[0] + 1, "b": float(r[2])},
                 torch.tensor(r, dtype=torch.float64), float(r[0]) / 2)
        for i, r in enumerate(rows)
    ]  # fmt: skip


def test_the_shift_along_the_right_vector_beats_random_directions() -> None:
    result = shift_tracks_expression(finetunes(), "a", torch.tensor([3.0, 0.0, 0.0]), n_random=100)
    assert result["vector"]["r"] == pytest.approx(1.0)
    assert result["vector"]["low"] <= result["vector"]["r"] <= result["vector"]["high"]
    assert result["percentile"] > 90
    assert result["random_abs_r"]["n"] == 100
    again = shift_tracks_expression(finetunes(), "a", torch.tensor([3.0, 0.0, 0.0]), n_random=100)
    assert again == result  # seeded


def test_cross_trait_and_projection_difference() -> None:
    table = cross_trait(finetunes(), ["a", "b"])
    assert table["a"]["a"] == pytest.approx(1.0)
    assert table["b"]["a"] == pytest.approx(float(torch.corrcoef(torch.tensor(
        [[3.0, -1, 4, -1, 5], [1.0, 3, 5, 7, 9]]))[0, 1]))  # fmt: skip
    pooled = projection_predicts_shift(finetunes())["pooled"]
    assert pooled["r"] == pytest.approx(1.0) and pooled["n"] == 5
