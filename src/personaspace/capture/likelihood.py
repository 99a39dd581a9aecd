"""How likely a model finds a reply after a prompt: mean log-probability per reply token.

One teacher-forced pass per batch; only the reply positions go through the LM head (the
reply ends every row, so they are the last positions of the left-padded batch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from personaspace.capture.forward import check_fits, left_pad, positions_of
from personaspace.capture.hooks import contiguous_head_input
from personaspace.conversation.format import FormattedConversation
from personaspace.models.loading import LoadedModel

Progress = Callable[[int], None]  # rows done in the last batch


def reply_ids(lm: LoadedModel, text: str) -> list[int]:
    """The reply's tokens as the model reads them after a prompt (no special tokens)."""
    return list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])


def mean_logprobs(
    lm: LoadedModel,
    prompts: Sequence[FormattedConversation],
    replies: Sequence[list[int]],
    *,
    batch_size: int = 16,
    progress: Progress | None = None,
) -> list[float | None]:
    """Mean log p(token | prompt, earlier reply tokens) over each reply's tokens (natural
    log; ``None`` for an empty reply).

    Example:
        >>> from personaspace.conversation.prompts import format_prompt  # doctest: +SKIP
        >>> p = format_prompt(lm, "Say hi.")  # doctest: +SKIP
        >>> mean_logprobs(lm, [p], [reply_ids(lm, "Hi!")])[0] < 0  # doctest: +SKIP
        True
    """
    if len(prompts) != len(replies):
        raise ValueError("one reply per prompt")
    rows = [list(p.input_ids) + list(r) for p, r in zip(prompts, replies)]
    for i, row in enumerate(rows):
        check_fits(lm, len(row), f"reply {i} with its prompt")
    out: list[float | None] = [None] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths together
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    with torch.inference_mode(), contiguous_head_input(lm.model):
        for start in range(0, len(order), batch_size):
            batch = [i for i in order[start : start + batch_size] if replies[i]]
            if batch:
                values = _score_batch(
                    lm, [rows[i] for i in batch], [len(replies[i]) for i in batch], pad
                )
                for i, value in zip(batch, values):
                    out[i] = value
            if progress is not None:
                progress(len(order[start : start + batch_size]))
    return out


def _score_batch(
    lm: LoadedModel, rows: list[list[int]], lengths: list[int], pad: int
) -> list[float]:
    ids, mask = left_pad(rows, pad)
    keep = max(lengths) + 1  # the logits that predict each reply token
    logits = lm.model(
        input_ids=ids.to(lm.device),
        attention_mask=mask.to(lm.device),
        position_ids=positions_of(mask).to(lm.device),
        use_cache=False,
        logits_to_keep=keep,
    ).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)  # position t predicts token t + 1
    targets = ids[:, -(keep - 1) :].to(lm.device)
    picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [batch, keep - 1]
    return [float(picked[row, -n:].mean()) for row, n in enumerate(lengths)]
