"""The work of an axis run as items grouped in shards (one per role, default, trait)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from personaspace.catalogue import Selection
from personaspace.conversation.prompts import default_system_prompt

Kind = str  # "role" | "default" | "trait_pos" | "trait_neg"


@dataclass(frozen=True)
class WorkItem:
    """One generation: a system prompt (or none) and a question, with its own seed."""

    id: str
    shard: str
    kind: Kind
    name: str
    prompt_index: int
    question_id: str
    system: str | None
    question: str
    seed: int


def item_seed(run_seed: int, item_id: str) -> int:
    """A seed that depends only on the run seed and the item, never on batching or order.

    Example:
        >>> item_seed(0, "role/pirate/p0/q001") == item_seed(0, "role/pirate/p0/q001")
        True
    """
    digest = hashlib.sha256(f"{run_seed}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:7], "big")


def build_work(
    selection: Selection,
    model_name: str,
    run_seed: int,
    trait_questions: int | None,
    *,
    chat_tuned: bool = True,
) -> dict[str, list[WorkItem]]:
    """All items of a run, by shard id, in a fixed order.

    ``chat_tuned=False`` (a base model) changes only the default prompts' text
    (``default_system_prompt``); item ids and seeds are the same either way.
    """
    shards: dict[str, list[WorkItem]] = {}

    def add(
        shard: str, kind: Kind, name: str, p: int, qid: str, system: str | None, q: str
    ) -> None:
        item_id = f"{shard}/p{p}/{qid}"
        shards.setdefault(shard, []).append(
            WorkItem(item_id, shard, kind, name, p, qid, system, q, item_seed(run_seed, item_id))
        )

    for p, prompt in enumerate(selection.default_prompts):
        system = default_system_prompt(prompt, model_name, chat_tuned=chat_tuned)
        for question in selection.questions:
            add("default", "default", "default", p, question.id, system, question.text)
    for role in selection.roles:
        for p, prompt in enumerate(role.prompts):
            for question in selection.questions:
                add(f"role/{role.name}", "role", role.name, p, question.id, prompt, question.text)
    for trait in selection.traits:
        questions = trait.extraction_questions[:trait_questions]
        for p, pair in enumerate(trait.pairs):
            for qi, text in enumerate(questions):
                for kind, system in (("trait_pos", pair.pos), ("trait_neg", pair.neg)):
                    add(
                        f"trait/{trait.name}",
                        kind,
                        trait.name,
                        p,
                        f"{kind}/x{qi:02d}",
                        system,
                        text,
                    )
    return shards
