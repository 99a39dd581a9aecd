"""The diagnostics every axis run reports, and the random-init null they are read against.

For the trained model (``analysis.diagnostics`` on the run's replies): split-half
reliability by questions and by prompts, bootstrap intervals over questions for
cos(axis, PC1) and the default's PC1 rank, held-out default-vs-role AUC per layer, and the
leave-one-role-out null (is the default special, or would any role do?).

**The random-init null**: a model of the same architecture with seeded random weights reads
the very same prompts and replies (teacher forcing: the construction of the run, its
default-vs-role prompts and its kept replies, with nothing learned), and the same figures
are computed from its states. A replication found |cos(axis, PC1)| = 0.87 for a randomly
initialised Pythia-410M: what a trained model shows must stand above this. The null's
vectors are cached under ``$PERSONASPACE_CACHE/nulls/``.

A figure the nulls cannot tell apart from chance is named in ``verdict``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from personaspace.analysis.compare import ComparedRun, default_null
from personaspace.analysis.diagnostics import (
    ReplySet,
    best_layer,
    bootstrap_over_questions,
    build_axis,
    held_out_auc,
    space_figures,
    split_half,
)
from personaspace.capture.teacher import capture_conversations
from personaspace.conversation.prompts import format_exchange
from personaspace.fileformat import load_vectors, save_vectors
from personaspace.models.adapters import adapter_for
from personaspace.models.cache import cache_root
from personaspace.models.loading import LoadedModel
from personaspace.pipeline.aggregate import Aggregate
from personaspace.runfolder import ResponseRecord

NULL_SEED = 1234
NULL_PER_ROLE = 6  # the null reads a sample: a forward pass over every reply costs minutes
NULL_DEFAULTS = 24
ALPHA = 0.05


def reply_set(
    records: Sequence[ResponseRecord],
    vectors: torch.Tensor,
    agg: Aggregate,
    score_threshold: int,
) -> tuple[ReplySet, list[int]]:
    """The default and role replies the aggregation used, and their indices in ``records``."""
    index, kinds, names, questions, prompts, kept = [], [], [], [], [], []
    for i, r in enumerate(records):
        if r["kind"] not in ("default", "role") or r.get("n_tokens", 1) == 0:
            continue
        if r["kind"] == "role":
            score = r.get("score")
            judged = r.get("judge") == "none" or (score is not None and score >= score_threshold)
            keep = r["name"] in agg.role_vectors and judged
        else:
            keep = True
        index.append(i)
        kinds.append(r["kind"])
        names.append(r["name"])
        questions.append(r["question_id"])
        prompts.append(r["prompt_index"])
        kept.append(keep)
    return ReplySet(vectors[index].float(), kinds, names, questions, prompts, kept), index


def _round(values: Sequence[float] | None, digits: int = 4) -> list[float] | None:
    return None if values is None else [round(float(v), digits) for v in values]


def layer_figures(replies: ReplySet, layers: list[int]) -> dict[str, Any]:
    """cos(axis, PC1) per layer (PC1 toward the default) of a reply set's axis."""
    built = build_axis(replies)
    if built is None:
        return {"cos_axis_pc1": None}
    cosines = [space_figures(*built, row)[0] for row in range(len(layers))]
    return {"cos_axis_pc1": _round(cosines)}


def leave_one_role_out(replies: ReplySet, layers: list[int], layer: int) -> dict[str, Any] | None:
    """``compare.default_null`` on this run's own roles at ``layer``."""
    built = build_axis(replies)
    if built is None or len(built[1]) < 3:
        return None
    default, roles, axis = built
    run = ComparedRun(
        "run", "run", layers, len(layers), axis.shape[-1], layer, axis, default, roles
    )
    null = default_null(run, sorted(roles), layer)
    return {
        k: null[k] for k in ("default_abs_cos", "p_cos", "default_rank", "p_extreme", "n_roles")
    }


def reply_diagnostics(
    replies: ReplySet,
    layers: list[int],
    layer: int,
    auc: list[float] | None,
    *,
    draws: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Split halves, bootstrap intervals and the leave-one-role-out null, beside the
    held-out AUC already computed (``held_out_auc(replies)``, which chooses ``--layer auto``)."""
    at = replace(replies, vectors=replies.vectors[:, [layers.index(layer)]])
    intervals = bootstrap_over_questions(at, 0, draws=draws, seed=seed)
    by_question, by_prompt = split_half(replies, "question"), split_half(replies, "prompt")
    return {
        "split_half_questions": _round(by_question),
        "split_half_prompts": _round(by_prompt),
        "held_out_auc": _round(auc),
        "best_layer_by_auc": best_layer(auc, layers) if auc else None,
        "bootstrap": None
        if intervals is None
        else {
            "over": "questions",
            "cos_axis_pc1": intervals[0].to_json(),
            "default_pc1_rank": intervals[1].to_json(),
        },
        "leave_one_role_out": leave_one_role_out(replies, layers, layer),
    }


def _null_key(lm: LoadedModel, records: Sequence[ResponseRecord], index: list[int]) -> str:
    config = getattr(lm.model, "config", None)
    text = json.dumps(config.to_dict() if config is not None else {}, sort_keys=True, default=str)
    digest = hashlib.sha256()
    digest.update(f"{lm.model_id}|{lm.dtype}|{NULL_SEED}|{text}".encode())
    for i in index:
        r = records[i]
        digest.update(f"{r['system']}\x00{r['question']}\x00{r['response']}\x01".encode())
    return digest.hexdigest()[:20]


def random_init_model(lm: LoadedModel, seed: int = NULL_SEED) -> LoadedModel:
    """A model of ``lm``'s architecture with seeded random weights (same tokenizer)."""
    config = getattr(lm.model, "config", None)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(config).to(device=lm.device, dtype=lm.dtype)
    finally:
        torch.random.set_rng_state(generator_state)
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(
        model=model,
        tokenizer=lm.tokenizer,
        adapter=adapter_for(model),
        model_id=f"random-init:{lm.model_id}",
        display_name=lm.display_name,
        chat_tuned=lm.chat_tuned,
    )


def random_init_vectors(
    lm: LoadedModel, records: Sequence[ResponseRecord], index: list[int], layers: list[int]
) -> torch.Tensor:
    """The replies' response means under the random-init model (cached in float16; the
    first run and every later one read the same values)."""
    path = cache_root() / "nulls" / f"{_null_key(lm, records, index)}.safetensors"
    if path.is_file():
        return load_vectors(path)[0]["response_mean"].float()
    null_lm = random_init_model(lm)
    conversations = [
        format_exchange(
            null_lm, records[i]["question"], records[i]["response"], records[i]["system"]
        )
        for i in index
    ]
    captures = capture_conversations(null_lm, conversations, layers=layers, batch_size=16)
    vectors = torch.stack([c.turn_means[0] for c in captures]).half()  # as cached
    save_vectors(path, {"response_mean": vectors}, {"model_id": null_lm.model_id, "layers": layers})
    return vectors.float()


def null_sample(
    replies: ReplySet, per_role: int = NULL_PER_ROLE, defaults: int = NULL_DEFAULTS
) -> list[int]:
    """Positions in ``replies`` the null reads: up to ``per_role`` kept replies of each
    role and ``defaults`` default replies, evenly spaced in run order (so both prompts and
    both halves of the questions are present).

    Example:
        >>> rs = ReplySet(torch.zeros(6, 1, 2), ["default"] * 2 + ["role"] * 4,
        ...               ["d", "d", "a", "a", "a", "a"], list("qrqrqr"), [0] * 6, [True] * 6)
        >>> null_sample(rs, per_role=2, defaults=1)
        [0, 2, 4]
    """

    def spaced(positions: list[int], n: int) -> list[int]:
        if len(positions) <= n:
            return positions
        return [positions[(k * len(positions)) // n] for k in range(n)]

    chosen = spaced([i for i, k in enumerate(replies.kinds) if k == "default"], defaults)
    for name in sorted({n for n, k in zip(replies.names, replies.kinds) if k == "role"}):
        mine = [
            i
            for i, (k, n) in enumerate(zip(replies.kinds, replies.names))
            if k == "role" and n == name and replies.kept[i]
        ]
        chosen += spaced(mine, per_role)
    return sorted(chosen)


def _subset(
    replies: ReplySet, positions: list[int], vectors: torch.Tensor | None = None
) -> ReplySet:
    return ReplySet(
        replies.vectors[positions] if vectors is None else vectors,
        [replies.kinds[i] for i in positions],
        [replies.names[i] for i in positions],
        [replies.questions[i] for i in positions],
        [replies.prompts[i] for i in positions],
        [replies.kept[i] for i in positions],
    )


def _figures(replies: ReplySet, layers: list[int], layer: int) -> dict[str, Any]:
    figures = {
        **layer_figures(replies, layers),
        **reply_diagnostics(replies, layers, layer, held_out_auc(replies), draws=0),
    }
    del figures["bootstrap"]
    return figures


def random_init_null(
    lm: LoadedModel,
    records: Sequence[ResponseRecord],
    replies: ReplySet,
    index: list[int],
    layers: list[int],
    layer: int,
) -> dict[str, Any]:
    """The figures of the random-init model on the same construction, read over a sample
    of the kept replies (``null_sample``), beside the trained model's figures on the very
    same sample (``trained_same_replies``: the like-for-like comparison)."""
    positions = null_sample(replies)
    vectors = random_init_vectors(lm, records, [index[i] for i in positions], layers)
    return {
        "model": f"random-init:{lm.model_id} (seed {NULL_SEED}), teacher-forced over the "
        "run's own prompts and kept replies",
        "replies": len(positions),
        "sample": f"up to {NULL_PER_ROLE} kept replies per role and {NULL_DEFAULTS} default "
        "replies, evenly spaced",
        **_figures(_subset(replies, positions, vectors), layers, layer),
        "trained_same_replies": _figures(_subset(replies, positions), layers, layer),
    }


def verdict(
    trained: dict[str, Any], null: dict[str, Any] | None, cos_at: float, row: int
) -> list[str]:
    """The figures that a null cannot tell apart from chance (empty: all stand above)."""
    lines = []
    boot = trained.get("bootstrap") or {}
    loo = trained.get("leave_one_role_out") or {}
    if loo and loo["p_cos"] > ALPHA:
        lines.append(
            f"cos(axis, PC1): the default's |cos| {loo['default_abs_cos']:.3f} is not above what "
            f"a role playing the default gives (leave-one-role-out p = {loo['p_cos']:.2f})"
        )
    if loo and loo["p_extreme"] > ALPHA:
        lines.append(
            f"the default's PC1 rank ({loo['default_rank']}) is not more extreme than a role's "
            f"(leave-one-role-out p = {loo['p_extreme']:.2f})"
        )
    if null is not None and null.get("cos_axis_pc1"):
        null_cos = abs(null["cos_axis_pc1"][row])
        low = abs(boot["cos_axis_pc1"]["low"]) if boot else abs(cos_at)
        if low <= null_cos:
            lines.append(
                f"|cos(axis, PC1)| {abs(cos_at):.3f} (95% interval low {low:.3f}) does not stand "
                f"above the random-init null's {null_cos:.3f}"
            )
    same = (null or {}).get("trained_same_replies") or trained
    for key, label in (
        ("split_half_questions", "split-half reliability"),
        ("held_out_auc", "held-out default-vs-role AUC"),
    ):
        ours = (same.get(key) or [None] * (row + 1))[row]
        theirs = ((null or {}).get(key) or [None] * (row + 1))[row]
        if ours is not None and theirs is not None and ours <= theirs:
            lines.append(
                f"{label} {ours:.3f} is not above the random-init null's {theirs:.3f} "
                "(on the same replies)"
            )
    return lines
