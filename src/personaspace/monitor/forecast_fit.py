"""Fit a forecaster on transcripts: the turn table (features of each user turn, the next
reply's projection, the previous reply's), grouped cross-validation, nulls and the floor.

Everything of a conversation comes from one teacher-forced pass over it: the state at the
last prompt token before each reply is the state at the position just before that reply's
first content token (the model is causal, so later tokens do not change it; a test checks
it equals the state of a prompt-only pass), and the reply's projection is the mean of its
content tokens' states dotted with the unit axis (``project_turns``'s definition).

Two targets are fitted, as in the Assistant Axis paper: the **position** (the next reply's
projection) and the **change** (next minus previous, for replies after the first). Each is
scored by out-of-fold R^2 with folds grouped by conversation, beside a shuffled-target null
and a bootstrap interval over conversations (``analysis.ridge.grouped_r2``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from personaspace.analysis.ridge import DEFAULT_ALPHAS, Array, R2Report, fit_ridge, grouped_r2
from personaspace.capture.teacher import capture_conversations
from personaspace.conversation.format import format_conversation
from personaspace.errors import PersonaspaceError
from personaspace.models.loading import LoadedModel
from personaspace.monitor.forecast import (
    FeatureKind,
    Forecaster,
    TurnFeatures,
    user_embeddings,
)
from personaspace.monitor.projection import resolve_layers
from personaspace.monitor.transcripts import Transcript
from personaspace.vectors.axis import Axis

FLOOR_RULE = (
    "the {pct:g}th percentile of the fit data's reply projections (the replies the model "
    "gave to those user turns): forecasts below it are turns expected in the lowest "
    "{pct:g} % of what the model does"
)


@dataclass(frozen=True)
class TurnTable:
    """One row per (user turn, reply) pair of the transcripts.

    ``conversation``: the transcript's label (the cross-validation group); ``turn``: the
    reply's index among the conversation's assistant turns; ``target``: its projection;
    ``previous``: the previous reply's projection (``nan`` for the first).
    """

    layer: int
    conversation: list[str]
    turn: list[int]
    domain: list[str | None]
    user_text: list[str]
    features: TurnFeatures
    target: Array
    previous: Array

    def __len__(self) -> int:
        return len(self.target)


def user_turn_count(transcripts: Sequence[Transcript]) -> int:
    """Assistant replies that follow a user message (the rows a turn table would have).

    Example:
        >>> from personaspace.monitor.transcripts import parse_transcript
        >>> t = parse_transcript([{"role": "user", "content": "Hi"},
        ...                       {"role": "assistant", "content": "Hello"}], "x.json")
        >>> user_turn_count([t])
        1
    """
    return sum(
        1
        for t in transcripts
        for before, m in zip(t.messages, t.messages[1:])
        if m.role == "assistant" and before.role == "user"
    )


def turn_table(
    lm: LoadedModel,
    axis: Axis,
    transcripts: Sequence[Transcript],
    *,
    layer: int | None = None,
    embeddings: bool = True,
    batch_size: int = 4,
    on_batch: Callable[[int], object] | None = None,
) -> TurnTable:
    """Features and targets of every user turn of ``transcripts`` (one pass each).

    Args:
        lm: the model the axis was built on (checked).
        axis: from ``load_axis``.
        transcripts: conversations with user turns and replies.
        layer: where to read states and projections (default: the axis's middle layer).
        embeddings: compute the MiniLM embeddings (``False``: an empty ``[n, 0]`` block).
        batch_size: conversations per forward pass.
        on_batch: hears how many conversations each batch finished.

    Example:
        >>> table = turn_table(lm, axis, read_transcripts("chat.json"))  # doctest: +SKIP
        >>> table.features.state.shape, table.target[:2]  # doctest: +SKIP
        ((9, 576), array([4.1, 3.7]))
    """
    axis.check_model(lm)
    [chosen] = resolve_layers(axis, lm, None if layer is None else [layer])
    if user_turn_count(transcripts) == 0:
        raise PersonaspaceError(
            "the transcripts have no user turns followed by a reply",
            fix="give conversations with user messages and the assistant's replies",
        )
    unit = axis.unit(chosen).double().numpy()
    labels, turns, domains, texts = [], [], [], []
    states, targets, previous = [], [], []
    seen: dict[str, int] = {}
    for start in range(0, len(transcripts), batch_size):
        batch = list(transcripts[start : start + batch_size])
        convs = [
            format_conversation(lm.tokenizer, t.messages, use_chat_template=lm.chat_tuned)
            for t in batch
        ]
        captures = capture_conversations(
            lm, convs, layers=[chosen], all_tokens=True, batch_size=batch_size
        )
        for transcript, conv, cap in zip(batch, convs, captures):
            assert cap.tokens is not None
            label = transcript.source
            seen[label] = seen.get(label, 0) + 1
            if seen[label] > 1:
                label = f"{label}#{seen[label]}"
            tokens = cap.tokens[:, 0, :].double().numpy()  # [n_tokens, hidden]
            last = float("nan")
            for k, span in enumerate(conv.spans_of("assistant")):
                value = float(cap.turn_means[k, 0].double().numpy() @ unit)
                before = transcript.messages[span.message_index - 1]
                if span.message_index > 0 and before.role == "user" and len(span) and span.start:
                    labels.append(label)
                    turns.append(k)
                    domains.append(transcript.domain)
                    texts.append(before.content)
                    states.append(tokens[span.start - 1])
                    targets.append(value)
                    previous.append(last)
                last = value if np.isfinite(value) else float("nan")
        if on_batch is not None:
            on_batch(len(batch))
    state = np.stack(states)
    embedding = user_embeddings(texts) if embeddings else np.zeros((len(texts), 0))
    features = TurnFeatures(embedding, state, state @ unit)
    return TurnTable(
        chosen,
        labels,
        turns,
        domains,
        texts,
        features,
        np.asarray(targets, dtype=np.float64),
        np.asarray(previous, dtype=np.float64),
    )


FEATURE_SETS: tuple[tuple[FeatureKind, ...], ...] = (
    ("embedding",),
    ("state",),
    ("projection",),
    ("embedding", "state"),
)


@dataclass(frozen=True)
class ForecastFit:
    """The figures of a fit: for each feature set, R^2 of the position and of the change
    (each with its null and interval), and the persistence baseline (the position from the
    previous reply's projection alone)."""

    position: dict[str, R2Report]
    change: dict[str, R2Report]
    persistence: R2Report | None
    n_rows: int
    n_conversations: int
    settings: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (each report's null summarised)."""
        return {
            "n_rows": self.n_rows,
            "n_conversations": self.n_conversations,
            "position": {k: v.to_json() for k, v in self.position.items()},
            "change": {k: v.to_json() for k, v in self.change.items()},
            "persistence": None if self.persistence is None else self.persistence.to_json(),
            "settings": self.settings,
        }


def set_name(kinds: Sequence[str]) -> str:
    """``embedding+state`` for ``("embedding", "state")``.

    Example:
        >>> set_name(("embedding", "state"))
        'embedding+state'
    """
    return "+".join(kinds)


def evaluate_table(
    table: TurnTable,
    feature_sets: Sequence[Sequence[FeatureKind]] = FEATURE_SETS,
    *,
    n_folds: int = 5,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    n_permutations: int = 200,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> ForecastFit:
    """Grouped cross-validated R^2 of the position and the change for each feature set.

    Example:
        >>> fit = evaluate_table(table, [("embedding",)])  # doctest: +SKIP
        >>> r2 = fit.position["embedding"].r2, fit.change["embedding"].r2  # doctest: +SKIP
        >>> [round(v, 2) for v in r2]  # doctest: +SKIP
        [0.61, 0.08]
    """
    groups = np.asarray(table.conversation, dtype=object)
    has_previous = np.isfinite(table.previous)
    change = table.target - table.previous

    def score(x: Array, y: Array, g: Any) -> R2Report:
        return grouped_r2(
            x,
            y,
            g,
            n_folds=n_folds,
            alphas=alphas,
            n_permutations=n_permutations,
            n_bootstrap=n_bootstrap,
            seed=seed,
        )[0]

    enough = len(set(groups[has_previous].tolist())) >= n_folds
    position: dict[str, R2Report] = {}
    changes: dict[str, R2Report] = {}
    for kinds in feature_sets:
        x = table.features.matrix(kinds)
        if x.shape[1] == 0:
            continue
        name = set_name(kinds)
        position[name] = score(x, table.target, groups)
        if enough:
            changes[name] = score(x[has_previous], change[has_previous], groups[has_previous])
    persistence = None
    if enough:
        persistence = score(
            table.previous[has_previous, None], table.target[has_previous], groups[has_previous]
        )
    return ForecastFit(
        position,
        changes,
        persistence,
        len(table),
        len(set(table.conversation)),
        {
            "n_folds": n_folds,
            "alphas": list(alphas),
            "n_permutations": n_permutations,
            "n_bootstrap": n_bootstrap,
            "seed": seed,
            "groups": "conversation",
            "null": "targets permuted across all rows, the whole grouped CV rerun",
            "interval": "2.5-97.5 percentiles over conversations resampled with replacement",
        },
    )


def fit_forecaster(
    lm: LoadedModel,
    axis: Axis,
    table: TurnTable,
    kinds: Sequence[FeatureKind],
    *,
    n_folds: int = 5,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    floor_percentile: float = 25.0,
    fit: ForecastFit | None = None,
) -> Forecaster:
    """The forecaster on all rows of ``table``: the penalty chosen by grouped CV, the floor
    at ``floor_percentile`` of the targets (``FLOOR_RULE``).

    Example:
        >>> f = fit_forecaster(lm, axis, table, ("embedding", "state"))  # doctest: +SKIP
        >>> f.floor  # doctest: +SKIP
        3.42
    """
    if not 0 <= floor_percentile <= 100:
        raise PersonaspaceError(
            f"floor_percentile is {floor_percentile}",
            fix="give 0..100, e.g. 25",
            param="floor_percentile",
        )
    x = table.features.matrix(kinds)
    if x.shape[1] == 0:
        raise PersonaspaceError("no feature columns", fix="choose feature kinds")
    report, _, cv = grouped_r2(
        x,
        table.target,
        np.asarray(table.conversation, dtype=object),
        n_folds=n_folds,
        alphas=alphas,
        n_permutations=0,
        n_bootstrap=0,
    )
    alpha = cv.best_alpha(table.target)
    ridge = fit_ridge(x, table.target, alpha)
    floor = float(np.percentile(table.target, floor_percentile))
    summary: dict[str, Any] = {"n_rows": len(table), "cv_r2": report.r2}
    if fit is not None:
        summary = {**summary, **fit.to_json()}
    return Forecaster(
        model_id=lm.model_id,
        hidden_size=lm.adapter.hidden_size,
        n_layers=lm.adapter.n_layers,
        layer=table.layer,
        axis_source=axis.source,
        axis_sha256=axis.fingerprint(),
        features=tuple(kinds),
        coef=ridge.coef,
        intercept=ridge.intercept,
        mean=ridge.mean,
        scale=ridge.scale,
        alpha=alpha,
        floor=floor,
        floor_rule=FLOOR_RULE.format(pct=floor_percentile),
        fit=summary,
    )
