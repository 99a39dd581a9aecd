"""The grown assistant: measure a base model becoming a chat assistant, rung by rung.

Three measurements for the study of docs/studies/grown-assistant.md, each a pure function
of a loaded model (or run folders) so that the study script only orchestrates:

- ``assistant_evidence``: did it become an assistant? The share of its replies to the
  catalogue's self-description questions that present it as an AI (the local judge's
  AI-identity phrases), its accuracy on capability items (with chance beside it), and
  how often it keeps the chat format (ends its turn before the token limit).
- ``random_init_rung``: the seeded random-init model of the same architecture, teacher
  forced over another rung's own prompts and replies, written as a run folder (vectors
  and axis) that ``compare`` reads like any rung: the construction's null.
- ``monitor_across``: one model's validation transcripts projected on several axes of
  its architecture (e.g. the base model's and the tuned model's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from scipy import stats

from personaspace.capture import SamplingConfig, capture_conversations, generate
from personaspace.catalogue import Catalogue
from personaspace.conversation.prompts import default_system, format_exchange, format_prompt
from personaspace.errors import PersonaspaceError
from personaspace.experiments.cap_eval import has_ai_marker
from personaspace.experiments.finetune_shift import capability_items
from personaspace.experiments.scoring import capability_prompt, chance_accuracy, is_correct
from personaspace.models.loading import LoadedModel
from personaspace.monitor.transcripts import Transcript
from personaspace.monitor.validate import validate_axis
from personaspace.pipeline.aggregate import aggregate, save_aggregate
from personaspace.pipeline.diagnose import NULL_SEED, random_init_model
from personaspace.pipeline.work import item_seed
from personaspace.runfolder import RunFolder

IDENTITY_CATEGORY = "self_description"
# room to finish: the study's training answers are at most 192 tokens
IDENTITY_SAMPLING = SamplingConfig(max_new_tokens=256, temperature=0.7, top_p=0.9)
CAPABILITY_SAMPLING = SamplingConfig(max_new_tokens=24)


def share(flags: Sequence[bool]) -> dict[str, Any]:
    """The share of ``True`` with its exact (Clopper-Pearson) 95 % interval.

    Example:
        >>> share([True, False, False, True])["share"]
        0.5
        >>> round(share([True, False, False, True])["low"], 3)
        0.068
    """
    k, n = sum(flags), len(flags)
    if not n:
        return {"share": None, "low": None, "high": None, "k": 0, "n": 0}
    ci = stats.binomtest(k, n).proportion_ci(0.95)
    return {"share": k / n, "low": float(ci.low), "high": float(ci.high), "k": k, "n": n}


def identity_questions(catalogue: Catalogue) -> list[str]:
    """The catalogue's self-description questions ("who are you?"), in id order."""
    return [
        q.text for _, q in sorted(catalogue.questions.items()) if q.category == IDENTITY_CATEGORY
    ]


def assistant_evidence(
    lm: LoadedModel,
    catalogue: Catalogue,
    *,
    capability: int = 40,
    identity_tokens: int = IDENTITY_SAMPLING.max_new_tokens,
    seed: int = 0,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Whether ``lm`` behaves as a chat assistant, under its default prompt (a chat model:
    no system prompt; a base model read as a transcript: the helpful-assistant frame).

    Returns the AI-identity share of its replies to the self-description questions, its
    capability accuracy (greedy, ``capability`` items spread over all topics) with chance
    beside it, and the share of all those replies that ended their turn themselves
    (``ended_turn``: the end-of-turn token, or for a transcript the next ``User:`` line)
    rather than at the token limit; each share with its 95 % interval. The replies are
    returned too.

    Example:
        >>> evidence = assistant_evidence(lm, load_catalogue())  # doctest: +SKIP
        >>> evidence["ai_identity"]["share"]  # doctest: +SKIP
        0.85
    """
    system = default_system(lm.chat_tuned)
    questions = identity_questions(catalogue)
    items = capability_items(catalogue, capability)
    with torch.no_grad():
        replies = generate(
            lm,
            [format_prompt(lm, q, system) for q in questions],
            replace(IDENTITY_SAMPLING, max_new_tokens=identity_tokens).for_model(lm.chat_tuned),
            reductions=(),
            seeds=[item_seed(seed, f"grown/identity/{q}") for q in questions],
            batch_size=batch_size,
        )
        answers = generate(
            lm,
            [format_prompt(lm, capability_prompt(item), system) for item in items],
            CAPABILITY_SAMPLING.for_model(lm.chat_tuned),
            reductions=(),
            batch_size=batch_size,
        )
    correct = [is_correct(item, g.text) for item, g in zip(items, answers)]
    accuracy = share(correct)
    return {
        "model_id": lm.model_id,
        "chat_format": lm.chat_tuned,
        "ai_identity": share([has_ai_marker(g.text) for g in replies]),
        "capability": {**accuracy, "chance": chance_accuracy(items)},
        "ended_turn": share([g.finish_reason == "stop" for g in [*replies, *answers]]),
        "identity_ended_turn": share([g.finish_reason == "stop" for g in replies]),
        "identity_max_new_tokens": identity_tokens,
        "mean_identity_tokens": sum(len(g.token_ids) for g in replies) / max(len(replies), 1),
        "identity_replies": [{"question": q, "reply": g.text} for q, g in zip(questions, replies)],
        "capability_answers": [
            {"id": item.id, "answer": g.text, "correct": ok}
            for item, g, ok in zip(items, answers, correct)
        ],
    }


def random_init_rung(
    source: str | Path,
    out: str | Path,
    lm: LoadedModel,
    *,
    seed: int = NULL_SEED,
    batch_size: int = 16,
    on_batch: Callable[[int, int], object] | None = None,
) -> RunFolder:
    """The random-init rung: ``lm``'s architecture with seeded random weights, teacher
    forced over ``source``'s role and default replies (its prompts, its replies, its
    judge's scores decide which replies count), aggregated as the source was, and written
    to ``out`` as a run folder with vectors and an axis (no generation: a random network
    writes no role replies to judge).

    Example:
        >>> rung = random_init_rung("runs/grown/axis-final", "runs/grown/axis-random",
        ...                         load_model("gemma-3-270m"))  # doctest: +SKIP
        >>> rung.compared().analysis_layer  # doctest: +SKIP
        9
    """
    folder = RunFolder(source)
    header, settings = folder.header(), folder.settings()
    if (
        int(header.get("hidden_size", -1)) != lm.adapter.hidden_size
        or int(header.get("n_layers", -1)) != lm.adapter.n_layers
    ):
        raise PersonaspaceError(
            f"{folder.path} was run on a model of another shape than {lm.model_id}",
            fix="give the source run of a model of this architecture",
        )
    layer = folder.analysis_layer()
    if layer is None:
        raise PersonaspaceError(f"{folder.path} has no axis", fix="give a finished axis run")
    records = [r for r in folder.responses() if r["kind"] in ("role", "default")]
    null_lm = random_init_model(lm, seed)
    conversations = [
        format_exchange(null_lm, r["question"], r["response"], r["system"]) for r in records
    ]
    vectors = []
    layers = list(folder.vectors().layers)
    for start in range(0, len(conversations), batch_size):
        batch = conversations[start : start + batch_size]
        captures = capture_conversations(null_lm, batch, layers=layers, batch_size=batch_size)
        vectors += [c.turn_means[0] for c in captures]
        if on_batch is not None:
            on_batch(start + len(batch), len(conversations))
    agg = aggregate(
        records,
        torch.stack(vectors),
        score_threshold=int(settings.get("score_threshold", 3)),
        min_count=int(settings.get("min_count", 3)),
        trait_threshold=float(settings.get("trait_threshold", 50.0)),
    )
    target = RunFolder(out)
    target.path.mkdir(parents=True, exist_ok=True)
    model_id = f"random-init:{header.get('model_id')} (seed {seed})"
    target.write_header({**header, "model_id": model_id, "random_init_of": str(folder.path)})
    save_aggregate(
        target,
        replace(agg, trait_vectors={}, trait_pair_counts={}),  # the rung compares roles
        records,
        model_id=model_id,
        layers=layers,
        hidden_size=lm.adapter.hidden_size,
        n_layers=lm.adapter.n_layers,
        unit="raw residual stream (post-block), teacher-forced over the source's replies",
        axis_layer=layer,
    )
    target.write_summary(
        {
            "model_id": model_id,
            "random_init_of": str(folder.path),
            "n_layers": lm.adapter.n_layers,
            "hidden_size": lm.adapter.hidden_size,
            "replies": len(records),
            "roles_kept": len(agg.role_vectors),
        }
    )
    return target


def monitor_across(
    lm: LoadedModel,
    runs: dict[str, str | Path],
    transcripts: Sequence[Transcript],
    *,
    directions: int = 200,
) -> dict[str, Any]:
    """``lm``'s validation transcripts projected on each run's axis (at that run's analysis
    layer, in that run's default-role gaps): passes, the drifting-minus-stable separation as
    an effect size, and the share of random directions that separate as well.

    Example:
        >>> monitor_across(tuned, {"base": "runs/b", "tuned": "runs/t"},
        ...                read_validation_set())  # doctest: +SKIP
    """
    out: dict[str, Any] = {}
    for label, path in runs.items():
        folder = RunFolder(path)
        axis = folder.axis(lm)
        vectors = folder.vectors()
        layer = folder.analysis_layer()
        if layer is None or vectors.default is None:
            raise PersonaspaceError(f"{path} has no axis", fix="give a finished axis run")
        row = vectors.layers.index(layer)
        roles = torch.stack([v[row] for v in vectors.roles.values()]).double()
        report = validate_axis(
            lm,
            axis,
            layer,
            vectors.default[row].double(),
            roles,
            transcripts,
            directions=directions,
        )
        result = report.to_json()
        out[label] = {
            "run": str(folder.path),
            "layer": layer,
            "n_passed": result["n_passed"],
            "n": result["n"],
            "separation_effect_size": result["separation_effect_size"],
            "null_percentile": result["null"]["percentile_of_axis"],
            "rows": result["rows"],
        }
    return out
