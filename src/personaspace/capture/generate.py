"""Batched generation that captures the reply's residual stream as it is produced.

One pass: the prompt is prefilled once (left padding, KV cache) and each new token is fed
once; the hooks read the residual stream of every fed token, so the reply's activations
come out of the same forward calls that produce it. Nothing is run over the reply again.

Bookkeeping per sequence: generated token ``j`` is fed (and its activations seen) at decode
step ``j + 1``. Its state joins the running sum once it is known to be reply content: at
once when no stop strings are set, or once it is further back than the longest stop string
could reach. A sequence's content ends before its end-of-turn token, before the token
where a stop string begins, or at ``max_new_tokens``. A sequence cut off by the length
limit gets one extra fed step so its last token is captured too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from personaspace.capture.forward import check_fits, left_pad, positions_of
from personaspace.capture.hooks import contiguous_head_input, residual_hooks
from personaspace.capture.kv import GrowingCache
from personaspace.capture.prefill import plan_prefill, shared_prefix_cache, suffix_inputs
from personaspace.capture.sampling import SAMPLER, SamplingConfig, choose_tokens, row_generators
from personaspace.conversation.format import FormattedConversation
from personaspace.errors import PersonaspaceError
from personaspace.models.loading import LoadedModel

Reduction = Literal["response_mean", "last_prompt", "all_tokens"]
FinishReason = Literal["stop", "length"]
# Rows that have stopped are dropped from the batch once they are this share of it (1/8):
# their cache rows are copied out, which costs little next to feeding them to the end.
COMPACT_FRACTION = 8
REDUCTIONS: tuple[str, ...] = ("response_mean", "last_prompt", "all_tokens")
END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>", "<|endoftext|>")


@dataclass
class Generation:
    """One reply and what was captured while producing it.

    ``token_ids`` are the reply's content tokens (no end-of-turn token, no stop string);
    ``response_mean`` is ``[n_layers_captured, hidden]``; ``tokens`` (on request) holds every
    non-padding token of prompt and reply, ``[prompt + reply tokens, n_layers, hidden]``.
    """

    prompt_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: FinishReason
    layers: list[int]
    response_mean: torch.Tensor | None = None
    last_prompt: torch.Tensor | None = None
    tokens: torch.Tensor | None = None
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def end_of_turn_ids(lm: LoadedModel) -> set[int]:
    """Token ids that end a reply: the model's EOS ids plus the template's end-of-turn marker."""
    ids: set[int] = set()
    configured = getattr(lm.model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if lm.tokenizer.eos_token_id is not None:
        ids.add(int(lm.tokenizer.eos_token_id))
    template = getattr(lm.tokenizer, "chat_template", None) or ""
    for token in END_OF_TURN_TOKENS:
        token_id = lm.tokenizer.convert_tokens_to_ids(token)
        if token in template and isinstance(token_id, int) and token_id >= 0:
            ids.add(token_id)
    return ids


def _stop_cut(tokenizer: Any, ids: list[int], stops: tuple[str, ...], tail: int) -> int | None:
    """Number of content tokens if a stop string occurs in ``ids``, else ``None``."""
    if not ids or not any(s in tokenizer.decode(ids[-tail:]) for s in stops):
        return None
    text = tokenizer.decode(ids)
    where = min(i for i in (text.find(s) for s in stops) if i >= 0)
    cut = len(ids)
    while cut > 0 and len(tokenizer.decode(ids[:cut])) > where:
        cut -= 1
    return cut


class _BatchRun:
    """State of one batch: feeds tokens, collects activations, decides content."""

    def __init__(
        self,
        lm: LoadedModel,
        prompts: list[list[int]],
        seeds: list[int],
        config: SamplingConfig,
        layers: list[int],
        reductions: set[str],
        eot: set[int],
        prefix_lengths: list[int] | None = None,
    ) -> None:
        self.lm, self.prompts, self.config, self.layers = lm, prompts, config, layers
        self.prefix_lengths = prefix_lengths or [0] * len(prompts)
        self.reductions, self.eot = reductions, eot
        self.batch = len(prompts)
        self.device = lm.device
        self.pad_id = int(lm.tokenizer.pad_token_id)
        self.seeds = list(seeds)
        self.generators = row_generators(seeds, self.device)
        self.window = max((len(s) for s in config.stop_strings), default=0)
        n_layers, hidden = len(layers), lm.adapter.hidden_size
        # capture buffers live on the model's device: no copy to the host per layer and step
        shape, device = (self.batch, n_layers, hidden), self.device
        self.sums = torch.zeros(shape, dtype=torch.float32, device=device)
        self.counts = torch.zeros(self.batch, dtype=torch.long, device=device)
        self.step_states = torch.empty(shape, dtype=torch.float32, device=device)
        self.last_prompt = torch.empty(shape, dtype=torch.float32, device=device)
        self.prompt_tokens: list[torch.Tensor] = []  # per layer [B, P, H] (all_tokens only)
        self.reply_steps: list[torch.Tensor] = []  # per fed token [B, L, H] (all_tokens only)
        self.pending: list[tuple[int, torch.Tensor]] = []  # (token index, [B, L, H])
        self.generated: list[list[int]] = [[] for _ in prompts]
        self.content_end: list[int | None] = [None] * self.batch  # None while running
        self.reason: list[FinishReason] = ["length"] * self.batch
        self.active = list(range(self.batch))  # the rows still fed, in batch order
        self.phase = "prefill"

    # hooks -------------------------------------------------------------------------------
    def on_block(self, position: int, hidden: torch.Tensor) -> None:
        if self.phase == "prefix":  # a shared prefix: not a row's own states
            return
        last = hidden[:, -1, :]
        if self.phase == "prefill":
            self.last_prompt[:, position, :].copy_(last)
            if "all_tokens" in self.reductions:
                self.prompt_tokens.append(hidden.detach().float().cpu())
        else:
            self.step_states[:, position, :].copy_(last)

    # content bookkeeping -----------------------------------------------------------------
    def _commit(self, index: int, states: torch.Tensor) -> None:
        """Add the states of token ``index`` (one row each of ``self.active``) to the rows
        for which it is content."""
        if all(self.content_end[row] is None for row in self.active) and self._dense():
            self.sums += states  # every row is running and the batch is the whole batch
            self.counts += 1
            return
        where = [
            (i, row)
            for i, row in enumerate(self.active)
            if (end := self.content_end[row]) is None or index < end
        ]
        if where:
            positions = torch.tensor([i for i, _ in where], device=self.device)
            rows = torch.tensor([row for _, row in where], device=self.device)
            self.sums.index_add_(0, rows, states[positions])
            self.counts.index_add_(0, rows, torch.ones_like(rows))

    def _dense(self) -> bool:
        return len(self.active) == self.batch

    def _absorb_step(self, index: int) -> None:
        if self.window == 0 and "all_tokens" not in self.reductions:
            self._commit(index, self.step_states)  # content at once: nothing to hold back
            return
        states = self.step_states.clone()
        if "all_tokens" in self.reductions:
            self.reply_steps.append(states)
        self.pending.append((index, states))
        while self.pending and index - self.pending[0][0] >= self.window:
            self._commit(*self.pending.pop(0))

    def _finish(self, row: int, end: int, reason: FinishReason) -> None:
        if self.content_end[row] is None:
            self.content_end[row] = end
            self.reason[row] = reason

    @property
    def running(self) -> list[int]:
        return [row for row in self.active if self.content_end[row] is None]

    def _compact(
        self, cache: GrowingCache, mask: torch.Tensor, next_pos: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Drop the rows that have stopped (once an eighth of the batch has): they are not fed
        again. Their pending states are committed first."""
        stopped = [i for i, row in enumerate(self.active) if self.content_end[row] is not None]
        if not stopped or len(stopped) * COMPACT_FRACTION < len(self.active):
            return mask, next_pos
        kept = [i for i, row in enumerate(self.active) if self.content_end[row] is None]
        for token_index, states in self.pending:
            self._commit_positions(token_index, states, stopped)
        rows = torch.tensor(kept, device=self.device)
        self.pending = [(i, states[rows]) for i, states in self.pending]
        cache.keep_rows(rows)
        self.generators = [self.generators[i] for i in kept]
        self.active = [self.active[i] for i in kept]
        self.step_states = self.step_states[rows].clone()
        return mask[rows], next_pos[rows]

    def _commit_positions(self, index: int, states: torch.Tensor, positions: list[int]) -> None:
        """Commit token ``index`` for the rows at ``positions`` of the batch only."""
        for i in positions:
            row = self.active[i]
            end = self.content_end[row]
            if end is None or index < end:
                self.sums[row] += states[i]
                self.counts[row] += 1

    # the loop ----------------------------------------------------------------------------
    def _prefill(self, cache_room: int) -> tuple[Any, torch.Tensor, torch.Tensor, GrowingCache]:
        """Run the prompts (shared prefixes once): the last logits, the attention mask, the
        last positions and the cache to decode with."""
        model, n_layers = self.lm.model, self.lm.adapter.n_layers
        plan = plan_prefill(self.prompts, self.prefix_lengths)
        if plan.shared and "all_tokens" not in self.reductions:
            self.phase = "prefix"
            cache, cached_mask = shared_prefix_cache(
                model, plan, n_layers, cache_room, self.pad_id, self.device
            )
            ids, mask, positions = suffix_inputs(self.prompts, plan, self.pad_id)
            ids, positions = ids.to(self.device), positions.to(self.device)
            mask = torch.cat([cached_mask, mask.to(self.device)], dim=-1)
        else:
            ids, mask = left_pad(self.prompts, self.pad_id)
            ids, mask = ids.to(self.device), mask.to(self.device)
            positions = positions_of(mask)
            cache = GrowingCache(n_layers, cache_room)
        self.phase = "prefill"
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out, mask, positions[:, -1:], cache

    def run(self) -> list[Generation]:
        model, config = self.lm.model, self.config
        room = max(len(p) for p in self.prompts) + config.max_new_tokens + 1
        with (
            torch.inference_mode(),
            contiguous_head_input(model),
            residual_hooks(model, self.lm.adapter, self.layers, self.on_block),
        ):
            out, mask, next_pos, cache = self._prefill(room)
            self.phase = "decode"
            for step in range(config.max_new_tokens):
                tokens = choose_tokens(out.logits[:, -1, :], config, self.generators)
                chosen = tokens.tolist()
                for i, row in enumerate(self.active):
                    if self.content_end[row] is not None:
                        tokens[i] = self.pad_id
                        continue
                    token = chosen[i]
                    if token in self.eot:
                        self._finish(row, len(self.generated[row]), "stop")
                        continue
                    self.generated[row].append(token)
                    if config.stop_strings:
                        cut = _stop_cut(
                            self.lm.tokenizer,
                            self.generated[row],
                            config.stop_strings,
                            self.window + 2,
                        )
                        if cut is not None:
                            self._finish(row, cut, "stop")
                last_step = step == config.max_new_tokens - 1
                if not self.running:
                    break
                if last_step:
                    for row in self.running:
                        self._finish(row, len(self.generated[row]), "length")
                elif "all_tokens" not in self.reductions:
                    before = {row: i for i, row in enumerate(self.active)}
                    mask, next_pos = self._compact(cache, mask, next_pos)
                    if len(self.active) < len(before):
                        keep = [before[row] for row in self.active]
                        tokens = tokens[torch.tensor(keep, device=tokens.device)]
                # Feed the chosen tokens: this computes their residual stream (and, unless this
                # was the last step, the logits for the next choice).
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
                next_pos = next_pos + 1
                out = model(
                    input_ids=tokens[:, None],
                    attention_mask=mask,
                    position_ids=next_pos,
                    cache=cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
                self._absorb_step(step)
                if last_step:
                    break
        for index, states in self.pending:
            self._commit(index, states)
        self.pending.clear()
        return self._results()

    def _results(self) -> list[Generation]:
        sums, counts, last_prompt = self.sums.cpu(), self.counts.cpu(), self.last_prompt.cpu()
        results = []
        for row, prompt in enumerate(self.prompts):
            end = self.content_end[row]
            assert end is not None
            content = self.generated[row][:end]
            generation = Generation(
                prompt_ids=list(prompt),
                token_ids=content,
                text=self.lm.tokenizer.decode(content, skip_special_tokens=True).strip(),
                finish_reason=self.reason[row],
                layers=list(self.layers),
                seed=int(self.seeds[row]),
            )
            if "response_mean" in self.reductions:
                count = int(counts[row])
                generation.response_mean = (
                    sums[row] / count if count else torch.full_like(sums[row], torch.nan)
                )
            if "last_prompt" in self.reductions:
                generation.last_prompt = last_prompt[row].clone()
            if "all_tokens" in self.reductions:
                prompt_part = torch.stack([t[row, -len(prompt) :] for t in self.prompt_tokens], 1)
                reply_part = [s[row].cpu() for s in self.reply_steps[:end]]
                generation.tokens = torch.cat(
                    [prompt_part, torch.stack(reply_part) if reply_part else prompt_part[:0]]
                )
            results.append(generation)
        return results


def engine_of(lm: LoadedModel) -> dict[str, str]:
    """What a reply depends on besides its prompt and seed: the model's device and dtype and
    the sampling rule. Runs record it and refuse to resume under another.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> engine_of(NS(device=torch.device("cpu"), dtype=torch.float32))["dtype"]
        'float32'
    """
    return {
        "device": lm.device.type,
        "dtype": str(lm.dtype).removeprefix("torch."),
        "sampler": SAMPLER,
    }


def shareable_prefix(prompt: FormattedConversation | list[int]) -> int:
    """Where a prompt may be split for prefix sharing: before its last user message (the
    system prompt and the template before it are what prompts of one role share); 0 for
    raw token ids.

    Example:
        >>> from personaspace.conversation.format import TokenSpan
        >>> p = FormattedConversation("", list(range(20)), [TokenSpan(0, "system", 2, 9),
        ...     TokenSpan(1, "user", 12, 16)], "chat_template", generation_start=20)
        >>> shareable_prefix(p), shareable_prefix([1, 2, 3])
        (12, 0)
    """
    if not isinstance(prompt, FormattedConversation):
        return 0
    users = prompt.spans_of("user")
    return users[-1].start if users else 0


def response_means(generations: Sequence[Generation]) -> torch.Tensor:
    """The replies' captured means stacked, ``[n, layers, hidden]`` (captured with the
    ``response_mean`` reduction).

    Example:
        >>> g = Generation([1], [2], "x", "stop", [0], response_mean=torch.ones(1, 2))
        >>> response_means([g, g]).shape
        torch.Size([2, 1, 2])
    """
    means = [g.response_mean for g in generations]
    if any(m is None for m in means):
        raise PersonaspaceError(
            "a generation has no response mean", fix="generate with the response_mean reduction"
        )
    return torch.stack([m for m in means if m is not None])


def generate(
    lm: LoadedModel,
    prompts: Sequence[FormattedConversation | list[int]],
    config: SamplingConfig | None = None,
    *,
    layers: list[int] | None = None,
    reductions: Sequence[str] = ("response_mean",),
    batch_size: int | None = None,
    seeds: Sequence[int] | None = None,
    on_batch: Callable[[int], object] | None = None,
) -> list[Generation]:
    """Generate a reply to each prompt, capturing its residual stream in the same pass.

    Args:
        lm: a loaded model.
        prompts: conversations formatted with ``add_generation_prompt=True`` (or raw ids).
        config: decoding settings (greedy, 128 new tokens by default).
        layers: decoder blocks to capture (all by default; negative counts from the end).
        reductions: any of ``response_mean``, ``last_prompt``, ``all_tokens``; empty for a
            plain generation with no hooks at all.
        batch_size: prompts per batch (``None``: one that suits the device); prompts are
            grouped by length to limit padding.
        seeds: one sampling seed per prompt (default ``config.seed + index``).
        on_batch: called with the number of prompts finished after each batch.

    Returns one ``Generation`` per prompt, in the order given.

    Example:
        >>> from personaspace import load_model
        >>> from personaspace.conversation import format_conversation
        >>> lm = load_model("smollm2-135m-instruct")  # doctest: +SKIP
        >>> prompt = format_conversation(lm.tokenizer, [{"role": "user", "content": "Hi!"}],
        ...                              add_generation_prompt=True)  # doctest: +SKIP
        >>> [g] = generate(lm, [prompt], SamplingConfig(max_new_tokens=16))  # doctest: +SKIP
        >>> g.response_mean.shape  # doctest: +SKIP
        torch.Size([30, 576])
    """
    config = config or SamplingConfig()
    unknown = set(reductions) - set(REDUCTIONS)
    if unknown:
        raise PersonaspaceError(
            f"unknown reduction(s) {sorted(unknown)}", fix=f"use any of {', '.join(REDUCTIONS)}"
        )
    rows = [p.input_ids if isinstance(p, FormattedConversation) else list(p) for p in prompts]
    prefixes = [shareable_prefix(p) for p in prompts]
    if any(not r for r in rows):
        raise PersonaspaceError("a prompt has no tokens", fix="give each prompt some text")
    for index, row in enumerate(rows):
        check_fits(lm, len(row), f"prompt {index}", config.max_new_tokens)
    chosen = lm.adapter.check_layers(layers) if reductions else []
    seeds = list(seeds) if seeds is not None else [config.seed + i for i in range(len(rows))]
    if len(seeds) != len(rows):
        raise PersonaspaceError(
            f"{len(seeds)} seeds for {len(rows)} prompts", fix="give one seed per prompt"
        )
    batch_size = lm.batch_size(batch_size, max(map(len, rows)) + config.max_new_tokens)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    eot = end_of_turn_ids(lm)
    results: list[Generation | None] = [None] * len(rows)
    for start in range(0, len(order), batch_size):
        picked = order[start : start + batch_size]
        run = _BatchRun(
            lm,
            [rows[i] for i in picked],
            [seeds[i] for i in picked],
            config,
            chosen,
            set(reductions),
            eot,
            [prefixes[i] for i in picked],
        )
        for i, generation in zip(picked, run.run()):
            results[i] = generation
        if on_batch is not None:
            on_batch(len(picked))
    return [r for r in results if r is not None]
