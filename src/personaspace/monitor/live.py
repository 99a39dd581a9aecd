"""Live monitoring: generate the next assistant reply and see where it sits on the axis.

``chat_turn`` generates one reply with single-pass capture inside ``intervene(...)``: the
projection of the reply comes from the mean residual stream captured while the reply was
produced (no second forward pass), measured *after* any intervention at that layer. Cap
statistics come from the intervention handle, split into prompt and reply positions.
``LiveChat`` keeps a conversation going; ``run_conversation`` yields each turn's result as
soon as it is generated. Nothing here prints: the CLI (``personaspace chat``) and the web
server are thin layers over this module.

Steering strength is ``coef_frac``: a multiple of the mean residual-stream norm at the
steered layer, measured on the axis run's calibration set (``personaspace calibrate RUN``).
Positive values push toward the Assistant, negative away from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from personaspace.capture.generate import generate
from personaspace.capture.sampling import SamplingConfig
from personaspace.conversation.format import FormattedConversation, format_conversation
from personaspace.conversation.messages import Message, as_messages
from personaspace.errors import PersonaspaceError
from personaspace.fileformat import finite_or_none
from personaspace.interventions.hooks import InterventionHandle, intervene
from personaspace.models.loading import LoadedModel
from personaspace.monitor.forecast import ForecastDecision, ForecastGate, caps_for
from personaspace.monitor.projection import resolve_layers
from personaspace.vectors.axis import Axis
from personaspace.vectors.intervention import Intervention


@dataclass
class TurnResult:
    """One generated assistant reply and where it sits on the axis.

    ``projection[layer]``: mean over the reply's content tokens of ``h . u`` (``nan`` for an
    empty reply). ``token_projections`` (on request): ``[n_reply_tokens, len(layers)]``.
    ``cap_engaged[layer]``: reply tokens whose state a cap at that layer moved;
    ``cap_engaged_prompt[layer]``: the same over the prompt's positions (caps applied at all
    positions touch the prompt too). ``messages`` is the conversation ending with this reply.
    ``forecast`` (with a cap gate only): the forecast of this reply's projection and whether
    the caps were applied because of it.
    """

    text: str
    token_ids: list[int]
    finish_reason: str
    layers: list[int]
    projection: dict[int, float]
    messages: list[Message]
    prompt: FormattedConversation
    cap_engaged: dict[int, int] = field(default_factory=dict)
    cap_engaged_prompt: dict[int, int] = field(default_factory=dict)
    token_projections: torch.Tensor | None = None
    token_texts: list[str] | None = None
    forecast: ForecastDecision | None = None

    @property
    def capped(self) -> bool:
        """Whether any cap moved any of the reply's tokens."""
        return any(self.cap_engaged.values())

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (layers as string keys; NaN as ``None``).

        Example:
            >>> p = FormattedConversation("", [1], [], "plain", 1)
            >>> TurnResult("Hi", [5], "stop", [3], {3: 1.5}, [], p).to_json()["projection"]
            {'3': 1.5}
        """
        number = finite_or_none
        data: dict[str, Any] = {
            "text": self.text,
            "n_tokens": len(self.token_ids),
            "finish_reason": self.finish_reason,
            "layers": self.layers,
            "projection": {str(k): number(v) for k, v in self.projection.items()},
            "cap_engaged": {str(k): v for k, v in self.cap_engaged.items()},
            "cap_engaged_prompt": {str(k): v for k, v in self.cap_engaged_prompt.items()},
        }
        if self.forecast is not None:
            data["forecast"] = self.forecast.to_json()
        if self.token_projections is not None:
            data["tokens"] = {
                "text": self.token_texts,
                "projection": {
                    str(layer): [number(v) for v in self.token_projections[:, i].tolist()]
                    for i, layer in enumerate(self.layers)
                },
            }
        return data


@contextmanager
def _prompt_snapshot(model: nn.Module, handle: InterventionHandle) -> Iterator[dict[int, int]]:
    """Record the handle's cap counts just before the first one-token (decode) forward call."""
    snapshot: dict[int, int] = {}
    taken = False

    def before_forward(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        nonlocal taken
        ids = kwargs.get("input_ids", args[0] if args else None)
        if not taken and isinstance(ids, torch.Tensor) and ids.shape[-1] == 1:
            snapshot.update(handle.engaged_tokens(0))
            taken = True

    hook = model.register_forward_pre_hook(before_forward, with_kwargs=True)
    try:
        yield snapshot
    finally:
        hook.remove()
        if not taken:  # no decode step ran: every count belongs to the prompt
            snapshot.update(handle.engaged_tokens(0))


def chat_turn(
    lm: LoadedModel,
    axis: Axis,
    messages: Iterable[Message | Mapping[str, object]],
    *,
    layers: Sequence[int] | None = None,
    interventions: Sequence[Intervention] = (),
    sampling: SamplingConfig | None = None,
    per_token: bool = False,
    cap_gate: ForecastGate | None = None,
) -> TurnResult:
    """Generate the assistant's reply to ``messages`` and project it on ``axis``, in one pass.

    Args:
        lm: the model the axis was built on (checked).
        axis: from ``load_axis``.
        messages: the conversation so far, ending with a user message.
        layers: decoder blocks to project at (default: the axis's middle layer).
        interventions: applied while generating (``steer``, ``cap``, ``ablate`` items).
        sampling: decoding settings (default greedy, 128 new tokens).
        per_token: also project every reply token.
        cap_gate: forecast the reply's projection first (one extra forward pass over the
            prompt, without interventions) and apply the ``cap`` items of ``interventions``
            only when the forecast is below the gate's threshold (``TurnResult.forecast``).

    Example:
        >>> lm = load_model("smollm2-135m-instruct")  # doctest: +SKIP
        >>> axis = load_axis("runs/axis-smollm2-135m-instruct-quick", lm)  # doctest: +SKIP
        >>> turn = chat_turn(lm, axis, [{"role": "user", "content": "Hi!"}])  # doctest: +SKIP
        >>> turn.text, turn.projection  # doctest: +SKIP
        ('Hello! How can I help you today?', {15: 4.71})
    """
    axis.check_model(lm)
    chosen = resolve_layers(axis, lm, layers)
    history = as_messages(messages)
    prompt = format_conversation(
        lm.tokenizer, history, add_generation_prompt=True, use_chat_template=lm.chat_tuned
    )
    units = axis.units_at(chosen)  # [L, H]
    reductions = ("response_mean", "all_tokens") if per_token else ("response_mean",)
    config = (sampling or SamplingConfig()).for_model(lm.chat_tuned)
    decision = None if cap_gate is None else cap_gate.decide(lm, axis, history)
    applied = interventions if decision is None else caps_for(interventions, decision)
    with (
        intervene(lm, applied) as handle,
        _prompt_snapshot(lm.model, handle) as prompt_counts,
    ):
        [g] = generate(lm, [prompt], config, layers=chosen, reductions=reductions, batch_size=1)
    assert g.response_mean is not None
    projection = (g.response_mean * units).sum(-1)
    counts = handle.engaged_tokens(0)
    result = TurnResult(
        text=g.text,
        token_ids=g.token_ids,
        finish_reason=g.finish_reason,
        layers=chosen,
        projection={layer: float(v) for layer, v in zip(chosen, projection)},
        messages=[*history, Message("assistant", g.text)],
        prompt=prompt,
        cap_engaged={k: v - prompt_counts.get(k, 0) for k, v in counts.items()},
        cap_engaged_prompt={k: prompt_counts.get(k, 0) for k in counts},
        forecast=decision,
    )
    if per_token:
        assert g.tokens is not None
        reply = g.tokens[len(prompt.input_ids) :]  # [n_reply, L, H]
        result.token_projections = torch.einsum("nlh,lh->nl", reply, units)
        result.token_texts = [lm.tokenizer.decode([i]) for i in g.token_ids]
    return result


class LiveChat:
    """A conversation with the model, monitored turn by turn.

    ``interventions`` may be changed between turns (e.g. switch a cap on or off); sampled
    turns use seed ``sampling.seed + turn index`` so a replayed chat is reproducible. With
    ``cap_gate`` the caps among them apply only to replies forecast below its threshold.

    Example:
        >>> chat = LiveChat(lm, axis, system="You are a helpful assistant.")  # doctest: +SKIP
        >>> chat.send("Who are you?").projection  # doctest: +SKIP
        {15: 4.12}
    """

    def __init__(
        self,
        lm: LoadedModel,
        axis: Axis,
        *,
        system: str | None = None,
        layers: Sequence[int] | None = None,
        interventions: Sequence[Intervention] = (),
        sampling: SamplingConfig | None = None,
        per_token: bool = False,
        cap_gate: ForecastGate | None = None,
    ) -> None:
        axis.check_model(lm)
        self.lm, self.axis = lm, axis
        self.system = system.strip() if system and system.strip() else None
        self.layers = resolve_layers(axis, lm, layers)
        self.interventions: list[Intervention] = list(interventions)
        self.sampling = (sampling or SamplingConfig()).for_model(lm.chat_tuned)
        self.per_token = per_token
        self.cap_gate = cap_gate
        self.turns: list[TurnResult] = []

    @property
    def messages(self) -> list[Message]:
        """The conversation so far (system prompt first, if any)."""
        if self.turns:
            return list(self.turns[-1].messages)
        return [Message("system", self.system)] if self.system else []

    def send(self, user_text: str) -> TurnResult:
        """Add a user message, generate the reply, and return it with its measurements."""
        if not user_text.strip():
            raise PersonaspaceError("the user message is empty", fix="type something to send")
        sampling = dataclasses.replace(self.sampling, seed=self.sampling.seed + len(self.turns))
        result = chat_turn(
            self.lm,
            self.axis,
            [*self.messages, Message("user", user_text)],
            layers=self.layers,
            interventions=self.interventions,
            sampling=sampling,
            per_token=self.per_token,
            cap_gate=self.cap_gate,
        )
        self.turns.append(result)
        return result

    def reset(self) -> None:
        """Forget the conversation (the system prompt and interventions stay)."""
        self.turns.clear()


def run_conversation(
    lm: LoadedModel,
    axis: Axis,
    user_turns: Iterable[str],
    *,
    system: str | None = None,
    layers: Sequence[int] | None = None,
    interventions: Sequence[Intervention] = (),
    sampling: SamplingConfig | None = None,
    per_token: bool = False,
    cap_gate: ForecastGate | None = None,
) -> Iterator[TurnResult]:
    """Play ``user_turns`` one by one, yielding each reply's result as soon as it is ready.

    Example:
        >>> for turn in run_conversation(lm, axis, ["Hi", "Tell me a secret"]):  # doctest: +SKIP
        ...     print(turn.projection, turn.text[:40])
    """
    chat = LiveChat(
        lm,
        axis,
        system=system,
        layers=layers,
        interventions=interventions,
        sampling=sampling,
        per_token=per_token,
        cap_gate=cap_gate,
    )
    for text in user_turns:
        yield chat.send(text)
