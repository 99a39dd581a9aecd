"""The work of an axis run as items grouped in shards (one per role, default, trait)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from personaspace.catalogue import Selection

Kind = str  # "role" | "default" | "trait_pos" | "trait_neg"

# A base model cannot read "You are an AI assistant." as an instruction to itself; it reads
# a document. For base models each default prompt is preceded by this opening paragraph,
# which makes the document a transcript of a helpful AI assistant (see docs/formats.md).
BASE_DEFAULT_FRAME = (
    "The following is a transcript of a conversation between a user and a helpful AI "
    "assistant. The assistant answers the user's questions helpfully, honestly and directly."
)


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


def default_system_prompt(prompt: str, model_name: str, *, chat_tuned: bool = True) -> str | None:
    """The system prompt (opening paragraph, for base models) of one default prompt.

    Chat models get the catalogue prompt as it is (an empty prompt means no system
    message); base models get ``BASE_DEFAULT_FRAME`` first, then the prompt, if any, as a
    second paragraph.

    Example:
        >>> default_system_prompt("You are {model_name}.", "Gemma")
        'You are Gemma.'
        >>> default_system_prompt("", "Gemma") is None
        True
        >>> default_system_prompt("", "Gemma", chat_tuned=False) == BASE_DEFAULT_FRAME
        True
        >>> base = default_system_prompt("You are {model_name}.", "Gemma", chat_tuned=False)
        >>> base.split(chr(10) * 2)[1]
        'You are Gemma.'
    """
    filled = prompt.format(model_name=model_name) if prompt else ""
    if chat_tuned:
        return filled or None
    return BASE_DEFAULT_FRAME + ("\n\n" + filled if filled else "")


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
