"""The finetuning-shift study (docs/studies/finetuning-shift.md): across several LoRA
finetunes, does the shift along a trait's persona vector track the change in that trait's
expression, better than random directions do, and specifically for its own trait? Does a
dataset's projection difference, measured before training, predict the shift? And does
preventative steering keep the trait down at less cost in capability than steering the
finetuned model afterwards?

The inputs are the files the commands write: ``personaspace shift`` (``shift.json`` and
``mean_difference.safetensors``) and ``personaspace screen`` (``screen.json``) per finetune.
Evaluating a condition (a model, with or without a steering intervention) generates
seeded replies to a trait's held-out evaluation questions for the judge and greedy
answers to the capability items.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from personaspace.analysis.intervals import mean_interval, random_units
from personaspace.capture import SamplingConfig, generate
from personaspace.catalogue import CapabilityItem, Catalogue, Trait
from personaspace.conversation.prompts import format_prompt
from personaspace.experiments.scoring import capability_prompt, chance_accuracy, is_correct
from personaspace.fileformat import load_vectors
from personaspace.interventions.hooks import intervene
from personaspace.judge.base import Judge, TraitItem
from personaspace.models.loading import LoadedModel
from personaspace.pipeline.work import item_seed
from personaspace.vectors.intervention import Intervention

REPLY_SAMPLING = SamplingConfig(max_new_tokens=96, temperature=0.7, top_p=0.9)


@dataclass(frozen=True)
class Finetune:
    """One finetune of the study as its files describe it (``name`` is ``trait-level``).

    ``shift[v]``: mean last-prompt shift along vector ``v`` at the study layer;
    ``expression[t]``: the judge's paired change in trait ``t`` (after - before);
    ``difference``: the mean last-prompt difference vector at the layer;
    ``projection_difference``: the dataset's screened projection difference (``None``
    if not screened).
    """

    name: str
    trait: str
    level: str
    shift: dict[str, float]
    expression: dict[str, float]
    difference: torch.Tensor
    projection_difference: float | None


def read_finetune(name: str, shift_dir: Path, screen_dir: Path | None, layer: int) -> Finetune:
    """The study's figures of one finetune from its ``shift`` (and ``screen``) folder."""
    result = json.loads((shift_dir / "shift.json").read_text())
    shifts = {}
    for vector in result["vectors"]:
        row = next(r for r in vector["layers"] if r["layer"] == layer)
        shifts[vector["name"]] = float(row["shift"]["mean"])
    expression = {e["trait"]: float(e["change"]["mean"]) for e in result["expression"]}
    tensors, meta = load_vectors(shift_dir / "mean_difference.safetensors")
    difference = tensors["mean_difference"][list(meta["layers"]).index(layer)].double()
    projection = None
    if screen_dir is not None and (screen_dir / "screen.json").is_file():
        screened = json.loads((screen_dir / "screen.json").read_text())
        value = (screened.get("projection_difference") or {}).get("mean")
        projection = float(value) if value is not None else None
    trait, _, level = name.rpartition("-")
    return Finetune(name, trait, level, shifts, expression, difference, projection)


def _pearson(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return {"r": None, "low": None, "high": None, "p": None, "n": len(x)}
    res = stats.pearsonr(x, y)
    ci = res.confidence_interval(0.95)
    rho = stats.spearmanr(x, y)
    return {
        "r": float(res.statistic),
        "low": float(ci.low),
        "high": float(ci.high),
        "p": float(res.pvalue),
        "spearman": float(rho.statistic),
        "n": len(x),
    }


def shift_tracks_expression(
    finetunes: Sequence[Finetune],
    trait: str,
    vector: torch.Tensor,
    *,
    n_random: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Correlation, across finetunes, of the shift along ``vector`` (unit, ``[hidden]``)
    with the change in ``trait``'s expression; beside it the same correlation for
    ``n_random`` random unit directions and the real vector's percentile among their |r|.

    Example:
        >>> rows = [[0, 3, 2], [1, -1, 7], [2, 4, 1], [3, -1, 8], [4, 5, 2]]
        >>> fts = [Finetune(str(i), "t", "l", {}, {"t": float(i)},
        ...        torch.tensor(row, dtype=torch.float64), None) for i, row in enumerate(rows)]
        >>> out = shift_tracks_expression(fts, "t", torch.tensor([1.0, 0.0, 0.0]), n_random=50)
        >>> round(out["vector"]["r"], 6), out["percentile"] >= 50
        (1.0, True)
    """
    change = [f.expression[trait] for f in finetunes]
    unit_vector = vector.double() / vector.double().norm()
    differences = torch.stack([f.difference.double() for f in finetunes])
    real = _pearson((differences @ unit_vector).tolist(), change)
    directions = random_units(n_random, differences.shape[1], seed).double()
    random_r = []
    for direction in directions:
        r = _pearson((differences @ direction).tolist(), change)["r"]
        random_r.append(abs(r) if r is not None else 0.0)
    observed = abs(real["r"]) if real["r"] is not None else 0.0
    percentile = float(stats.percentileofscore(random_r, observed, kind="strict"))
    return {
        "trait": trait,
        "vector": real,
        "random_abs_r": {
            "median": float(np.median(random_r)),
            "p95": float(np.percentile(random_r, 95)),
            "n": n_random,
        },
        "percentile": percentile,
    }


def cross_trait(finetunes: Sequence[Finetune], traits: Sequence[str]) -> dict[str, Any]:
    """``r[vector][trait]``: correlation of the shift along each trait's vector with the
    change in each trait's expression (the diagonal is each vector's own trait)."""
    return {
        v: {
            t: _pearson([f.shift[v] for f in finetunes], [f.expression[t] for f in finetunes])["r"]
            for t in traits
        }
        for v in traits
    }


def projection_predicts_shift(finetunes: Sequence[Finetune]) -> dict[str, Any]:
    """Correlation of each dataset's projection difference (before training, along its own
    trait's vector) with the shift its finetune caused along that vector."""
    chosen = [f for f in finetunes if f.projection_difference is not None]
    x = [float(f.projection_difference or 0.0) for f in chosen]
    y = [f.shift[f.trait] for f in chosen]
    return {"pooled": _pearson(x, y), "points": [[f.name, a, b] for f, a, b in zip(chosen, x, y)]}


def evaluate_condition(
    lm: LoadedModel,
    trait: Trait,
    judge: Judge,
    items: Sequence[CapabilityItem],
    *,
    interventions: Sequence[Intervention] = (),
    seed: int = 0,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Trait expression (judge, 0-100, on the trait's evaluation questions, seeded replies)
    and capability accuracy (greedy answers to ``items``) of ``lm`` under ``interventions``.

    Example:
        >>> evaluate_condition(lm, cat.traits["evil"], judge, items)  # doctest: +SKIP
        {'expression': {...}, 'capability': {'accuracy': 0.62, ...}}
    """
    questions = list(trait.evaluation_questions)
    prompts = [format_prompt(lm, q) for q in questions]
    seeds = [item_seed(seed, f"finetune-study/{q}") for q in questions]
    asks = [format_prompt(lm, capability_prompt(item)) for item in items]
    greedy = SamplingConfig(max_new_tokens=24).for_model(lm.chat_tuned)
    with intervene(lm, interventions), torch.no_grad():
        replies = generate(
            lm,
            prompts,
            REPLY_SAMPLING.for_model(lm.chat_tuned),
            reductions=(),
            seeds=seeds,
            batch_size=batch_size,
        )
        answers = generate(lm, asks, greedy, reductions=(), batch_size=batch_size)
    scores = judge.score_traits([TraitItem(trait, q, g.text) for q, g in zip(questions, replies)])
    correct = [is_correct(item, g.text) for item, g in zip(items, answers)]
    k, n = sum(correct), len(correct)
    ci = stats.binomtest(k, n).proportion_ci(0.95) if n else None
    return {
        "expression": mean_interval(
            np.asarray([s for s in scores if s is not None]), seed=seed
        ).to_json(),
        "capability": {
            "accuracy": k / n if n else None,
            "low": float(ci.low) if ci is not None else None,
            "high": float(ci.high) if ci is not None else None,
            "n": n,
            "chance": chance_accuracy(list(items)),
        },
        "replies": [g.text for g in replies],
    }


def capability_items(catalogue: Catalogue, n: int) -> list[CapabilityItem]:
    """``n`` capability items evenly spaced over the catalogue's (all topics)."""
    items = list(catalogue.capability.values())
    if n >= len(items):
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]
