"""One unit of generation work: a group of consecutive shards, generated, judged and turned
into per-shard records and vectors, the same way in one process and on a Ray worker.

The group a shard belongs to, the batches inside it and every item's seed depend on the run's
work alone (never on the process, the worker or the order groups finish), so a group computed
anywhere yields the same bytes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TypedDict

import torch

from personaspace.capture import Generation, SamplingConfig, generate, response_means
from personaspace.catalogue import Catalogue
from personaspace.conversation.prompts import format_prompt
from personaspace.judge import Judge, RoleItem, TraitItem
from personaspace.models import LoadedModel
from personaspace.pipeline.work import WorkItem
from personaspace.runfolder import ResponseRecord

GROUP_BATCHES = 4  # shards are generated together up to this many full batches
PROMPT_ROOM = 256  # tokens allowed for a prompt when choosing an automatic batch size


class Scores(TypedDict, total=False):
    """The judge's scores of one reply: ``score`` (0-3) for roles, ``trait_score`` for traits."""

    score: int | None
    trait_score: float | None


def shard_groups(sizes: dict[str, int], batch_size: int) -> list[list[str]]:
    """Consecutive shards packed up to ``GROUP_BATCHES`` batches of ``batch_size`` items, so
    that generation runs mostly full batches (a role's shard alone is smaller than a batch).
    The packing depends on the work alone (every shard, finished or not), so a resumed run
    and every worker of a distributed one repeat it exactly.

    Example:
        >>> shard_groups({"default": 2, "role/a": 2, "role/b": 3, "trait/t": 4}, 1)
        [['default', 'role/a'], ['role/b'], ['trait/t']]
    """
    size = batch_size * GROUP_BATCHES
    groups: list[list[str]] = []
    current: list[str] = []
    count = 0
    for shard, n in sizes.items():
        if current and count + n > size:
            groups.append(current)
            current, count = [], 0
        current.append(shard)
        count += n
    if current:
        groups.append(current)
    return groups


@dataclass(frozen=True)
class ShardOutput:
    """A finished shard: its records and its replies' mean activations ``[n, layers, hidden]``."""

    shard: str
    records: list[ResponseRecord]
    vectors: torch.Tensor


@dataclass(frozen=True)
class GroupOutput:
    """A computed group: its shards in order, the tokens generated and where the time went."""

    shards: list[ShardOutput]
    new_tokens: int
    generate_s: float
    judge_s: float


def catalogue_for(catalogue: Catalogue, group: list[list[WorkItem]]) -> Catalogue:
    """The part of ``catalogue`` that judging ``group`` reads (its roles and traits, and the
    rubrics): what a worker is sent with the group, a few kilobytes.

    Example:
        >>> from personaspace.catalogue import load_catalogue
        >>> part = catalogue_for(load_catalogue(), [])
        >>> (len(part.roles), len(part.questions), len(part.rubrics) > 0)
        (0, 0, True)
    """
    names = {it.name for shard in group for it in shard}
    return Catalogue(
        roles={n: r for n, r in catalogue.roles.items() if n in names},
        traits={n: t for n, t in catalogue.traits.items() if n in names},
        questions={},
        scenarios={},
        modulation={},
        capability={},
        default_prompts=(),
        rubrics=catalogue.rubrics,
    )


def judge_items(
    judge: Judge, catalogue: Catalogue, items: list[WorkItem], answers: list[str]
) -> list[Scores]:
    """The judge's scores of each item's answer (roles scored 0-3, traits 0-100).

    Example:
        >>> from personaspace.judge import make_judge
        >>> from personaspace.catalogue import load_catalogue
        >>> judge_items(make_judge("none", load_catalogue()), load_catalogue(), [], [])
        []
    """
    scores: list[Scores] = [{} for _ in items]
    role_idx = [i for i, it in enumerate(items) if it.kind == "role"]
    trait_idx = [i for i, it in enumerate(items) if it.kind.startswith("trait")]
    role_scores = judge.score_roles(
        [RoleItem(catalogue.roles[items[i].name], items[i].question, answers[i]) for i in role_idx]
    )
    trait_scores = judge.score_traits(
        [
            TraitItem(catalogue.traits[items[i].name], items[i].question, answers[i])
            for i in trait_idx
        ]
    )
    for i, s in zip(role_idx, role_scores):
        scores[i]["score"] = s
    for i, t in zip(trait_idx, trait_scores):
        scores[i]["trait_score"] = None if t is None else round(float(t), 2)
    return scores


def response_record(
    item: WorkItem, reply: Generation, judge: str, scores: Scores
) -> ResponseRecord:
    """The line of ``responses.jsonl`` for one generated, judged item."""
    record: ResponseRecord = {
        "id": item.id,
        "shard": item.shard,
        "kind": item.kind,
        "name": item.name,
        "prompt_index": item.prompt_index,
        "question_id": item.question_id,
        "system": item.system,
        "question": item.question,
        "response": reply.text,
        "n_tokens": len(reply.token_ids),
        "finish_reason": reply.finish_reason,
        "seed": item.seed,
        "judge": judge,
    }
    if "score" in scores:
        record["score"] = scores["score"]
    if "trait_score" in scores:
        record["trait_score"] = scores["trait_score"]
    return record


def compute_group(
    lm: LoadedModel,
    judge: Judge,
    catalogue: Catalogue,
    group: list[list[WorkItem]],
    sampling: SamplingConfig,
    layers: list[int],
    batch_size: int,
) -> GroupOutput:
    """Generate (capturing ``layers``) and judge one group of shards (each a list of items),
    in one ``generate`` call so its batches are the same wherever it runs.

    Example:
        >>> out = compute_group(lm, judge, cat, [items], sampling, [0, 1], 4)  # doctest: +SKIP
        >>> out.shards[0].vectors.shape  # doctest: +SKIP
        torch.Size([4, 2, 64])
    """
    items = [it for shard in group for it in shard]
    started = time.perf_counter()
    gens = generate(
        lm,
        [format_prompt(lm, it.question, it.system) for it in items],
        sampling,
        layers=layers,
        batch_size=batch_size,
        seeds=[it.seed for it in items],
    )
    generated = time.perf_counter()
    scores = judge_items(judge, catalogue, items, [g.text for g in gens])
    judged = time.perf_counter()
    outputs: list[ShardOutput] = []
    start = 0
    for shard_items in group:
        part = slice(start, start + len(shard_items))
        records = [
            response_record(it, g, judge.name, sc)
            for it, g, sc in zip(shard_items, gens[part], scores[part])
        ]
        outputs.append(ShardOutput(shard_items[0].shard, records, response_means(gens[part])))
        start = part.stop
    return GroupOutput(
        outputs,
        sum(len(g.token_ids) for g in gens),
        generate_s=generated - started,
        judge_s=judged - generated,
    )
