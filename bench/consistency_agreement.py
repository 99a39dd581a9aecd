"""Agreement of the local consistency judges with hand labels.

Usage:
    python bench/consistency_agreement.py [--labels tests/data/consistency_labels.jsonl]
        [--models smollm2-135m-instruct,gemma-3-270m] [--folds 5] [--json FILE]

Judges, each scored on every labelled row the way its measure judges it
(``personaspace.judge.consistency_agreement``):

- ``claims``: the identity-claim rule of ``--judge local`` without the embedding part;
- ``local``: the same plus negated near-repeats (all-MiniLM-L6-v2), i.e. ``--judge local``;
- ``likelihood[MODEL]``: ``p(yes) / (p(yes) + p(no))`` read from MODEL, cut at 0.5, and
  with the cut fitted in each cross-validation fold (stratified ``--folds`` folds,
  the cut that maximises training accuracy, scored on the held-out fold).

Each block: accuracy, Cohen's kappa with a 95 % bootstrap interval (2,000 resamples of
the rows), the majority-label baseline, and the same per measure. Nothing is fitted for
``claims`` and ``local``: their rules were written before the labels.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import torch

from personaspace.catalogue import load_catalogue
from personaspace.judge.consistency_agreement import (
    agreement,
    judge_lines,
    read_consistency_labels,
)
from personaspace.judge.consistency_likelihood import LikelihoodConsistencyJudge
from personaspace.judge.consistency_local import LocalConsistencyJudge
from personaspace.models import load_model


def kappa_interval(verdicts: list[bool], labels: list[bool], seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    v, y = np.array(verdicts), np.array(labels)
    values = []
    for _ in range(2000):
        pick = rng.integers(0, len(y), len(y))
        values.append(agreement(list(v[pick]), list(y[pick])).kappa)
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def block(verdicts: list[bool], labels: list[bool], measures: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = agreement(verdicts, labels).to_json()
    result["kappa_95"] = kappa_interval(verdicts, labels)
    result["by_measure"] = {
        m: agreement(
            [v for v, k in zip(verdicts, measures) if k == m],
            [y for y, k in zip(labels, measures) if k == m],
        ).to_json()
        for m in sorted(set(measures))
    }
    return result


def cv_threshold(scores: np.ndarray, labels: np.ndarray, folds: int, seed: int = 0) -> list[bool]:
    """Held-out verdicts with the cut fitted on the other folds (stratified by label)."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(labels), dtype=int)
    for value in (False, True):
        idx = np.flatnonzero(labels == value)
        rng.shuffle(idx)
        fold[idx] = np.arange(idx.size) % folds
    verdicts = np.zeros(len(labels), dtype=bool)
    for k in range(folds):
        train, test = fold != k, fold == k
        cuts = np.unique(np.concatenate([scores[train], [0.0, 1.0]]))
        accuracy = [((scores[train] >= c) == labels[train]).mean() for c in cuts]
        best = cuts[int(np.argmax(accuracy))]
        verdicts[test] = scores[test] >= best
    return verdicts.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--labels", default="tests/data/consistency_labels.jsonl")
    parser.add_argument("--models", default="smollm2-135m-instruct")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = read_consistency_labels(args.labels, load_catalogue())
    labels = [line.contradicts for line in lines]
    measures = [line.measure for line in lines]
    report: dict[str, Any] = {"n": len(lines)}
    for name, judge in (
        ("claims", LocalConsistencyJudge(negation=False)),
        ("local", LocalConsistencyJudge()),
    ):
        scores = judge_lines(judge, lines)
        verdicts = [s is not None and s >= 0.5 for s in scores]
        report[name] = block(verdicts, labels, measures)
        report[name]["errors"] = [line.id for line, v, y in zip(lines, verdicts, labels) if v != y]
    for spec in [m for m in args.models.split(",") if m]:
        judge_l = LikelihoodConsistencyJudge(load_model(spec))
        raw = judge_lines(judge_l, lines)
        p = np.array([0.5 if s is None else s for s in raw])
        y = np.array(labels)
        fixed = (p >= 0.5).tolist()
        report[f"likelihood[{spec}]"] = {
            "cut_0.5": block(fixed, labels, measures),
            "cut_cv": block(cv_threshold(p, y, args.folds), labels, measures),
            "p_yes_mean_when_contradicts": float(p[y].mean()),
            "p_yes_mean_when_not": float(p[~y].mean()),
            "auc": float(np.mean([(a > b) + 0.5 * (a == b) for a in p[y] for b in p[~y]])),
        }
    text = json.dumps(report, indent=2)
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
