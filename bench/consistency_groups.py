"""Do two groups of conversations differ in consistency? (e.g. the validation set's drifting
against its stable conversations.)

Usage:
    personaspace consistency src/personaspace/catalogue/data/validation/*.json --out OUT
    python bench/consistency_groups.py OUT/consistency.json [--a drifting] [--b stable]

Groups are the conversations' ``expect`` (validation set) or ``condition`` field. Per
measure: each group's mean of the per-conversation scores, the difference a - b with a
95 % percentile bootstrap interval (10,000 resamples within each group) and the two-sided
permutation p-value of ``personaspace.experiments.stats.permutation_test`` (exact when
the splits are few enough).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from personaspace.experiments.stats import permutation_test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report")
    parser.add_argument("--a", default="drifting")
    parser.add_argument("--b", default="stable")
    args = parser.parse_args()
    data = json.loads(Path(args.report).read_text())
    rng = np.random.default_rng(0)
    result = {}
    for measure in data["measures"]:
        groups: dict[str, list[float]] = {args.a: [], args.b: []}
        for c in data["conversations"]:
            group = c.get("expect") or c.get("condition")
            value = c["means"][measure]
            if group in groups and value is not None:
                groups[group].append(value)
        a, b = np.array(groups[args.a]), np.array(groups[args.b])
        if a.size < 1 or b.size < 1:
            continue
        test = permutation_test(a, b)
        boots = [rng.choice(a, a.size).mean() - rng.choice(b, b.size).mean() for _ in range(10_000)]
        result[measure] = {
            f"mean_{args.a}": float(a.mean()),
            f"mean_{args.b}": float(b.mean()),
            f"n_{args.a}": int(a.size),
            f"n_{args.b}": int(b.size),
            "difference": test.statistic,
            "ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
            "p_permutation": test.p_value,
            "exact": test.exact,
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
