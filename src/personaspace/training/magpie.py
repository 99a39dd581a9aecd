"""An instruction dataset a chat model writes itself, offline (MAGPIE-style self-synthesis).

Given only the opening of its own user turn (its chat template rendered up to where a
user's words would begin, ``pre_query``), a chat model writes what a user might ask; the
same model then answers each request under its default prompt. Requests and answers are
filtered (finished, long enough, coherent), requests are deduplicated (exactly, after
normalising case and spacing, and by sentence-embedding similarity) and any request too
close to a held-out question (those an evaluation will ask) is left out, so a model tuned
on the data is not tuned on its test. Every reply has its own seed: the same settings give
the same dataset.

Example:
    >>> lm = load_model("smollm2-135m-instruct")  # doctest: +SKIP
    >>> data = make_magpie_dataset(lm, MagpieSettings(requests=40))  # doctest: +SKIP
    >>> data.card["kept"] <= 40  # doctest: +SKIP
    True
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from personaspace.capture.generate import Generation, generate
from personaspace.capture.sampling import SamplingConfig
from personaspace.conversation.messages import Message
from personaspace.conversation.prompts import format_prompt
from personaspace.errors import PersonaspaceError
from personaspace.models.loading import LoadedModel
from personaspace.training.dataset import ChatExample
from personaspace.training.trait_data import coherence, licence_for, stats

SENTINEL = "\x00personaspace-user-text\x00"
_SPACE = re.compile(r"\s+")
_WORDS = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
REQUEST_DROPS = ("unfinished", "short", "long", "incoherent", "duplicate", "near_duplicate")
ANSWER_DROPS = ("unfinished", "short", "incoherent")


@dataclass(frozen=True)
class MagpieSettings:
    """How many requests to sample and how to filter them and their answers.

    ``trim_unfinished``: an answer cut at ``answer_tokens`` is cut back to its last
    finished sentence (and kept if enough of it remains) rather than dropped; a model
    tuned on the data then learns to end its turn after a whole sentence.

    ``near_duplicate`` is the sentence-embedding cosine at or above which a request counts
    as a repeat of an earlier one (or of a held-out question).
    """

    requests: int = 600
    request_tokens: int = 48
    answer_tokens: int = 192
    request_temperature: float = 1.0
    request_top_p: float = 0.95
    answer_temperature: float = 0.7
    answer_top_p: float = 0.9
    min_request_words: int = 4
    max_request_words: int = 80
    min_answer_words: int = 5
    min_coherence: float = 0.5
    near_duplicate: float = 0.9
    trim_unfinished: bool = True
    seed: int = 0

    def check(self) -> None:
        """One-line errors for settings that cannot make a dataset."""
        for name in ("requests", "request_tokens", "answer_tokens", "max_request_words"):
            if getattr(self, name) < 1:
                raise PersonaspaceError(
                    f"{name} is {getattr(self, name)}", fix="give at least 1", param=name
                )
        if not 0 < self.near_duplicate <= 1:
            raise PersonaspaceError(
                f"near_duplicate is {self.near_duplicate}",
                fix="give a cosine in (0, 1]",
                param="near_duplicate",
            )


@dataclass
class MagpieDataset:
    """The examples and the card that says how they were made."""

    examples: list[ChatExample]
    card: dict[str, Any] = field(default_factory=dict)


def pre_query(lm: LoadedModel) -> list[int]:
    """The token ids of ``lm``'s chat template up to where a user's text begins (its
    default system prompt, if the template adds one, and the user-turn header).

    Example:
        >>> lm = load_model("smollm2-135m-instruct")  # doctest: +SKIP
        >>> lm.tokenizer.decode(pre_query(lm))[-22:]  # doctest: +SKIP
        '<|im_end|>\\n<|im_start|>user\\n'
    """
    if not lm.chat_tuned or not getattr(lm.tokenizer, "chat_template", None):
        raise PersonaspaceError(
            f"{lm.model_id} has no chat template, so it has no user turn to continue",
            fix="synthesise with a chat model (e.g. smollm2-135m-instruct)",
        )
    text = lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": SENTINEL}], tokenize=False, add_generation_prompt=False
    )
    if SENTINEL not in text:
        raise PersonaspaceError(
            f"the chat template of {lm.model_id} does not show the user's text",
            fix="use a model whose template renders user messages",
        )
    ids: list[int] = lm.tokenizer(text.split(SENTINEL)[0], add_special_tokens=False)["input_ids"]
    return ids


def normalise(text: str) -> str:
    """Lower case, one space between words: the key of exact deduplication.

    Example:
        >>> normalise("  How do I   sort a list? ")
        'how do i sort a list?'
    """
    return _SPACE.sub(" ", text).strip().lower()


def _words(text: str) -> int:
    return len(_WORDS.findall(text))


def request_verdict(generation: Generation, settings: MagpieSettings) -> str | None:
    """Why a sampled request is left out (``None``: it stays), before deduplication.

    Example:
        >>> from personaspace.capture.generate import Generation
        >>> g = Generation([], [], "How do I bake bread at home?", "stop", [])
        >>> request_verdict(g, MagpieSettings()) is None
        True
        >>> request_verdict(Generation([], [], "Hi", "stop", []), MagpieSettings())
        'short'
    """
    text = generation.text.strip()
    if generation.finish_reason != "stop":
        return "unfinished"
    words = _words(text)
    if words < settings.min_request_words:
        return "short"
    if words > settings.max_request_words:
        return "long"
    if coherence(text) < settings.min_coherence:
        return "incoherent"
    return None


def near_duplicates(
    embeddings: torch.Tensor, threshold: float, held_out: torch.Tensor | None = None
) -> list[str | None]:
    """For each row in order: ``"held_out"`` if it is within ``threshold`` cosine of a
    held-out row, ``"near_duplicate"`` if of an earlier row that was kept, else ``None``.

    Example:
        >>> e = torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0]])
        >>> near_duplicates(e, 0.9)
        [None, 'near_duplicate', None]
        >>> near_duplicates(e, 0.9, held_out=torch.tensor([[0.0, 1.0]]))
        [None, 'near_duplicate', 'held_out']
    """
    unit = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    held = None if held_out is None else torch.nn.functional.normalize(held_out.float(), dim=-1)
    kept: list[int] = []
    out: list[str | None] = []
    for i in range(unit.shape[0]):
        if held is not None and held.shape[0] and float((held @ unit[i]).max()) >= threshold:
            out.append("held_out")
        elif kept and float((unit[kept] @ unit[i]).max()) >= threshold:
            out.append("near_duplicate")
        else:
            out.append(None)
            kept.append(i)
    return out


def trim_to_sentence(text: str) -> str:
    """``text`` up to the end of its last finished sentence (empty if it has none).

    Example:
        >>> trim_to_sentence("First point. Second point! And a third that was cut")
        'First point. Second point!'
        >>> trim_to_sentence("no sentence end here")
        ''
    """
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]].strip() if ends else ""


def final_answer(generation: Generation, settings: MagpieSettings) -> tuple[str, str | None]:
    """The answer text to keep and why it is left out (``None``: kept). An answer cut at
    the token limit is trimmed to its last sentence (``trim_unfinished``) or dropped.

    Example:
        >>> from personaspace.capture.generate import Generation
        >>> g = Generation([], [], "Boil the water. Add the pasta. Stir it and", "length", [])
        >>> final_answer(g, MagpieSettings())
        ('Boil the water. Add the pasta.', None)
        >>> final_answer(g, MagpieSettings(trim_unfinished=False))[1]
        'unfinished'
    """
    text = generation.text.strip()
    if generation.finish_reason != "stop":
        if not settings.trim_unfinished:
            return text, "unfinished"
        text = trim_to_sentence(text)
        if not text:
            return text, "unfinished"
    if _words(text) < settings.min_answer_words:
        return text, "short"
    if coherence(text) < settings.min_coherence:
        return text, "incoherent"
    return text, None


def make_magpie_dataset(
    lm: LoadedModel,
    settings: MagpieSettings | None = None,
    *,
    held_out: Sequence[str] = (),
    embed: Callable[[list[str]], torch.Tensor] | None = None,
    batch_size: int | None = None,
    on_progress: Callable[[str, int, int], object] | None = None,
) -> MagpieDataset:
    """Requests written by ``lm`` from its user-turn header, answered by ``lm`` under its
    default prompt, filtered and deduplicated (see the module docstring).

    Args:
        held_out: questions an evaluation will ask; requests this close to one are left out.
        embed: sentence embeddings for near-duplicate detection (default: the bundled
            all-MiniLM-L6-v2 of the local judge).
        on_progress: called with the stage (``"requests"``/``"answers"``), done and total.
    """
    settings = settings or MagpieSettings()
    settings.check()
    if embed is None:
        from personaspace.judge.embeddings import embed as minilm

        embed = minilm
    prefix = pre_query(lm)
    n = settings.requests

    def progress(stage: str, total: int) -> Callable[[int], None]:
        done = 0

        def step(k: int) -> None:
            nonlocal done
            done += k
            if on_progress is not None:
                on_progress(stage, done, total)

        return step

    request_config = SamplingConfig(
        max_new_tokens=settings.request_tokens,
        temperature=settings.request_temperature,
        top_p=settings.request_top_p,
    )
    sampled = generate(
        lm,
        [list(prefix)] * n,
        request_config,
        reductions=(),
        batch_size=batch_size,
        seeds=[settings.seed * 1_000_003 + i for i in range(n)],
        on_batch=progress("requests", n),
    )
    reasons: list[str | None] = [request_verdict(g, settings) for g in sampled]
    seen: set[str] = set()
    for i, g in enumerate(sampled):
        if reasons[i] is None:
            key = normalise(g.text)
            reasons[i] = "duplicate" if key in seen else None
            seen.add(key)
    alive = [i for i, r in enumerate(reasons) if r is None]
    if alive:
        vectors = embed([sampled[i].text.strip() for i in alive])
        held = embed(list(held_out)) if held_out else None
        for i, verdict in zip(alive, near_duplicates(vectors, settings.near_duplicate, held)):
            reasons[i] = verdict
    requests = [(i, sampled[i].text.strip()) for i, r in enumerate(reasons) if r is None]
    answer_config = SamplingConfig(
        max_new_tokens=settings.answer_tokens,
        temperature=settings.answer_temperature,
        top_p=settings.answer_top_p,
    )
    answers = (
        generate(
            lm,
            [format_prompt(lm, text) for _, text in requests],
            answer_config,
            reductions=(),
            batch_size=batch_size,
            seeds=[settings.seed * 1_000_003 + n + i for i, _ in requests],
            on_batch=progress("answers", len(requests)),
        )
        if requests
        else []
    )
    finals = [final_answer(g, settings) for g in answers]
    answer_reasons = [why for _, why in finals]
    examples = [
        ChatExample([Message("user", text), Message("assistant", answer)], f"magpie:{index}")
        for (index, text), (answer, why) in zip(requests, finals)
        if why is None
    ]
    trimmed = sum(g.finish_reason != "stop" and why is None for g, (_, why) in zip(answers, finals))
    card = {
        "kind": "magpie_dataset",
        "format_version": 1,
        "model_id": lm.model_id,
        "licence": licence_for(lm.model_id),
        "method": "MAGPIE-style self-synthesis: the model continues its own chat template "
        "up to the user's text to write a request, then answers it under its default prompt; "
        "no text from any other dataset",
        "settings": asdict(settings),
        "held_out_questions": len(held_out),
        "requests_sampled": n,
        "requests_dropped": {k: sum(r == k for r in reasons) for k in (*REQUEST_DROPS, "held_out")},
        "requests_kept": len(requests),
        "answers_dropped": {k: sum(r == k for r in answer_reasons) for k in ANSWER_DROPS},
        "answers_trimmed_to_sentence": trimmed,
        "kept": len(examples),
        "request_words": stats(_words(e.messages[0].content) for e in examples),
        "answer_words": stats(_words(e.messages[1].content) for e in examples),
    }
    return MagpieDataset(examples, card)
