"""Generate real replies from the bundled models for hand-labelling (roles 0-3, traits 0-100).

Usage:
    python bench/make_label_set.py roles OUT.jsonl [--models smollm2-135m-instruct:140,...]
    python bench/make_label_set.py traits OUT.jsonl [--models ...]
    python bench/make_label_set.py framing OUT.jsonl --models smollm2-135m-instruct:50

Replies are made the way an axis run makes them (the run's decoding: temperature 0.7,
top-p 0.9, 64 new tokens; the same prompt formatting), but with a seed and questions of
their own: role rows use questions outside the first 24 a preset deals (quick takes
fewer), trait rows the traits' evaluation questions (runs extract from the extraction
questions), so a judge fitted on the labels is measured on replies no preset run produces.

``framing`` rows are the character-card experiment (``framing_items``): the 150 rows of
``tests/data/judge_labels.jsonl`` whose ids start ``fr-`` came from
``framing OUT --models smollm2-135m-instruct:50 --seed 3 --sampling-seed 5``.

Role rows: id, model, role, role_description, in_role, system, question, response.
Trait rows: id, model, trait, trait_description, rubric, instruction (pos/neg), system,
question, response. Roles, traits, prompts and questions are drawn with ``--seed``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
from typing import Any

from personaspace import load_model
from personaspace.capture import generate
from personaspace.catalogue import load_catalogue, select
from personaspace.catalogue.presets import deal_questions
from personaspace.conversation.prompts import format_prompt
from personaspace.pipeline.config import AXIS_SAMPLING
from personaspace.pipeline.work import character_card

QUICK_RESERVE = 24
Item = tuple[dict[str, Any], str, str]  # (row fields, system prompt, question)


def role_items(n: int, rng: random.Random) -> list[Item]:
    cat = load_catalogue()
    # the first QUICK_RESERVE questions a preset deals are left to runs (quick takes fewer)
    reserved = {q.id for q in deal_questions(cat.questions.values(), QUICK_RESERVE)}
    questions = sorted(
        (q for q in cat.questions.values() if q.id not in reserved), key=lambda q: q.id
    )
    roles = sorted(cat.roles.values(), key=lambda r: r.name)
    items = []
    for _ in range(n):
        role, question = rng.choice(roles), rng.choice(questions)
        system = rng.choice(role.prompts)
        fields = {
            "role": role.name,
            "role_description": role.description,
            "in_role": role.in_role,
            "question_id": question.id,
            "question_category": question.category,
        }
        items.append((fields, system, question.text))
    return items


def trait_items(n: int, rng: random.Random) -> list[Item]:
    cat = load_catalogue()
    quick = [t.name for t in select(cat, "quick").traits]
    others = sorted(set(cat.traits) - set(quick))
    items = []
    for i in range(n):
        # half the rows from the quick preset's traits, half from the rest
        trait = cat.traits[rng.choice(quick) if i % 2 == 0 else rng.choice(others)]
        pair = rng.choice(trait.pairs)
        sign = rng.choice(("pos", "neg"))
        fields = {
            "trait": trait.name,
            "trait_description": trait.description,
            "rubric": trait.rubric,
            "instruction": sign,
        }
        question = rng.choice(trait.evaluation_questions or trait.extraction_questions)
        items.append((fields, pair.pos if sign == "pos" else pair.neg, question))
    return items


def framing_items(n: int, rng: random.Random) -> list[Item]:
    """The framing experiment: ``n`` (role, character question, prompt) draws, each asked
    three ways: ``V0`` the role prompt alone, ``V1`` the character card alone, ``V2`` the
    card before the prompt (what an axis run asks since the card was adopted)."""
    cat = load_catalogue()
    reserved = {q.id for q in deal_questions(cat.questions.values(), QUICK_RESERVE)}
    questions = sorted(
        (
            q
            for q in cat.questions.values()
            if q.id not in reserved and not q.category.startswith("task_")
        ),
        key=lambda q: q.id,
    )
    roles = list(select(cat, "quick").roles)
    items = []
    for i in range(n):
        role, question = roles[i % len(roles)], rng.choice(questions)
        prompt, card = role.prompts[i % 2], character_card(role)
        fields = {"role": role.name, "role_description": role.description, "in_role": role.in_role}
        for variant, system in (("V0", prompt), ("V1", card), ("V2", f"{card} {prompt}")):
            items.append(({"variant": variant, **fields}, system, question.text))
    return items


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=("roles", "traits", "framing"))
    parser.add_argument("out")
    parser.add_argument("--models", default="smollm2-135m-instruct:140,gemma-3-270m:70")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--prefix", default="", help="prefix of the row ids")
    parser.add_argument("--sampling-seed", type=int, default=None, help="default: --seed")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    make = {"roles": role_items, "traits": trait_items, "framing": framing_items}[args.kind]
    sampling_seed = args.seed if args.sampling_seed is None else args.sampling_seed
    rows = []
    for spec in args.models.split(","):
        alias, n = spec.split(":")
        items = make(int(n), rng)
        lm = load_model(alias)
        prompts = [format_prompt(lm, question, system) for _, system, question in items]
        config = dataclasses.replace(AXIS_SAMPLING, seed=sampling_seed).for_model(lm.chat_tuned)
        replies = generate(lm, prompts, config, reductions=())
        for i, ((fields, system, question), reply) in enumerate(zip(items, replies)):
            rows.append(
                {
                    "id": f"{args.prefix}{alias}-{args.kind}-{i:03d}",
                    "model": alias,
                    **fields,
                    "system": system,
                    "question": question,
                    "response": reply.text,
                }
            )
    with open(args.out, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
