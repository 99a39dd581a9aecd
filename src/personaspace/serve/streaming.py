"""Token-by-token output of a single-pass generation, without a second loop or pass.

``capture.generate`` feeds every chosen token back into the model once (that forward call
computes its residual stream and the next logits). ``fed_tokens`` watches those calls with
a forward pre-hook on the model: the first call is the prompt's prefill, each later one
carries the token just chosen. So the reply can be streamed as it is produced while
``generate`` (and its capture, and any interventions) runs unchanged. The end-of-turn token
is never fed, so it never shows; a stop string's final token is not fed either.

``ReplyText`` turns those token ids into text deltas that always add up to a prefix of the
final reply text (``Generation.text``: content tokens decoded, surrounding whitespace
stripped): it holds back incomplete characters, trailing whitespace and, when stop strings
are set, the tokens a stop string could still claim.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class GenerationCancelled(Exception):
    """Raised inside the model's forward call to abandon a generation (client went away)."""


@contextmanager
def fed_tokens(
    model: nn.Module,
    on_token: Callable[[int], None],
    cancel: threading.Event | None = None,
) -> Iterator[None]:
    """Call ``on_token(id)`` for each token fed back while generating (batch size 1).

    With ``cancel`` set, the next forward call raises ``GenerationCancelled``; every hook
    (ours and those of ``intervene``/``generate``) is removed on the way out.

    Example:
        >>> seen = []
        >>> with fed_tokens(lm.model, seen.append):  # doctest: +SKIP
        ...     generate(lm, [prompt], SamplingConfig(max_new_tokens=4), reductions=())
        >>> len(seen)  # doctest: +SKIP
        4
    """
    calls = 0

    def before_forward(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        nonlocal calls
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled("the client went away")
        calls += 1
        ids = kwargs.get("input_ids", args[0] if args else None)
        if calls > 1 and isinstance(ids, torch.Tensor) and ids.shape == (1, 1):
            on_token(int(ids[0, 0]))

    hook = model.register_forward_pre_hook(before_forward, with_kwargs=True)
    try:
        yield
    finally:
        hook.remove()


class ReplyText:
    """Incremental text of a reply: ``push`` token ids, get safe deltas; ``finish`` the rest.

    Example:
        >>> class Chars:
        ...     def decode(self, ids, skip_special_tokens=True):
        ...         return "".join(chr(i) for i in ids)
        >>> text = ReplyText(Chars(), stop_strings=("\\nUser:",))
        >>> "".join(text.push(ord(c)) for c in " Hi there\\nUs")  # 6 characters held back
        'Hi th'
        >>> text.finish("Hi there")
        'ere'
    """

    def __init__(self, tokenizer: Any, stop_strings: tuple[str, ...] = ()) -> None:
        self.tokenizer = tokenizer
        self.window = max((len(s) for s in stop_strings), default=0)
        self.ids: list[int] = []
        self.sent = ""

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True)).lstrip()

    def _safe(self) -> str:
        text = self._decode(self.ids)
        if self.window:
            # Only whole tokens that end before the last (window) characters: a stop string
            # found later starts after them, and the reply is cut at a token boundary.
            limit = len(text) - self.window
            cut = len(self.ids)
            while cut > 0 and len(self._decode(self.ids[:cut])) > limit:
                cut -= 1
            text = self._decode(self.ids[:cut])
        while text.endswith("\ufffd"):  # a character split across tokens
            text = text[:-1]
        return text.rstrip()

    def push(self, token_id: int) -> str:
        """Add one generated token; return the text that is now certain to be in the reply."""
        self.ids.append(token_id)
        safe = self._safe()
        if len(safe) <= len(self.sent) or not safe.startswith(self.sent):
            return ""
        delta, self.sent = safe[len(self.sent) :], safe
        return delta

    def finish(self, final_text: str) -> str:
        """The rest of ``final_text`` (what was streamed is always a prefix of it)."""
        if not final_text.startswith(self.sent):
            return ""
        delta, self.sent = final_text[len(self.sent) :], final_text
        return delta
