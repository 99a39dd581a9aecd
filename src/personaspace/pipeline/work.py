"""The work of an axis run as items grouped in shards (one per role, default, trait)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from personaspace.catalogue import Role, Selection
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


def character_card(role: Role) -> str:
    """The line that tells a small model which character it plays, put before each role
    prompt: the prompts alone often leave a 135M model answering as itself. On 50 SmolLM2
    draws labelled blind, the card before the prompt raised the replies scored 2 or 3 from
    9 to 16 (11 gained, 4 lost: exact McNemar p = 0.12, a gain in the right direction that
    50 draws cannot confirm); see docs/studies/trustworthy-axis.md.

    Example:
        >>> from personaspace.catalogue import Role
        >>> role = Role("sea_captain", "profession", "A weathered captain.", ("Hi",), "")
        >>> character_card(role).split(". ")[:2]
        ['You are playing a character: sea captain', 'A weathered captain']
    """
    return (
        f"You are playing a character: {role.name.replace('_', ' ')}. {role.description} "
        "Answer in that character's own voice, in the first person."
    )


def build_work(
    selection: Selection,
    model_name: str,
    run_seed: int,
    trait_questions: int | None,
    *,
    chat_tuned: bool = True,
    role_card: bool = True,
) -> dict[str, list[WorkItem]]:
    """All items of a run, by shard id, in a fixed order.

    ``chat_tuned=False`` (a base model) changes only the default prompts' text
    (``default_system_prompt``); item ids and seeds are the same either way. ``role_card``
    puts the role's ``character_card`` before each of its prompts.
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
            system = f"{character_card(role)} {prompt}" if role_card else prompt
            for question in selection.questions:
                add(f"role/{role.name}", "role", role.name, p, question.id, system, question.text)
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
