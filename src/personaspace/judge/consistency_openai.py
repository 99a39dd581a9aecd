"""Consistency judged by any OpenAI-compatible chat endpoint (the ``openai`` client).

The same connection handling as ``judge.openai`` (its rate limiter, reachability check and
one-line problems): the model is asked whether the line contradicts the reference and
to answer with one word, yes or no. The reply's first word decides (1.0 for yes, 0.0 for
no); any other reply, or a request that still fails after the client's retries, is
missing (``None``).
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor

import openai

from personaspace.errors import PersonaspaceError
from personaspace.judge.consistency import ConsistencyItem
from personaspace.judge.openai import BAD_REPLY, CHECK_TIMEOUT_S, FIX, NO_KEY, RateLimiter, _problem

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


class OpenAIConsistencyJudge:
    """Asks a chat model behind ``{base_url}/chat/completions`` for a yes or no."""

    name = "openai"

    def __init__(
        self,
        *,
        model: str | None,
        base_url: str | None,
        api_key: str | None,
        concurrency: int = 4,
        rate_per_s: float = 5.0,
        retries: int = 4,
        timeout_s: float = 60.0,
    ) -> None:
        self.model = model or os.environ.get("PERSONASPACE_JUDGE_MODEL") or "gpt-4.1-mini"
        self.base_url = (
            base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        ).rstrip("/")
        key = api_key or os.environ.get("OPENAI_API_KEY") or ""
        self.concurrency = concurrency
        self.limiter = RateLimiter(rate_per_s)
        self.client = openai.OpenAI(
            base_url=self.base_url, api_key=key or NO_KEY, max_retries=retries, timeout=timeout_s
        )
        self.headers: dict[str, str | openai.Omit] = {} if key else {"Authorization": openai.omit}

    def check(self) -> None:
        """Fail within about 5 s, in one line, if the endpoint is unreachable or refuses."""
        client = self.client.with_options(timeout=CHECK_TIMEOUT_S, max_retries=0)
        try:
            client.models.list(extra_headers=self.headers)
        except (openai.OpenAIError, *BAD_REPLY) as err:
            problem = f"the judge endpoint {self.base_url} {_problem(err)}"
            raise PersonaspaceError(problem, fix=FIX) from err

    def _ask(self, prompt: str) -> float | None:
        self.limiter.wait()
        try:
            reply = self.client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                temperature=0,
                max_tokens=4,
                extra_headers=self.headers,
            )
            content = reply.choices[0].message.content
        except (openai.OpenAIError, *BAD_REPLY):
            return None
        return parse_verdict(content if isinstance(content, str) else None)

    def contradictions(self, items: list[ConsistencyItem]) -> list[float | None]:
        prompts = [render(it) for it in items]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            scores = list(pool.map(self._ask, prompts))
        return [None if not it.line.strip() else s for it, s in zip(items, scores)]
