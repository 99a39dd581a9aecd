"""Forecast where the next reply will sit on the axis before it is generated, and cap only
the replies forecast to fall low.

A ``Forecaster`` is a ridge regression (``personaspace.analysis.ridge``) from features of
the user's turn to the projection of the reply that follows (the mean over its content
tokens of ``h . u`` at one layer). The features exist before any reply token does:

- ``embedding``: the bundled MiniLM sentence embedding of the user's message (384 numbers);
- ``state``: the model's own residual stream at the last prompt token (after the assistant
  header, the position whose output is the reply's first token) at the forecaster's layer;
- ``projection``: that state's projection on the axis (one number).

Its file is a safetensors file (``coef``, ``intercept``, the feature ``mean`` and
``scale``, float64) with JSON metadata: the model, its shape, the layer, the axis and its
fingerprint, the feature kinds, the penalty, the calibrated floor and the fit's figures.
Nothing is pickled. A forecaster is refused for another model or another axis.

``ForecastGate`` turns a forecaster into a capping policy: one extra forward pass over the
prompt (no interventions) and, with ``embedding``, one MiniLM pass over the user message;
the caps are applied to the reply only when the forecast is below the threshold.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray

from personaspace.capture.teacher import capture_conversations
from personaspace.conversation.format import FormattedConversation, format_conversation
from personaspace.conversation.messages import Message, as_messages
from personaspace.errors import PersonaspaceError
from personaspace.fileformat import load_vectors, save_vectors
from personaspace.models.loading import LoadedModel
from personaspace.vectors.axis import Axis
from personaspace.vectors.intervention import Intervention
from personaspace.vectors.shape import ModelShape

FeatureKind = Literal["embedding", "state", "projection"]
FEATURE_KINDS: tuple[FeatureKind, ...] = ("embedding", "state", "projection")
EMBEDDING_SIZE = 384
FORECASTER_KIND = "personaspace.forecaster"
FORECASTER_VERSION = 1
Array = NDArray[np.float64]
TARGET_UNIT = (
    "projection of the next reply: the mean over its content tokens of h . u, u the unit "
    "axis at the forecaster's layer"
)


def parse_feature_kinds(text: str) -> tuple[FeatureKind, ...]:
    """Feature kinds from ``embedding,state`` (order kept as in ``FEATURE_KINDS``).

    Example:
        >>> parse_feature_kinds("state,embedding")
        ('embedding', 'state')
    """
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FEATURE_KINDS]
    if not names or unknown:
        raise PersonaspaceError(
            f"unknown feature kind(s) {unknown or names!r}",
            fix=f"choose among {', '.join(FEATURE_KINDS)}",
            param="features",
        )
    return tuple(k for k in FEATURE_KINDS if k in names)


def feature_width(kinds: Sequence[FeatureKind], hidden_size: int) -> int:
    """Columns of the feature matrix for ``kinds`` on a model of ``hidden_size``.

    Example:
        >>> feature_width(("embedding", "projection"), 576)
        385
    """
    sizes = {"embedding": EMBEDDING_SIZE, "state": hidden_size, "projection": 1}
    return sum(sizes[k] for k in kinds)


@dataclass(frozen=True)
class TurnFeatures:
    """Features of user turns, one row each: ``embedding [n, 384]`` (empty without it),
    ``state [n, hidden]`` and ``projection [n]`` (the state on the unit axis)."""

    embedding: Array
    state: Array
    projection: Array

    def matrix(self, kinds: Sequence[FeatureKind]) -> Array:
        """The columns of ``kinds``, side by side, float64 ``[n, width]``.

        Example:
            >>> f = TurnFeatures(np.ones((2, 384)), np.zeros((2, 4)), np.array([1.0, 2.0]))
            >>> f.matrix(("state", "projection")).shape
            (2, 5)
        """
        parts = {
            "embedding": self.embedding,
            "state": self.state,
            "projection": self.projection[:, None],
        }
        return np.hstack([np.asarray(parts[k], dtype=np.float64) for k in kinds])


def user_embeddings(texts: Sequence[str]) -> Array:
    """MiniLM embeddings of user messages, float64 ``[n, 384]``."""
    from personaspace.judge.embeddings import embed

    return embed(list(texts)).double().numpy()


def prompt_states(
    lm: LoadedModel, prompts: Sequence[FormattedConversation], layer: int, batch_size: int = 4
) -> Array:
    """The residual stream at each prompt's last token at ``layer``, float64 ``[n, hidden]``
    (one teacher-forced pass per batch, no interventions beyond those active)."""
    captures = capture_conversations(lm, prompts, layers=[layer], batch_size=batch_size)
    rows = []
    for cap in captures:
        assert cap.last_prompt is not None
        rows.append(cap.last_prompt[0].double().numpy())
    return np.stack(rows) if rows else np.zeros((0, lm.adapter.hidden_size))


@dataclass(frozen=True, eq=False)
class Forecaster:
    """A fitted forecast of the next reply's projection (see the module docstring).

    ``predict(features)`` is ``((x - mean) / scale) @ coef + intercept`` on the columns of
    ``features``; ``floor`` is the calibrated threshold (``floor_rule`` says how).
    """

    model_id: str
    hidden_size: int
    n_layers: int
    layer: int
    axis_source: str
    axis_sha256: str
    features: tuple[FeatureKind, ...]
    coef: Array
    intercept: float
    mean: Array
    scale: Array
    alpha: float
    floor: float
    floor_rule: str
    fit: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        width = feature_width(self.features, self.hidden_size)
        for name in ("coef", "mean", "scale"):
            value = getattr(self, name)
            if value.shape != (width,):
                raise PersonaspaceError(
                    f"the forecaster's {name} has shape {tuple(value.shape)}, want ({width},)",
                    fix="refit it with personaspace forecast fit",
                )

    def predict(self, features: TurnFeatures) -> Array:
        """The forecast projection of each row's next reply.

        Example:
            >>> f = Forecaster("m", 2, 1, 0, "a", "x", ("projection",), np.array([2.0]), 1.0,
            ...                np.array([0.0]), np.array([1.0]), 1.0, 0.0, "given")
            >>> f.predict(TurnFeatures(np.zeros((1, 0)), np.zeros((1, 2)), np.array([3.0])))
            array([7.])
        """
        x = features.matrix(self.features)
        return np.asarray(((x - self.mean) / self.scale) @ self.coef + self.intercept)

    def check(self, lm: ModelShape, axis: Axis | None = None) -> None:
        """Refuse a model (or an axis) other than the one this forecaster was fitted on.

        Example:
            >>> from types import SimpleNamespace as NS
            >>> f = Forecaster("m", 2, 3, 0, "a", "x", ("projection",), np.ones(1), 0.0,
            ...                np.zeros(1), np.ones(1), 1.0, 0.0, "given")
            >>> f.check(NS(model_id="other", adapter=NS(n_layers=3, hidden_size=2)))
            ... # doctest: +ELLIPSIS
            Traceback (most recent call last):
            personaspace.errors.PersonaspaceError: the forecaster was fitted on m ...
        """
        here = (lm.model_id, lm.adapter.hidden_size, lm.adapter.n_layers)
        if here != (self.model_id, self.hidden_size, self.n_layers):
            raise PersonaspaceError(
                f"the forecaster was fitted on {self.model_id} (hidden size {self.hidden_size}, "
                f"{self.n_layers} layers), not on {here[0]} (hidden size {here[1]}, "
                f"{here[2]} layers)",
                fix="refit it on this model: personaspace forecast fit --model MODEL",
            )
        if axis is not None:
            self.check_axis(axis)

    def check_axis(self, axis: Axis) -> None:
        """Refuse an axis other than the one this forecaster was fitted on (its vectors'
        fingerprint differs)."""
        if axis.fingerprint() != self.axis_sha256:
            raise PersonaspaceError(
                f"the forecaster was fitted on the axis {self.axis_source} "
                f"(sha256 {self.axis_sha256}), not on {axis.source} ({axis.fingerprint()})",
                fix="refit it on this axis: personaspace forecast fit --axis RUN",
            )

    def metadata(self) -> dict[str, Any]:
        """What the file's JSON header records."""
        return {
            "kind": FORECASTER_KIND,
            "version": FORECASTER_VERSION,
            "model_id": self.model_id,
            "hidden_size": self.hidden_size,
            "n_layers": self.n_layers,
            "layer": self.layer,
            "axis": self.axis_source,
            "axis_sha256": self.axis_sha256,
            "features": list(self.features),
            "alpha": self.alpha,
            "floor": self.floor,
            "floor_rule": self.floor_rule,
            "target": TARGET_UNIT,
            "fit": self.fit,
        }

    def save(self, path: str | Path) -> Path:
        """Write the forecaster as safetensors + JSON metadata (atomically).

        Example:
            >>> import tempfile
            >>> f = Forecaster("m", 2, 1, 0, "a", "x", ("projection",), np.array([2.0]), 1.0,
            ...                np.array([0.0]), np.array([1.0]), 1.0, 0.0, "given")
            >>> p = f.save(Path(tempfile.mkdtemp()) / "f.safetensors")
            >>> load_forecaster(p).coef.tolist()
            [2.0]
        """
        tensors = {
            "coef": torch.from_numpy(np.ascontiguousarray(self.coef, dtype=np.float64)),
            "intercept": torch.tensor([self.intercept], dtype=torch.float64),
            "mean": torch.from_numpy(np.ascontiguousarray(self.mean, dtype=np.float64)),
            "scale": torch.from_numpy(np.ascontiguousarray(self.scale, dtype=np.float64)),
        }
        return save_vectors(path, tensors, self.metadata())


def load_forecaster(
    path: str | Path, lm: ModelShape | None = None, axis: Axis | None = None
) -> Forecaster:
    """A forecaster file, checked against ``lm`` and ``axis`` when given."""
    tensors, meta = load_vectors(path)
    if meta.get("kind") != FORECASTER_KIND or not {"coef", "intercept", "mean", "scale"} <= set(
        tensors
    ):
        raise PersonaspaceError(
            f"{path} is not a forecaster file", fix="write one with personaspace forecast fit"
        )
    if meta.get("version") != FORECASTER_VERSION:
        raise PersonaspaceError(
            f"{path} is a forecaster of version {meta.get('version')}, this is version "
            f"{FORECASTER_VERSION}",
            fix="refit it with personaspace forecast fit",
        )
    try:
        forecaster = Forecaster(
            model_id=str(meta["model_id"]),
            hidden_size=int(meta["hidden_size"]),
            n_layers=int(meta["n_layers"]),
            layer=int(meta["layer"]),
            axis_source=str(meta["axis"]),
            axis_sha256=str(meta["axis_sha256"]),
            features=parse_feature_kinds(",".join(meta["features"])),
            coef=tensors["coef"].double().numpy(),
            intercept=float(tensors["intercept"][0]),
            mean=tensors["mean"].double().numpy(),
            scale=tensors["scale"].double().numpy(),
            alpha=float(meta["alpha"]),
            floor=float(meta["floor"]),
            floor_rule=str(meta["floor_rule"]),
            fit=dict(meta.get("fit") or {}),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise PersonaspaceError(
            f"{path} has incomplete forecaster metadata ({err})",
            fix="refit it with personaspace forecast fit",
        ) from err
    if lm is not None:
        forecaster.check(lm, axis)
    return forecaster


def prompt_features(
    lm: LoadedModel,
    axis: Axis,
    forecaster: Forecaster,
    prompts: Sequence[FormattedConversation],
    user_texts: Sequence[str],
    batch_size: int = 4,
) -> TurnFeatures:
    """The features of prompts that end with a generation prompt (``user_texts``: each one's
    last user message), as the forecaster needs them."""
    if len(prompts) != len(user_texts):
        raise PersonaspaceError(
            f"{len(prompts)} prompts but {len(user_texts)} user messages", fix="give one each"
        )
    n = len(prompts)
    needs_state = "state" in forecaster.features or "projection" in forecaster.features
    if needs_state and n:
        states = prompt_states(lm, prompts, forecaster.layer, batch_size)
        unit = axis.unit(forecaster.layer).double().numpy()
        projection = states @ unit
    else:
        states, projection = np.zeros((n, forecaster.hidden_size)), np.zeros(n)
    embedding = (
        user_embeddings(user_texts)
        if "embedding" in forecaster.features and n
        else np.zeros((n, EMBEDDING_SIZE))
    )
    return TurnFeatures(embedding, states, projection)


@dataclass(frozen=True)
class ForecastDecision:
    """One turn's forecast, the threshold it was held against, whether the reply is capped
    (``forecast < threshold``) and the seconds the forecast took (its extra cost)."""

    forecast: float
    threshold: float
    capped: bool
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """JSON-ready.

        Example:
            >>> ForecastDecision(1.5, 2.0, True, 0.01).to_json()["capped"]
            True
        """
        return {
            "forecast": self.forecast,
            "threshold": self.threshold,
            "capped": self.capped,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class ForecastGate:
    """Cap a reply only when its forecast projection falls below ``threshold``.

    Example:
        >>> gate = ForecastGate(load_forecaster("forecaster.safetensors", lm, axis),
        ...                     threshold=2.5)  # doctest: +SKIP
        >>> messages = [{"role": "user", "content": "Who are you, really?"}]
        >>> gate.decide(lm, axis, messages)  # doctest: +SKIP
        ForecastDecision(forecast=2.1, threshold=2.5, capped=True, seconds=0.04)
    """

    forecaster: Forecaster
    threshold: float

    def __post_init__(self) -> None:
        if not np.isfinite(self.threshold):
            raise PersonaspaceError(
                f"threshold is {self.threshold}", fix="give a finite number", param="threshold"
            )

    def decide_many(
        self,
        lm: LoadedModel,
        axis: Axis,
        prompts: Sequence[FormattedConversation],
        user_texts: Sequence[str],
        batch_size: int = 4,
    ) -> list[ForecastDecision]:
        """Decisions for several prompts at once (their cost shared equally)."""
        self.forecaster.check(lm, axis)
        start = time.perf_counter()
        features = prompt_features(lm, axis, self.forecaster, prompts, user_texts, batch_size)
        values = self.forecaster.predict(features) if len(prompts) else np.zeros(0)
        each = (time.perf_counter() - start) / max(len(prompts), 1)
        return [
            ForecastDecision(float(v), self.threshold, bool(v < self.threshold), each)
            for v in values
        ]

    def decide(
        self, lm: LoadedModel, axis: Axis, messages: Iterable[Message | Mapping[str, object]]
    ) -> ForecastDecision:
        """The decision for the reply to ``messages`` (which end with a user message)."""
        history = as_messages(messages)
        if not history or history[-1].role != "user":
            raise PersonaspaceError(
                "a forecast needs a conversation that ends with a user message",
                fix="end the messages with the user's turn",
            )
        prompt = format_conversation(
            lm.tokenizer, history, add_generation_prompt=True, use_chat_template=lm.chat_tuned
        )
        [decision] = self.decide_many(lm, axis, [prompt], [history[-1].content])
        return decision


def threshold_for(text: str | float, forecaster: Forecaster) -> float:
    """``--cap-when-forecast``: a number, or ``floor`` for the forecaster's calibrated floor.

    Example:
        >>> f = Forecaster("m", 2, 1, 0, "a", "x", ("projection",), np.ones(1), 0.0,
        ...                np.zeros(1), np.ones(1), 1.0, 3.25, "p25")
        >>> threshold_for("floor", f), threshold_for("1.5", f)
        (3.25, 1.5)
    """
    if isinstance(text, str) and text.strip().lower() == "floor":
        return forecaster.floor
    try:
        value = float(text)
    except ValueError as err:
        raise PersonaspaceError(
            f"threshold {text!r} is not a number",
            fix="give a projection (e.g. 2.5) or 'floor' (the forecaster's calibrated floor)",
            param="threshold",
        ) from err
    if not np.isfinite(value):
        raise PersonaspaceError(
            f"threshold is {value}", fix="give a finite number", param="threshold"
        )
    return value


def gate_from_file(
    path: str | Path, threshold: str | float, lm: ModelShape, axis: Axis
) -> ForecastGate:
    """A gate from a forecaster file (checked against ``lm`` and ``axis``)."""
    forecaster = load_forecaster(path, lm, axis)
    return ForecastGate(forecaster, threshold_for(threshold, forecaster))


def caps_for(
    interventions: Sequence[Intervention], decision: ForecastDecision | None
) -> list[Intervention]:
    """``interventions`` without their caps unless ``decision`` says cap (``None``: all kept).

    Example:
        >>> from personaspace.vectors.intervention import cap, steer
        >>> u = torch.tensor([1.0, 0.0])
        >>> items = [steer(0, u, 1.0, 1.0), cap(0, u, 2.0)]
        >>> [i.kind for i in caps_for(items, ForecastDecision(3.0, 2.0, False, 0.0))]
        ['steer']
    """
    if decision is None or decision.capped:
        return list(interventions)
    return [i for i in interventions if i.kind != "cap"]
