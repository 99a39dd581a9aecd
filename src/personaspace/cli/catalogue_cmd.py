"""``personaspace catalogue``: counts per section and category; validates a user folder."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

from personaspace.catalogue import PRESETS, load_catalogue, select


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "catalogue", help="list the persona catalogue's contents; validate a user folder"
    )
    parser.add_argument(
        "--catalogue",
        metavar="DIR",
        default=None,
        help="a folder of your own roles/traits/... in the same format",
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="sections in DIR replace the built-in ones (default: merge)",
    )
    parser.add_argument(
        "--preset", choices=PRESETS, default=None, help="also show what a preset selects"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    catalogue = load_catalogue(args.catalogue, replace=args.replace)
    report: dict[str, Any] = {
        "sources": list(catalogue.sources),
        "counts": catalogue.counts(),
        "roles_by_category": dict(
            sorted(Counter(r.category for r in catalogue.roles.values()).items())
        ),
        "traits_by_group": dict(
            sorted(Counter(t.group for t in catalogue.traits.values()).items())
        ),
        "questions_by_category": dict(
            sorted(Counter(q.category for q in catalogue.questions.values()).items())
        ),
        "scenarios_by_domain": dict(
            sorted(Counter(s.domain for s in catalogue.scenarios.values()).items())
        ),
    }
    if args.preset:
        sel = select(catalogue, args.preset)
        report["preset"] = {
            "name": sel.preset,
            "roles": [r.name for r in sel.roles],
            "prompts_per_role": max((len(r.prompts) for r in sel.roles), default=0),
            "questions": [q.id for q in sel.questions],
            "default_prompts": len(sel.default_prompts),
            "traits": [t.name for t in sel.traits],
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"catalogue from: {', '.join(report['sources'])} — valid")
    for section, count in report["counts"].items():
        print(f"  {section:<16}{count:>6}")
    for title in (
        "roles_by_category",
        "traits_by_group",
        "questions_by_category",
        "scenarios_by_domain",
    ):
        parts = ", ".join(f"{k} {v}" for k, v in report[title].items())
        print(f"{title.replace('_', ' ')}: {parts}")
    if args.preset:
        p = report["preset"]
        print(
            f"preset {p['name']}: {len(p['roles'])} roles x {p['prompts_per_role']} prompts x "
            f"{len(p['questions'])} questions, {p['default_prompts']} default prompts, "
            f"{len(p['traits'])} traits"
        )
    return 0
