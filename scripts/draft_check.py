"""Check catalogue draft files: JSON validity, counts, and near-duplicate prompts.

Usage: python scripts/draft_check.py roles|traits|other
Near-duplicates are measured as Jaccard similarity of word 3-gram sets (lower-cased,
punctuation stripped). Anything >= 0.35 is reported as too similar.
"""

import itertools
import json
import re
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "src/personaspace/catalogue/data"
LIMIT = 0.35


def grams(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return {tuple(words[i : i + 3]) for i in range(max(len(words) - 2, 0))}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / max(len(a | b), 1)


def worst_pairs(texts: list[tuple[str, str]], n: int = 10) -> list[tuple[float, str, str]]:
    gs = [(label, grams(t)) for label, t in texts]
    out = []
    for (la, ga), (lb, gb) in itertools.combinations(gs, 2):
        s = jaccard(ga, gb)
        if s >= 0.2:
            out.append((s, la, lb))
    return sorted(out, reverse=True)[:n]


def main() -> None:
    what = sys.argv[1]
    if what == "roles":
        texts, names = [], []
        for f in sorted((DATA / "roles").glob("*.json")):
            for r in json.loads(f.read_text()):
                names.append(r["name"])
                assert len(r["prompts"]) >= 5, (f, r["name"])
                for i, p in enumerate(r["prompts"]):
                    texts.append((f"{f.name}:{r['name']}[{i}]", p))
        print(
            "roles:",
            len(names),
            "duplicate names:",
            sorted({n for n in names if names.count(n) > 1}),
        )
    elif what == "traits":
        texts, names = [], []
        for f in sorted((DATA / "traits").glob("*.json")):
            for t in json.loads(f.read_text()):
                names.append(t["name"])
                assert len(t["pairs"]) >= 5 and len(t["extraction_questions"]) >= 20, (f, t["name"])
                assert len(t["evaluation_questions"]) >= 20, (f, t["name"])
                for i, p in enumerate(t["pairs"]):
                    texts.append((f"{f.name}:{t['name']}[{i}].pos", p["pos"]))
        print(
            "traits:",
            len(names),
            "duplicate names:",
            sorted({n for n in names if names.count(n) > 1}),
        )
    else:
        for f in sorted(DATA.glob("*.json")) + sorted((DATA / "scenarios").glob("*.json")):
            print(f.name, len(json.loads(f.read_text())))
        return
    worst = worst_pairs(texts)
    print(f"prompts: {len(texts)}; pairs with 3-gram Jaccard >= {LIMIT}:")
    for s, a, b in worst:
        if s >= LIMIT:
            print(f"  {s:.2f} {a} ~ {b}")
    print("worst:", worst[:3])


if __name__ == "__main__":
    main()
