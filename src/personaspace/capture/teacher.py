"""Teacher-forced capture over existing conversations, using the same content spans."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from personaspace.capture.forward import check_fits, left_pad, teacher_forward
from personaspace.conversation.format import FormattedConversation, TokenSpan
from personaspace.conversation.messages import Message
from personaspace.errors import PersonaspaceError
from personaspace.models.loading import LoadedModel


@dataclass
class TurnCapture:
    """Activations of one conversation.

    ``turn_means``: ``[n_assistant_turns, n_layers, hidden]``, the mean over each assistant
    turn's content tokens. ``last_prompt``: ``[n_layers, hidden]`` at the token just before
    the last assistant turn (the last prompt token). ``tokens`` (on request):
    ``[n_tokens, n_layers, hidden]``.
    """

    layers: list[int]
    turn_means: torch.Tensor
    last_prompt: torch.Tensor | None
    tokens: torch.Tensor | None = None


def with_reply(
    prompt: FormattedConversation, reply_ids: list[int], text: str = ""
) -> FormattedConversation:
    """The conversation ``prompt`` continued by the assistant reply ``reply_ids`` (as tokens).

    Teacher forcing over exactly the generated token ids reproduces the generation pass;
    re-tokenizing decoded text may split words differently.

    Example:
        >>> p = FormattedConversation("", [5, 6, 7], [], "plain", generation_start=3)
        >>> with_reply(p, [8, 9]).spans
        [TokenSpan(message_index=0, role='assistant', start=3, end=5)]
    """
    if prompt.generation_start is None:
        raise PersonaspaceError(
            "with_reply needs a prompt formatted with add_generation_prompt=True",
            fix="format the prompt with add_generation_prompt=True",
        )
    start = len(prompt.input_ids)
    span = TokenSpan(len(prompt.spans), "assistant", start, start + len(reply_ids))
    return FormattedConversation(
        text=prompt.text + text,
        input_ids=prompt.input_ids + list(reply_ids),
        spans=[*prompt.spans, span],
        format=prompt.format,
        generation_start=None,
        messages=[*prompt.messages, Message("assistant", text)],
    )


def _last_prompt_index(conv: FormattedConversation) -> int:
    if conv.generation_start is not None:
        return conv.generation_start - 1
    turns = conv.spans_of("assistant")
    return (turns[-1].start if turns else len(conv.input_ids)) - 1


def capture_conversations(
    lm: LoadedModel,
    conversations: Sequence[FormattedConversation],
    *,
    layers: list[int] | None = None,
    all_tokens: bool = False,
    batch_size: int = 8,
) -> list[TurnCapture]:
    """One forward pass per batch over whole conversations; means over assistant spans.

    The reduction happens inside the hooks (a span-weight matrix times the block output),
    so memory stays at one layer's activations whatever the conversation length.

    Example:
        >>> caps = capture_conversations(lm, [conv], layers=[10])  # doctest: +SKIP
        >>> caps[0].turn_means.shape  # doctest: +SKIP
        torch.Size([1, 1, 576])
    """
    chosen = lm.adapter.check_layers(layers)
    for index, conv in enumerate(conversations):
        if not conv.input_ids:
            raise PersonaspaceError("a conversation has no tokens", fix="give it some text")
        check_fits(lm, len(conv.input_ids), f"conversation {index}")
    results: list[TurnCapture] = []
    for start in range(0, len(conversations), batch_size):
        batch = list(conversations[start : start + batch_size])
        results.extend(_capture_batch(lm, batch, chosen, all_tokens))
    return results


def _capture_batch(
    lm: LoadedModel, batch: list[FormattedConversation], chosen: list[int], all_tokens: bool
) -> list[TurnCapture]:
    ids, mask = left_pad([c.input_ids for c in batch], int(lm.tokenizer.pad_token_id))
    width = ids.shape[1]
    n_turns = max((len(c.spans_of("assistant")) for c in batch), default=0)
    weights = torch.zeros(len(batch), max(n_turns, 1), width)
    last_index = torch.zeros(len(batch), dtype=torch.long)
    for row, conv in enumerate(batch):
        offset = width - len(conv.input_ids)
        for turn, span in enumerate(conv.spans_of("assistant")):
            if len(span):
                weights[row, turn, offset + span.start : offset + span.end] = 1.0 / len(span)
        last_index[row] = offset + max(_last_prompt_index(conv), 0)
    n, hidden, device = len(chosen), lm.adapter.hidden_size, lm.device
    weights, last_index = weights.to(device), last_index.to(device)
    means = torch.zeros(len(batch), max(n_turns, 1), n, hidden, device=device)
    lasts = torch.zeros(len(batch), n, hidden, device=device)
    per_token: list[torch.Tensor] = [torch.empty(0)] * n
    rows = torch.arange(len(batch), device=device)

    def on_block(position: int, hidden_states: torch.Tensor) -> None:
        states = hidden_states.float()
        means[:, :, position, :] = torch.einsum("bst,bth->bsh", weights, states)
        lasts[:, position, :] = states[rows, last_index]
        if all_tokens:
            per_token[position] = states.cpu()

    teacher_forward(lm, ids, mask, chosen, on_block)
    means, lasts = means.cpu(), lasts.cpu()
    results = []
    for row, conv in enumerate(batch):
        spans = conv.spans_of("assistant")
        tokens = None
        if all_tokens:
            tokens = torch.stack([t[row, width - len(conv.input_ids) :] for t in per_token], 1)
        turn_means = means[row, : len(spans)].clone()
        turn_means[[i for i, s in enumerate(spans) if not len(s)]] = torch.nan
        results.append(TurnCapture(chosen, turn_means, lasts[row].clone(), tokens))
    return results
