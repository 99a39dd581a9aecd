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

from personaspace.catalogue import Role
from personaspace.judge import RoleItem
from personaspace.judge.local import RoleFeatures, Thresholds, role_features, score_role

GRID = [round(0.01 * i, 2) for i in range(61)]


def kappa(a: list[int], b: list[int], weighted: bool = False, k: int = 4) -> float:
    """Cohen's kappa between two label lists over classes 0..k-1 (quadratic weights optional)."""
    n = len(a)
    observed = [[0.0] * k for _ in range(k)]
    for x, y in zip(a, b):
        observed[x][y] += 1 / n
    pa = [sum(row) for row in observed]
    pb = [sum(observed[i][j] for i in range(k)) for j in range(k)]
    w = [
        [((i - j) ** 2 / (k - 1) ** 2) if weighted else float(i != j) for j in range(k)]
        for i in range(k)
    ]
    num = sum(w[i][j] * observed[i][j] for i in range(k) for j in range(k))
    den = sum(w[i][j] * pa[i] * pb[j] for i in range(k) for j in range(k))
    return 1 - num / den if den else 0.0


def metrics(labels: list[int], preds: list[int]) -> dict[str, float]:
    acc = sum(x == y for x, y in zip(labels, preds)) / len(labels)
    return {
        "n": len(labels),
        "accuracy": round(acc, 3),
        "kappa": round(kappa(labels, preds), 3),
        "kappa_quadratic": round(kappa(labels, preds, weighted=True), 3),
    }


def fit(features: list[RoleFeatures], labels: list[int]) -> Thresholds:
    best, best_t = -2.0, Thresholds()
    for b, a in itertools.combinations(GRID, 2):
        t = Thresholds(in_role=a, some_role=b)
        k = kappa(labels, [score_role(f, t) for f in features], weighted=True)
        if k > best:
            best, best_t = k, t
    return best_t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("labels", nargs="?", default="tests/data/judge_labels.jsonl")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = [json.loads(line) for line in Path(args.labels).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["role"] != "default"]
    items = [
        RoleItem(
            Role(r["role"], "x", r["role_description"], ("",) * 5, r["in_role"]),
            r["question"],
            r["response"],
        )
        for r in rows
    ]
    labels = [int(r["label"]) for r in rows]
    features = role_features(items)
    shipped = metrics(labels, [score_role(f, Thresholds()) for f in features])
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    folds = [order[i :: args.folds] for i in range(args.folds)]
    cv_pred = [0] * len(rows)
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
        "shipped": shipped,
        "cross_validated": metrics(labels, cv_pred),
        "best_fit_on_all": {
            "thresholds": vars(best),
            **metrics(labels, [score_role(f, best) for f in features]),
        },
        "majority_class_baseline": metrics(labels, [max(range(4), key=labels.count)] * len(labels)),
        "confusion_shipped": [
            [
                sum(
                    1
                    for x, f in zip(labels, features)
                    if x == i and score_role(f, Thresholds()) == j
                )
                for j in range(4)
            ]
            for i in range(4)
        ],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
