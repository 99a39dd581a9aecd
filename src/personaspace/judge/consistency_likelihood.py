"""A consistency judge read from a model's next-token distribution: p(yes) against p(no).

The model (by default the bundled SmolLM2-135M-Instruct) is asked whether a statement
contradicts a description of its speaker and told to answer yes or no; the judge reads
the probabilities of the answer words at the first position of the reply (each word's
first token, with and without a leading space and capital) and scores
``p(yes) / (p(yes) + p(no))``. Nothing is generated and nothing is parsed. A small
model's answers lean one way whatever the question: ``threshold`` (default 0.5) is where
the verdict flips, and the figures in docs/consistency.md say how well this works.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from personaspace.conversation.prompts import format_prompt
from personaspace.judge.consistency import ConsistencyItem
from personaspace.models.loading import LoadedModel

LIKELIHOOD_MODEL = "smollm2-135m-instruct"
MAX_CHARS = 1200  # each side of a pair is cut to this many characters
YES = ("Yes", "yes", " Yes", " yes", "YES")
NO = ("No", "no", " No", " no", "NO")


def question(item: ConsistencyItem) -> str:
    """The yes/no question the model is asked about one item.

    Example:
        >>> print(question(ConsistencyItem("I am an AI.", "I am a cat.")))
        Here is what a speaker says about itself:
        "I am an AI."
        <BLANKLINE>
        Later the same speaker said:
        "I am a cat."
        <BLANKLINE>
        Does the later statement contradict what the speaker said about itself? Answer yes or no.
    """
    asked = f'(asked: "{item.context[:MAX_CHARS]}")\n' if item.context.strip() else ""
    return (
        f'Here is what a speaker says about itself:\n"{item.reference[:MAX_CHARS]}"\n\n'
        f'Later the same speaker said:\n{asked}"{item.line[:MAX_CHARS]}"\n\n'
        "Does the later statement contradict what the speaker said about itself? "
        "Answer yes or no."
    )


def first_token_ids(tokenizer: object, words: Sequence[str]) -> list[int]:
    """The distinct first tokens of ``words`` (as the tokenizer writes them alone)."""
    ids = []
    for word in words:
        encoded = tokenizer(word, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        if encoded and encoded[0] not in ids:
            ids.append(int(encoded[0]))
    return ids


class LikelihoodConsistencyJudge:
    """Asks a model yes or no and reads the answer's probability (see the module docstring)."""

    name = "likelihood"

    def __init__(self, lm: LoadedModel | None = None, threshold: float = 0.5) -> None:
        self._lm = lm
        self.threshold = threshold

    @property
    def lm(self) -> LoadedModel:
        if self._lm is None:
            from personaspace.models import load_model

            self._lm = load_model(LIKELIHOOD_MODEL)
        return self._lm

    def check(self) -> None:
        _ = self.lm

    def p_yes(self, items: list[ConsistencyItem]) -> list[float | None]:
        """``p(yes) / (p(yes) + p(no))`` for each item (``None`` for an empty line).

        Example:
            >>> judge = LikelihoodConsistencyJudge()  # doctest: +SKIP
            >>> judge.p_yes([ConsistencyItem("I am an AI.", "I am a cat.")])  # doctest: +SKIP
            [0.71]
        """
        lm = self.lm
        yes = torch.tensor(first_token_ids(lm.tokenizer, YES))
        no = torch.tensor(first_token_ids(lm.tokenizer, NO))
        scores: list[float | None] = []
        with torch.inference_mode():
            for item in items:
                if not item.line.strip():
                    scores.append(None)
                    continue
                ids = format_prompt(lm, question(item)).input_ids
                logits = lm.model(torch.tensor([ids], device=lm.device)).logits[0, -1]
                probs = torch.softmax(logits.float(), -1).cpu()
                p_yes, p_no = float(probs[yes].sum()), float(probs[no].sum())
                scores.append(p_yes / (p_yes + p_no) if p_yes + p_no > 0 else None)
        return scores

    def contradictions(self, items: list[ConsistencyItem]) -> list[float | None]:
        """``p_yes`` shifted so that ``threshold`` reads as 0.5 (the measures' cut-off).

        Example:
            >>> LikelihoodConsistencyJudge(threshold=0.8).shift(0.8)
            0.5
        """
        return [None if p is None else self.shift(p) for p in self.p_yes(items)]

    def shift(self, p: float) -> float:
        """``p`` mapped piecewise-linearly so that ``threshold`` lands on 0.5."""
        t = min(max(self.threshold, 1e-6), 1 - 1e-6)
        return 0.5 * p / t if p < t else 0.5 + 0.5 * (p - t) / (1 - t)
