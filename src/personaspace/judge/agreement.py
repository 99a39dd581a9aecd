"""Measuring a judge against hand labels: reading the label file, Cohen's kappa."""

from __future__ import annotations

import json
from pathlib import Path

from personaspace.catalogue import Role
from personaspace.judge.base import RoleItem


def read_labels(path: str | Path) -> tuple[list[RoleItem], list[int]]:
    """Role-adherence items and their 0-3 labels from a JSONL label file.

    Rows of the default (Assistant) prompt carry no role and are left out. Each row needs
    ``role``, ``role_description``, ``in_role``, ``question``, ``response`` and ``label``
    (the layout of ``tests/data/judge_labels.jsonl``).
    """
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["role"] != "default"]
    items = [
        RoleItem(
            Role(r["role"], "x", r["role_description"], ("",) * 5, r["in_role"]),
            r["question"],
            r["response"],
        )
        for r in rows
    ]
    return items, [int(r["label"]) for r in rows]


def cohen_kappa(a: list[int], b: list[int], *, quadratic: bool = False, k: int = 4) -> float:
    """Cohen's kappa between two label lists over classes ``0..k-1`` (quadratic weights optional).

    Example:
        >>> cohen_kappa([0, 1, 2, 3], [0, 1, 2, 3])
        1.0
        >>> round(cohen_kappa([0, 0, 1, 1], [0, 1, 0, 1]), 3)
        0.0
    """
    n = len(a)
    weight = [
        [((i - j) ** 2 / (k - 1) ** 2) if quadratic else float(i != j) for j in range(k)]
        for i in range(k)
    ]
    observed = sum(weight[x][y] for x, y in zip(a, b)) / n
    expected = sum(weight[i][j] * a.count(i) * b.count(j) for i in range(k) for j in range(k))
    expected /= n**2
    return 1 - observed / expected if expected else 0.0
