"""What the server serves: a model, its axis, calibration and capping config, and the
per-request choices (cap, steering, layers) turned into monitored chat turns.

Each reply comes from ``personaspace.monitor.live.chat_turn``: single-pass generation with
capture inside ``intervene``, so the projection of a reply costs no extra forward pass and
is measured after the interventions at that layer. Streaming watches the same pass
(``serve.streaming``). Nothing here is thread-safe on purpose: the server runs every call
that touches the model in its one worker thread.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from personaspace.capture.forward import context_tokens
from personaspace.capture.sampling import SamplingConfig
from personaspace.conversation.format import format_conversation
from personaspace.conversation.messages import Message, as_messages
from personaspace.errors import PersonaspaceError
from personaspace.fileformat import finite_or_none
from personaspace.models.loading import LoadedModel
from personaspace.monitor.forecast import ForecastGate
from personaspace.monitor.live import TurnResult, chat_turn
from personaspace.monitor.projection import project_turns, resolve_layers
from personaspace.monitor.transcripts import Transcript
from personaspace.serve.errors import APIError
from personaspace.serve.schemas import PersonaspaceOptions, SteerOptions
from personaspace.serve.streaming import ReplyText, fed_tokens
from personaspace.vectors.axis import Axis
from personaspace.vectors.calibration import Calibration
from personaspace.vectors.capping import CappingConfig
from personaspace.vectors.intervention import Intervention, Scope, steer_along_axis

THRESHOLD_PERCENTILES: tuple[float, ...] = (10.0, 25.0, 50.0)


@dataclass(frozen=True)
class TurnPlan:
    """The interventions and measurements one request asked for, checked."""

    layers: list[int]
    interventions: list[Intervention] = field(default_factory=list)
    cap: str | None = None
    cap_taus: dict[int, float] = field(default_factory=dict)
    steer: dict[str, Any] | None = None
    per_token: bool = False
    scope: Scope = "all"


class ServeEngine:
    """The served model with its axis; builds plans and runs turns (in the worker thread).

    Example:
        >>> engine = ServeEngine(lm, axis, calibration=cal, capping=cfg)  # doctest: +SKIP
        >>> plan = engine.plan(PersonaspaceOptions(cap="layers_11:19-p25"))  # doctest: +SKIP
        >>> turn = engine.turn([{"role": "user", "content": "Hi"}], plan,
        ...                    engine.sampling(None, None, None, 32))  # doctest: +SKIP
        >>> engine.extension(turn, plan)["cap"]["engaged"]  # doctest: +SKIP
        True
    """

    def __init__(
        self,
        lm: LoadedModel,
        axis: Axis,
        *,
        calibration: Calibration | None = None,
        capping: CappingConfig | None = None,
        default_cap: str | None = None,
        layers: Sequence[int] | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        names: Sequence[str] = (),
        cap_gate: ForecastGate | None = None,
    ) -> None:
        axis.check_model(lm)
        if cap_gate is not None:
            cap_gate.forecaster.check(lm, axis)
        self.cap_gate = cap_gate
        self.lm, self.axis, self.calibration, self.capping = lm, axis, calibration, capping
        self.layers = resolve_layers(axis, lm, layers)
        if default_cap is not None:
            if capping is None:
                raise PersonaspaceError(
                    f"the default cap {default_cap} needs a capping config",
                    fix="give a capping config, or an axis run folder with capping.safetensors",
                    param="default_cap",
                )
            capping.experiment(default_cap)  # refuses an unknown id
        self.default_cap = default_cap
        SamplingConfig(temperature=temperature, top_p=top_p)  # refuses bad defaults
        self.temperature, self.top_p = temperature, top_p
        self.names = list(dict.fromkeys([lm.model_id, *names]))
        self.context_tokens = context_tokens(lm)

    # --- per-request choices -----------------------------------------------------------
    def _layers(self, requested: Sequence[int] | None) -> list[int]:
        """The layers a request asked for, else the server's (``--layers``)."""
        return self.layers if requested is None else resolve_layers(self.axis, self.lm, requested)

    def plan(self, options: PersonaspaceOptions) -> TurnPlan:
        """Check the extension fields of a request and build its interventions."""
        layers = self._layers(options.layers)
        cap_id = options.cap if options.cap_given else self.default_cap
        interventions: list[Intervention] = []
        steer_info = None
        if options.steer is not None:
            steer = (
                options.steer
                if isinstance(options.steer, SteerOptions)
                else SteerOptions(coef_frac=options.steer)
            )
            if not -10 <= steer.coef_frac <= 10:
                raise PersonaspaceError(
                    f"steer coef_frac {steer.coef_frac} is outside -10..10",
                    fix="use a small multiple of the residual norm, e.g. 0.1",
                )
            if self.calibration is None:
                raise PersonaspaceError(
                    "steering needs a calibration (its unit is the mean residual norm)",
                    fix="serve a calibrated axis run (personaspace calibrate RUN)",
                )
            steer_layers = resolve_layers(self.axis, self.lm, steer.layers or layers)
            interventions += steer_along_axis(
                self.axis, self.calibration, steer.coef_frac, steer_layers, options.scope
            )
            steer_info = {"coef_frac": steer.coef_frac, "layers": steer_layers}
        taus: dict[int, float] = {}
        if cap_id is not None:
            if self.capping is None:
                raise APIError(
                    400,
                    "this server has no capping config, so it cannot cap",
                    code="capping_unavailable",
                    param="personaspace.cap",
                )
            try:
                experiment = self.capping.experiment(cap_id)
            except PersonaspaceError as err:
                raise APIError(
                    400, str(err), code="unknown_capping_experiment", param="personaspace.cap"
                ) from err
            interventions += self.capping.interventions(cap_id, options.scope)
            taus = {s.layer: s.tau for s in experiment.steps}
        return TurnPlan(
            layers=layers,
            interventions=interventions,
            cap=cap_id,
            cap_taus=taus,
            steer=steer_info,
            per_token=options.per_token,
            scope=options.scope,
        )

    def sampling(
        self,
        temperature: float | None,
        top_p: float | None,
        seed: int | None,
        max_tokens: int,
        stop: tuple[str, ...] = (),
    ) -> SamplingConfig:
        """Decoding settings: request values, else the server's; a fresh seed when sampling."""
        temperature = self.temperature if temperature is None else temperature
        top_p = self.top_p if top_p is None else top_p
        if seed is None:
            seed = secrets.randbelow(2**31) if temperature > 0 else 0
        return SamplingConfig(
            max_new_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            stop_strings=tuple(dict.fromkeys(stop)),
        ).for_model(self.lm.chat_tuned)

    # --- running (worker thread only) ----------------------------------------------------
    def prompt_tokens(self, messages: list[Message], max_tokens: int) -> int:
        """Tokens of the formatted prompt; refuses a prompt that does not fit the context."""
        if messages[-1].role != "user":
            raise APIError(
                400,
                "the last message must be a user message (the reply is generated after it)",
                param="messages",
            )
        prompt = format_conversation(
            self.lm.tokenizer,
            messages,
            add_generation_prompt=True,
            use_chat_template=self.lm.chat_tuned,
        )
        n = len(prompt.input_ids)
        if self.context_tokens is not None and n + max_tokens > self.context_tokens:
            raise APIError(
                400,
                f"the prompt ({n} tokens) plus max_tokens ({max_tokens}) exceeds the model's "
                f"context of {self.context_tokens} tokens",
                code="context_length_exceeded",
                param="messages",
            )
        return n

    def turn(
        self,
        messages: Sequence[Message | dict[str, str]],
        plan: TurnPlan,
        sampling: SamplingConfig,
        *,
        on_start: Callable[[int], None] | None = None,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> TurnResult:
        """Generate and measure one reply. ``on_start(prompt_tokens)`` runs once the request
        is known to be valid; ``on_text(delta)`` receives the reply as it is produced."""
        history = as_messages(messages)
        n_prompt = self.prompt_tokens(history, sampling.max_new_tokens)
        if on_start is not None:
            on_start(n_prompt)
        text = ReplyText(self.lm.tokenizer, sampling.stop_strings)

        def on_token(token_id: int) -> None:
            if on_text is not None:
                delta = text.push(token_id)
                if delta:
                    on_text(delta)

        with fed_tokens(self.lm.model, on_token, cancel):
            result = chat_turn(
                self.lm,
                self.axis,
                history,
                layers=plan.layers,
                interventions=plan.interventions,
                sampling=sampling,
                per_token=plan.per_token,
                cap_gate=self.cap_gate if plan.cap is not None else None,
            )
        if on_text is not None:
            rest = text.finish(result.text)
            if rest:
                on_text(rest)
        return result

    def extension(self, result: TurnResult, plan: TurnPlan, seed: int) -> dict[str, Any]:
        """The ``personaspace`` field of a response."""
        data: dict[str, Any] = {
            "layers": plan.layers,
            "projection": {str(k): finite_or_none(v) for k, v in result.projection.items()},
            "cap": None,
            "steer": plan.steer,
            "seed": seed,
        }
        if plan.cap is not None:
            data["cap"] = {
                "experiment": plan.cap,
                "engaged": result.capped,
                "engaged_tokens": {str(k): v for k, v in result.cap_engaged.items()},
                "engaged_prompt_tokens": {str(k): v for k, v in result.cap_engaged_prompt.items()},
                "tau": {str(k): v for k, v in plan.cap_taus.items()},
                "scope": plan.scope,
            }
            if result.forecast is not None:
                data["cap"]["forecast"] = result.forecast.to_json()
        if result.token_projections is not None:
            data["tokens"] = {
                "text": result.token_texts,
                "projection": {
                    str(layer): [finite_or_none(v) for v in result.token_projections[:, i].tolist()]
                    for i, layer in enumerate(plan.layers)
                },
            }
        return data

    def project(
        self, transcript: Transcript, layers: Sequence[int] | None, per_token: bool
    ) -> dict[str, Any]:
        """Project a transcript's assistant turns (one teacher-forced pass)."""
        chosen = self._layers(layers)
        conv = format_conversation(
            self.lm.tokenizer, transcript.messages, use_chat_template=self.lm.chat_tuned
        )
        if self.context_tokens is not None and len(conv.input_ids) > self.context_tokens:
            raise APIError(
                400,
                f"the transcript ({len(conv.input_ids)} tokens) exceeds the model's context "
                f"of {self.context_tokens} tokens",
                code="context_length_exceeded",
            )
        [trajectory] = project_turns(self.lm, self.axis, [conv], layers=chosen, per_token=per_token)
        data: dict[str, Any] = {
            "layers": chosen,
            "messages": [{"role": m.role, "content": m.content} for m in transcript.messages],
            "turns": [
                {str(layer): finite_or_none(v) for layer, v in zip(chosen, row)}
                for row in trajectory.turns.tolist()
            ],
        }
        if trajectory.tokens is not None:
            data["tokens"] = [
                {
                    "text": [
                        self.lm.tokenizer.decode([i]) for i in conv.input_ids[span.start : span.end]
                    ],
                    "projection": {
                        str(layer): [
                            finite_or_none(v)
                            for v in trajectory.tokens[span.start : span.end, j].tolist()
                        ]
                        for j, layer in enumerate(chosen)
                    },
                }
                for span in trajectory.spans
            ]
        return data

    # --- what the web app needs to know ---------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Model, axis, thresholds and capping experiments (``GET /personaspace/info``)."""
        thresholds: dict[str, dict[str, float]] = {}
        if self.calibration is not None:
            for pct in THRESHOLD_PERCENTILES:
                thresholds[f"p{pct:g}"] = {
                    str(layer): self.calibration.tau(layer, pct)
                    for layer in self.calibration.layers
                }
        experiments = []
        if self.capping is not None:
            for exp in self.capping.experiments:
                experiments.append(
                    {
                        "id": exp.id,
                        "layers": exp.layers,
                        "tau": {str(s.layer): s.tau for s in exp.steps},
                    }
                )
        return {
            "model": self.names[0],
            "models": self.names,
            "chat_tuned": self.lm.chat_tuned,
            "n_layers": self.lm.adapter.n_layers,
            "axis": {"source": self.axis.source, "layers": self.axis.layers},
            "layers": self.layers,
            "calibrated": self.calibration is not None,
            "thresholds": thresholds,
            "capping": {"default": self.default_cap, "experiments": experiments},
            "sampling": {"temperature": self.temperature, "top_p": self.top_p},
            "context_tokens": self.context_tokens,
        } | (
            {}
            if self.cap_gate is None
            else {
                "forecast": {
                    "threshold": self.cap_gate.threshold,
                    "floor": self.cap_gate.forecaster.floor,
                    "features": list(self.cap_gate.forecaster.features),
                }
            }
        )
