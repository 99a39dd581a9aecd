"""Judge with any OpenAI-compatible chat endpoint: concurrency, retries, a rate limit.

Scores that cannot be parsed are recorded as missing (``None``), never guessed.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from personaspace.catalogue import Rubric
from personaspace.errors import PersonaspaceError
from personaspace.judge.base import RoleItem, TraitItem

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


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
    """At most ``rate_per_s`` starts per second across threads."""

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


class OpenAIJudge:
    """Scores with a chat model behind ``{base_url}/chat/completions``."""

    name = "openai"

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
        self.rubrics = rubrics
        self.model = model or os.environ.get("PERSONASPACE_JUDGE_MODEL") or "gpt-4.1-mini"
        self.base_url = (
            base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        ).rstrip("/")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY", "")
        self.concurrency, self.retries, self.timeout_s = concurrency, retries, timeout_s
        self.limiter = RateLimiter(rate_per_s)

    def _request(self, path: str, body: dict[str, Any] | None, timeout_s: float) -> Any:
        request = urllib.request.Request(
            self.base_url + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}),
            },
            method="GET" if body is None else "POST",
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read().decode())

    def check(self) -> None:
        try:
            self._request("/models", None, timeout_s=5.0)
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise PersonaspaceError(
                f"the judge endpoint {self.base_url} is unreachable ({reason})",
                fix="check --judge-base-url and the API key, or use --judge local",
            ) from err

    def _ask(self, prompt: str) -> str | None:
        body = {
            "model": self.model,
            "temperature": 0,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": prompt}],
        }
        for attempt in range(self.retries + 1):
            self.limiter.wait()
            try:
                reply = self._request("/chat/completions", body, self.timeout_s)
                return str(reply["choices"][0]["message"]["content"])
            except urllib.error.HTTPError as err:
                if err.code not in RETRY_STATUS or attempt == self.retries:
                    return None
            except (urllib.error.URLError, OSError, TimeoutError):
                if attempt == self.retries:
                    return None
            except (KeyError, IndexError, TypeError, ValueError):
                return None
            time.sleep(min(30.0, 0.5 * 2**attempt))
        return None

    def _score_all(self, prompts: list[str], low: float, high: float) -> list[float | None]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            replies = list(pool.map(self._ask, prompts))
        return [None if r is None else parse_score(r, low, high) for r in replies]

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
