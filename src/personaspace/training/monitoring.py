"""Monitoring while training (``tune --monitor RUN[,TRAIT...]``): at each checkpoint, a fixed
evaluation set is answered (greedy, so every checkpoint answers the same prompts the same
way) and measured along the run's axis and trait vectors, and by the judge.

Per checkpoint and vector: the mean projection of the last prompt token (the state before
any reply token) and of the reply mean, with a 95 % interval over the questions; per trait,
the judge's mean expression score (0-100) on that trait's evaluation questions. The
evaluation questions are the traits' held-out ``evaluation_questions`` and, for the axis,
a fixed stratified slice of the catalogue's questions. Rows go to ``trajectory.jsonl``
(one per checkpoint, rewritten atomically) and a plot, ``trajectory.png``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from personaspace.capture.generate import generate
from personaspace.capture.sampling import SamplingConfig
from personaspace.catalogue import Catalogue, load_catalogue
from personaspace.catalogue.presets import deal_questions
from personaspace.conversation.prompts import default_system, format_prompt, stop_strings
from personaspace.errors import PersonaspaceError
from personaspace.fileformat import atomic_write
from personaspace.judge.base import Judge, TraitItem
from personaspace.models.loading import LoadedModel
from personaspace.report.plots import save_png
from personaspace.runfolder.paths import NamedVector, read_named_vector
from personaspace.vectors.intervention import unit_direction

TRAJECTORY_FILE = "trajectory.jsonl"
TRAJECTORY_PLOT = "trajectory.png"


@dataclass(frozen=True)
class EvalQuestion:
    """One prompt of the evaluation set; ``trait`` when it is that trait's question."""

    text: str
    trait: str | None


@dataclass(frozen=True)
class MonitorPlan:
    """What to measure at each checkpoint."""

    vectors: list[NamedVector]
    layer: int
    questions: list[EvalQuestion]
    max_new_tokens: int
    judge: Judge | None
    catalogue: Catalogue

    def to_json(self) -> dict[str, Any]:
        return {
            "vectors": [v.label for v in self.vectors],
            "layer": self.layer,
            "questions": [{"text": q.text, "trait": q.trait} for q in self.questions],
            "max_new_tokens": self.max_new_tokens,
            "judge": self.judge.name if self.judge is not None else None,
        }


def parse_monitor(text: str) -> tuple[str, list[str]]:
    """``RUN[,TRAIT...]`` as (run, traits).

    Example:
        >>> parse_monitor("runs/axis-x,evil,sycophantic")
        ('runs/axis-x', ['evil', 'sycophantic'])
    """
    run, *traits = [part.strip() for part in text.split(",")]
    if not run:
        raise PersonaspaceError(f"--monitor {text} names no run", fix="use RUN[,TRAIT...]")
    return run, [t for t in traits if t]


def plan_monitor(
    lm: LoadedModel,
    spec: str,
    *,
    per_trait: int = 8,
    axis_questions: int = 8,
    max_new_tokens: int = 48,
    judge: Judge | None = None,
    layer: int | None = None,
    catalogue: Catalogue | None = None,
) -> MonitorPlan:
    """The evaluation set and vectors ``--monitor spec`` names, checked against ``lm``.

    Example:
        >>> plan = plan_monitor(lm, "runs/axis-x,evil")  # doctest: +SKIP
        >>> [v.name for v in plan.vectors], len(plan.questions)  # doctest: +SKIP
        (['axis', 'evil'], 16)
    """
    cat = catalogue or load_catalogue()
    run, traits = parse_monitor(spec)
    vectors = [read_named_vector(run)] + [read_named_vector(f"{run}:{t}") for t in traits]
    for vector in vectors:
        vector.check_model(lm)
    chosen = layer if layer is not None else vectors[0].layer
    if chosen is None:
        raise PersonaspaceError(f"{run} has no analysis layer", fix="pass --monitor-layer")
    lm.adapter.check_layers([chosen])
    questions = [
        EvalQuestion(q.text, None)
        for q in deal_questions(list(cat.questions.values()), axis_questions)
    ]
    for name in traits:
        held_out = cat.traits[name].evaluation_questions[:per_trait]
        questions += [EvalQuestion(text, name) for text in held_out]
    return MonitorPlan(vectors, chosen, questions, max_new_tokens, judge, cat)


def _interval(values: np.ndarray) -> tuple[float, float, float]:
    mean = float(values.mean())
    if len(values) < 2:
        return mean, mean, mean
    half = 1.96 * float(values.std(ddof=1)) / np.sqrt(len(values))
    return mean, mean - half, mean + half


def evaluate(lm: LoadedModel, plan: MonitorPlan, step: int) -> dict[str, Any]:
    """One trajectory row: projections on every vector and judge scores, at ``step``.

    Example:
        >>> evaluate(lm, plan, 50)["vectors"]["axis"]["reply"]  # doctest: +SKIP
        {'mean': 1.92, 'low': 1.41, 'high': 2.43}
    """
    system = default_system(lm.chat_tuned)
    prompts = [format_prompt(lm, q.text, system) for q in plan.questions]
    config = SamplingConfig(
        max_new_tokens=plan.max_new_tokens, stop_strings=stop_strings(lm.chat_tuned)
    )
    with torch.no_grad():
        replies = generate(
            lm,
            prompts,
            config,
            layers=[plan.layer],
            reductions=("response_mean", "last_prompt"),
            batch_size=len(prompts),
        )
    reply = torch.stack([g.response_mean[0] for g in replies if g.response_mean is not None])
    last = torch.stack([g.last_prompt[0] for g in replies if g.last_prompt is not None])
    row: dict[str, Any] = {"step": step, "vectors": {}, "traits": {}}
    for vector in plan.vectors:
        unit = unit_direction(vector.at(plan.layer))
        entry = {}
        for key, states in (("last_prompt", last), ("reply", reply)):
            mean, low, high = _interval((states.float() @ unit).numpy())
            entry[key] = {"mean": mean, "low": low, "high": high}
        row["vectors"][vector.name] = entry
    if plan.judge is not None:
        for name in sorted({q.trait for q in plan.questions if q.trait}):
            items = [
                TraitItem(plan.catalogue.traits[name], q.text, g.text)
                for q, g in zip(plan.questions, replies)
                if q.trait == name
            ]
            scores = [s for s in plan.judge.score_traits(items) if s is not None]
            if scores:
                mean, low, high = _interval(np.array(scores, dtype=float))
                row["traits"][name] = {"mean": mean, "low": low, "high": high}
    row["replies"] = [g.text for g in replies]
    return row


def read_trajectory(folder: Path) -> list[dict[str, Any]]:
    path = folder / TRAJECTORY_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def record(folder: Path, row: dict[str, Any]) -> list[dict[str, Any]]:
    """Add ``row`` to the run's trajectory (replacing a row of the same or a later step,
    which a resumed run computes again), atomically; returns the trajectory."""
    rows = [r for r in read_trajectory(folder) if r["step"] < row["step"]] + [row]
    with atomic_write(folder / TRAJECTORY_FILE) as handle:
        for item in rows:
            handle.write(json.dumps(item, ensure_ascii=False) + "\n")
    return rows


def _draw_trajectory(fig: Figure, rows: Sequence[dict[str, Any]]) -> None:
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    steps = [r["step"] for r in rows]
    for name in rows[0]["vectors"] if rows else []:
        cells = [r["vectors"][name]["reply"] for r in rows]
        left.plot(steps, [c["mean"] for c in cells], marker="o", label=name)
        left.fill_between(steps, [c["low"] for c in cells], [c["high"] for c in cells], alpha=0.2)
    left.set_xlabel("optimizer step")
    left.set_ylabel("projection of the reply mean")
    left.legend(fontsize=8)
    traits = sorted({t for r in rows for t in r["traits"]})
    for name in traits:
        points = [(r["step"], r["traits"][name]["mean"]) for r in rows if name in r["traits"]]
        right.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    right.set_xlabel("optimizer step")
    right.set_ylabel("judge trait score (0-100)")
    if traits:
        right.legend(fontsize=8)


def plot_trajectory(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Projections (reply mean, 95 % band) and judge scores against the training step."""
    return save_png(path, lambda fig: _draw_trajectory(fig, rows), (9.0, 3.6))
