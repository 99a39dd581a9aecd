"""Judge with any OpenAI-compatible chat endpoint, through the official ``openai`` client.

The ``openai`` client provides the HTTP connection pool, timeouts, and retries of
connection errors, timeouts and 408/409/429/5xx replies with exponential backoff that
honours ``Retry-After``. We add the rubric prompts, a client-side rate limit shared by
the worker threads (``--judge-rate``), a thread pool for concurrency, a fast
reachability check, and the parsing of replies into scores. A request that still fails
after the client's retries, or a reply that does not parse, is recorded as missing
(``None``), never guessed.
"""

from __future__ import annotations

import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai

from personaspace.catalogue import Rubric
from personaspace.errors import PersonaspaceError
from personaspace.judge.base import RoleItem, TraitItem

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
NO_KEY = "none"  # the client refuses an empty key; no Authorization header is sent with it
CHECK_TIMEOUT_S = 5.0
# what the client can raise on a 200 reply that is not the JSON it expects
BAD_REPLY = (AttributeError, IndexError, KeyError, TypeError, ValueError)
FIX = "check --judge-base-url and the API key, or use --judge local"


def parse_score(text: str, low: float, high: float) -> float | None:
    """The first number in ``text`` if it lies in ``[low, high]``, else ``None``.

    Example:
        >>> parse_score("Score: 3", 0, 3), parse_score("7", 0, 3), parse_score("n/a", 0, 3)
        (3.0, None, None)
    """
    match = NUMBER.search(text or "")
    if match is None:
        return None
    value = float(match.group())
    return value if low <= value <= high else None


class RateLimiter:
    """At most ``rate_per_s`` request starts per second across threads (0: no limit)."""

    def __init__(self, rate_per_s: float) -> None:
        self.interval = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        self.lock = threading.Lock()
        self.next_at = 0.0

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_at)
            self.next_at = start + self.interval
        time.sleep(max(0.0, start - now))


def _problem(err: Exception) -> str:
    """What went wrong, for one line: unreachable, refused with a status, or a bad reply."""
    if isinstance(err, openai.APITimeoutError):
        return f"is unreachable (no answer within {CHECK_TIMEOUT_S:g} s)"
    if isinstance(err, openai.APIConnectionError):
        return f"is unreachable ({str(err.__cause__ or '') or err.message})"
    if isinstance(err, openai.APIStatusError):
        body = err.body
        message = body.get("message") if isinstance(body, dict) else body
        detail = " ".join(str(message).split())[:200] if message else ""
        status = f"HTTP {err.status_code}" + (f": {detail}" if detail else "")
        return f"refused the request ({status})"
    return "answered GET /models with something other than an OpenAI model list"


class ChatEndpoint:
    """A chat model behind ``{base_url}/chat/completions``: the client, the rate limit, the
    reachability check and one greedy reply per prompt, ``concurrency`` at a time (what
    every judge that asks an endpoint shares)."""

    name = "openai"
    max_tokens = 16  # of each reply

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
            base_url=self.base_url,
            api_key=key or NO_KEY,
            max_retries=retries,
            timeout=timeout_s,
        )
        # without a key, send no Authorization header rather than "Bearer none"
        self.headers: dict[str, str | openai.Omit] = {} if key else {"Authorization": openai.omit}

    def check(self) -> None:
        """Fail within about 5 s, in one line, if the endpoint is unreachable or refuses."""
        client = self.client.with_options(timeout=CHECK_TIMEOUT_S, max_retries=0)
        try:
            client.models.list(extra_headers=self.headers)
        except (openai.OpenAIError, *BAD_REPLY) as err:
            problem = f"the judge endpoint {self.base_url} {_problem(err)}"
            raise PersonaspaceError(problem, fix=FIX) from err

    def _ask(self, prompt: str) -> str | None:
        """The model's reply to ``prompt``, or ``None`` if it failed after the retries."""
        self.limiter.wait()
        try:
            reply = self.client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                temperature=0,
                max_tokens=self.max_tokens,
                extra_headers=self.headers,
            )
            content = reply.choices[0].message.content
        except (openai.OpenAIError, *BAD_REPLY):
            return None
        return content if isinstance(content, str) else None

    def replies(self, prompts: list[str]) -> list[str | None]:
        """Every prompt's reply (``None`` where it failed), in order."""
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._ask, prompts))


class OpenAIJudge(ChatEndpoint):
    """Scores with a chat model behind ``{base_url}/chat/completions``."""

    def __init__(
        self,
        rubrics: dict[str, Rubric],
        *,
        model: str | None,
        base_url: str | None,
        api_key: str | None,
        concurrency: int = 4,
        rate_per_s: float = 5.0,
        retries: int = 4,
        timeout_s: float = 60.0,
    ) -> None:
        super().__init__(
            model=model,
            base_url=base_url,
            api_key=api_key,
            concurrency=concurrency,
            rate_per_s=rate_per_s,
            retries=retries,
            timeout_s=timeout_s,
        )
        self.rubrics = rubrics

    def _score_all(self, prompts: list[str], low: float, high: float) -> list[float | None]:
        return [None if r is None else parse_score(r, low, high) for r in self.replies(prompts)]

    def score_roles(self, items: list[RoleItem]) -> list[int | None]:
        rubric = self.rubrics["role_adherence"]
        prompts = [
            rubric.render(
                role=it.role.name,
                role_description=it.role.description,
                in_role=it.role.in_role,
                question=it.question,
                answer=it.answer,
            )
            for it in items
        ]
        scores = self._score_all(prompts, *rubric.scale)
        return [None if s is None or s != int(s) else int(s) for s in scores]

    def score_traits(self, items: list[TraitItem]) -> list[float | None]:
        rubric = self.rubrics["trait_expression"]
        prompts = [
            rubric.render(
                trait=it.trait.name,
                trait_description=it.trait.description,
                rubric=it.trait.rubric,
                question=it.question,
                answer=it.answer,
            )
            for it in items
        ]
        return self._score_all(prompts, *rubric.scale)
