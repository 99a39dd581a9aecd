"""Agreement of the local judge with hand labels (role adherence, 0-3).

Usage: python bench/judge_agreement.py [tests/data/judge_labels.jsonl] [--folds 5]

Reports, for the shipped thresholds and for thresholds refit by cross-validation (fit on
k-1 folds, scored on the held-out fold), accuracy, Cohen's kappa (unweighted) and
quadratic-weighted kappa against the labels, plus the confusion matrix. The shipped
thresholds are the grid point that maximises quadratic-weighted kappa on all labels; the
cross-validated figures are the honest estimate for unseen responses.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from pathlib import Path

from personaspace.judge.agreement import cohen_kappa, read_labels
from personaspace.judge.local import RoleFeatures, Thresholds, role_features, score_role

GRID = [round(0.01 * i, 2) for i in range(61)]


def metrics(labels: list[int], preds: list[int]) -> dict[str, float]:
    acc = sum(x == y for x, y in zip(labels, preds)) / len(labels)
    return {
        "n": len(labels),
        "accuracy": round(acc, 3),
        "kappa": round(cohen_kappa(labels, preds), 3),
        "kappa_quadratic": round(cohen_kappa(labels, preds, quadratic=True), 3),
    }


def fit(features: list[RoleFeatures], labels: list[int]) -> Thresholds:
    best, best_t = -2.0, Thresholds()
    for b, a in itertools.combinations(GRID, 2):
        t = Thresholds(in_role=a, some_role=b)
        k = cohen_kappa(labels, [score_role(f, t) for f in features], quadratic=True)
        if k > best:
            best, best_t = k, t
    return best_t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("labels", nargs="?", default="tests/data/judge_labels.jsonl")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    items, labels = read_labels(args.labels)
    features = role_features(items)
    shipped_pred = [score_role(f, Thresholds()) for f in features]
    order = list(range(len(items)))
    random.Random(0).shuffle(order)
    folds = [order[i :: args.folds] for i in range(args.folds)]
    cv_pred = [0] * len(items)
    for held in folds:
        train = [i for i in order if i not in set(held)]
        t = fit([features[i] for i in train], [labels[i] for i in train])
        for i in held:
            cv_pred[i] = score_role(features[i], t)
    best = fit(features, labels)
    result = {
        "labels": args.labels,
        "label_distribution": {str(k): labels.count(k) for k in range(4)},
        "shipped_thresholds": vars(Thresholds()),
        "shipped": metrics(labels, shipped_pred),
        "cross_validated": metrics(labels, cv_pred),
        "best_fit_on_all": {
            "thresholds": vars(best),
            **metrics(labels, [score_role(f, best) for f in features]),
        },
        "majority_class_baseline": metrics(labels, [max(range(4), key=labels.count)] * len(labels)),
        "confusion_shipped": [
            [sum(x == i and p == j for x, p in zip(labels, shipped_pred)) for j in range(4)]
            for i in range(4)
        ],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
