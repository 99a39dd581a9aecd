"""Generate real responses from the bundled models for hand-labelling role adherence (0-3).

Usage: python bench/make_label_set.py OUT.jsonl [--per-model-roles 40]
Each row: id, model, role, role_description, in_role, system, question, response.
Roles and questions are drawn deterministically (seeded) from the catalogue; about one in
six rows uses a default (Assistant) prompt so the set contains plain assistant answers too.
"""

from __future__ import annotations

import argparse
import json
import random

from personaspace import load_model
from personaspace.capture import SamplingConfig, generate
from personaspace.catalogue import load_catalogue
from personaspace.conversation.prompts import format_prompt


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--models", default="smollm2-135m-instruct:120,gemma-3-270m:40")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    cat = load_catalogue()
    rng = random.Random(args.seed)
    roles = sorted(cat.roles.values(), key=lambda r: r.name)
    questions = sorted(cat.questions.values(), key=lambda q: q.id)
    rows = []
    for spec in args.models.split(","):
        alias, n = spec.split(":")
        lm = load_model(alias)
        items = []
        for i in range(int(n)):
            q = rng.choice(questions)
            if i % 6 == 5:
                items.append((None, rng.choice([p for p in cat.default_prompts if p]), q))
            else:
                r = rng.choice(roles)
                items.append((r, rng.choice(r.prompts), q))
        prompts = [
            format_prompt(lm, q.text, s.format(model_name=lm.display_name)) for _, s, q in items
        ]
        config = SamplingConfig(
            max_new_tokens=64, temperature=0.7, top_p=0.9, seed=args.seed
        ).for_model(lm.chat_tuned)
        gens = generate(lm, prompts, config, reductions=(), batch_size=32)
        for i, ((role, system, q), g) in enumerate(zip(items, gens)):
            rows.append(
                {
                    "id": f"{alias}-{i:03d}",
                    "model": alias,
                    "role": role.name if role else "default",
                    "role_description": role.description if role else "the model's default self",
                    "in_role": role.in_role if role else "",
                    "system": system,
                    "question": q.text,
                    "response": g.text,
                }
            )
    with open(args.out, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
