"""Consistency judged by any OpenAI-compatible chat endpoint (the ``openai`` client).

The same connection handling as ``judge.openai`` (its rate limiter, reachability check and
one-line problems): the model is asked whether the line contradicts the reference and
to answer with one word, yes or no. The reply's first word decides (1.0 for yes, 0.0 for
no); any other reply, or a request that still fails after the client's retries, is
missing (``None``).
"""

from __future__ import annotations

import re

from personaspace.judge.consistency import ConsistencyItem
from personaspace.judge.openai import ChatEndpoint

WORD = re.compile(r"[a-z]+")
PROMPT = (
    "You check whether a speaker stays consistent.\n\n"
    "What the speaker must agree with (its persona, or something it said earlier):\n"
    "<reference>\n{reference}\n</reference>\n\n"
    "{asked}What the speaker said now:\n<line>\n{line}\n</line>\n\n"
    "Does what the speaker said now contradict the reference? Saying something new, "
    "changing the topic or declining to answer is not a contradiction; claiming to be "
    "something the reference says it is not, or the opposite of what it said, is. "
    "Answer with one word: yes or no."
)


def parse_verdict(text: str | None) -> float | None:
    """1.0 for a reply that starts with yes, 0.0 for no, else ``None``.

    Example:
        >>> parse_verdict("Yes."), parse_verdict(" no, because"), parse_verdict("maybe")
        (1.0, 0.0, None)
    """
    match = WORD.search((text or "").lower())
    if match is None:
        return None
    return {"yes": 1.0, "no": 0.0}.get(match.group())


def render(item: ConsistencyItem) -> str:
    """The prompt for one item.

    Example:
        >>> prompt = render(ConsistencyItem("I am an AI.", "I am a cat."))
        >>> "<line>\\nI am a cat.\\n</line>" in prompt
        True
    """
    asked = f"What the speaker was asked:\n<asked>\n{item.context}\n</asked>\n\n"
    return PROMPT.format(
        reference=item.reference,
        line=item.line,
        asked=asked if item.context.strip() else "",
    )


class OpenAIConsistencyJudge(ChatEndpoint):
    """Asks a chat model behind ``{base_url}/chat/completions`` for a yes or no."""

    max_tokens = 4  # "yes" or "no"

    def contradictions(self, items: list[ConsistencyItem]) -> list[float | None]:
        scores = [parse_verdict(r) for r in self.replies([render(it) for it in items])]
        return [None if not it.line.strip() else s for it, s in zip(items, scores)]
