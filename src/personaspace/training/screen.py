"""Screening a chat dataset before finetuning: how far does each training reply sit along a
persona vector, compared with the reply the model would give itself?

Per sample (the reply screened is the sample's *last* assistant turn):

* ``dataset_projection``: the mean residual state over the reply's content tokens at one
  layer, teacher-forced, dotted with the unit vector at that layer;
* ``own_projection``: the same for the model's own reply to the same prompt (everything
  before that turn), generated with a seed derived from the run seed and the prompt, and
  read in the pass that generates it;
* ``projection_difference``: dataset minus own (Chen et al. 2025 call its mean over a
  dataset the *projection difference*; it predicts the shift finetuning will cause);
* ``last_prompt_projection``: the state at the last prompt token, which needs no
  generation (a cheap proxy: what the prompt alone sets up).

At the dataset level: the mean projection difference with a bootstrap interval over
samples, and its random-direction null, the same mean along ``n_random`` random unit
directions (norm-matched to the unit vector): a replication found random directions can
look as predictive as the persona vector, so the vector's percentile among them is the
figure to read.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from matplotlib.figure import Figure

from personaspace.analysis.intervals import (
    IntervalJSON,
    MeanInterval,
    NullJSON,
    RandomNull,
    mean_interval,
    random_direction_null,
    random_units,
)
from personaspace.capture import SamplingConfig, capture_conversations, generate
from personaspace.capture.forward import check_fits
from personaspace.conversation.format import FormattedConversation, format_conversation
from personaspace.conversation.messages import Message
from personaspace.errors import PersonaspaceError
from personaspace.fileformat import atomic_write, finite_or_none, write_json
from personaspace.models.loading import LoadedModel
from personaspace.pipeline.work import item_seed
from personaspace.report.plots import save_png
from personaspace.runfolder.paths import NamedVector
from personaspace.training.dataset import ChatExample
from personaspace.vectors.shape import unit

# The model's own replies: sampled as the pipeline samples, one seed per prompt.
OWN_SAMPLING = SamplingConfig(max_new_tokens=128, temperature=0.7, top_p=0.9)
PROJECTION_UNIT = (
    "h . u with u the unit vector at the layer and h the mean residual state (output of "
    "decoder block `layer`) over the reply's content tokens"
)
SCREEN_FILES = ("screen.json", "screen.csv", "screen.png")


# the samples ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScreenItem:
    """A sample made ready: the conversation through the screened reply, and the prompt
    before it (ending with a generation prompt)."""

    example: ChatExample
    conversation: FormattedConversation
    prompt: FormattedConversation
    seed: int


def last_reply_index(messages: Sequence[Message], source: str = "the sample") -> int:
    """The index of the last assistant message, refusing one with no user turn before it.

    Example:
        >>> ms = [Message("user", "Hi"), Message("assistant", "Yo"), Message("user", "Bye")]
        >>> last_reply_index(ms)
        1
    """
    index = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
    if index < 1 or messages[index - 1].role != "user":
        raise PersonaspaceError(
            f"{source} has no user message right before its last assistant reply",
            fix="give each screened reply the user message it answers",
        )
    return index


def prepare_items(
    lm: LoadedModel, examples: Sequence[ChatExample], *, seed: int, max_new_tokens: int
) -> list[ScreenItem]:
    """Format every sample for ``lm`` and check it fits the context (with the own reply's
    ``max_new_tokens``), before any forward pass. Messages after the last assistant reply
    are left out."""
    items = []
    for example in examples:
        where = example.source or "a sample"
        index = last_reply_index(example.messages, where)
        head = example.messages[: index + 1]
        try:
            conversation = format_conversation(lm.tokenizer, head, use_chat_template=lm.chat_tuned)
            prompt = format_conversation(
                lm.tokenizer, head[:-1], add_generation_prompt=True, use_chat_template=lm.chat_tuned
            )
        except PersonaspaceError as err:
            raise err.within(where) from err
        if not len(conversation.spans_of("assistant")[-1]):
            raise PersonaspaceError(f"{where} has an empty last assistant reply", fix="drop it")
        check_fits(lm, len(conversation.input_ids), where)
        check_fits(lm, len(prompt.input_ids), f"{where} (its prompt)", max_new_tokens)
        key = json.dumps([[m.role, m.content] for m in head[:-1]], ensure_ascii=False)
        items.append(ScreenItem(example, conversation, prompt, item_seed(seed, f"screen/{key}")))
    return items


class SampleJSON(TypedDict):
    index: int
    source: str
    prompt: str
    dataset_reply: str
    own_reply: str | None
    dataset_projection: float | None
    own_projection: float | None
    projection_difference: float | None
    last_prompt_projection: float | None
    n_dataset_tokens: int
    n_own_tokens: int | None
    own_finish_reason: str | None
    own_seed: int | None


@dataclass(frozen=True)
class SampleScreen:
    """One sample's projections (``None`` where there is no own reply, or it was empty)."""

    index: int
    source: str
    prompt: str
    dataset_reply: str
    dataset_projection: float
    last_prompt_projection: float
    n_dataset_tokens: int
    own_reply: str | None = None
    own_projection: float | None = None
    n_own_tokens: int | None = None
    own_finish_reason: str | None = None
    own_seed: int | None = None

    @property
    def projection_difference(self) -> float | None:
        if self.own_projection is None:
            return None
        return self.dataset_projection - self.own_projection

    def to_json(self) -> SampleJSON:
        return {
            "index": self.index,
            "source": self.source,
            "prompt": self.prompt,
            "dataset_reply": self.dataset_reply,
            "own_reply": self.own_reply,
            "dataset_projection": finite_or_none(self.dataset_projection),
            "own_projection": self.own_projection,
            "projection_difference": self.projection_difference,
            "last_prompt_projection": finite_or_none(self.last_prompt_projection),
            "n_dataset_tokens": self.n_dataset_tokens,
            "n_own_tokens": self.n_own_tokens,
            "own_finish_reason": self.own_finish_reason,
            "own_seed": self.own_seed,
        }


class ScreenJSON(TypedDict):
    vector: str
    model_id: str
    layer: int
    seed: int
    generate_own: bool
    max_new_tokens: int
    n_samples: int
    n_own_empty: int
    projection_unit: str
    projection_difference: IntervalJSON | None
    dataset_projection: IntervalJSON
    own_projection: IntervalJSON | None
    last_prompt_projection: IntervalJSON
    null: NullJSON | None
    samples: list[SampleJSON]


@dataclass(frozen=True)
class ScreenResult:
    """What ``screen_dataset`` measured.

    ``projection_difference`` (the dataset-level figure), ``own_projection`` and ``null``
    are ``None`` without own replies (``generate_own=False``): then nothing says where the
    model itself would sit, and samples rank by ``dataset_projection``.
    """

    vector: str
    model_id: str
    layer: int
    seed: int
    generate_own: bool
    max_new_tokens: int
    samples: list[SampleScreen]
    dataset_projection: MeanInterval
    last_prompt_projection: MeanInterval
    own_projection: MeanInterval | None
    projection_difference: MeanInterval | None
    null: RandomNull | None

    @property
    def n_own_empty(self) -> int:
        """Own replies with no content token (no projection, left out of the means)."""
        return sum(s.own_reply is not None and s.own_projection is None for s in self.samples)

    def ranked(self, top: int | None = None) -> list[SampleScreen]:
        """The samples that shift most toward the vector first: by ``projection_difference``
        (samples without one last), or by ``dataset_projection`` without own replies.

        Example:
            >>> s = [SampleScreen(i, f"d:{i}", "q", "a", p, 0.0, 1, "o", 0.0)
            ...      for i, p in enumerate([0.5, 2.0, -1.0])]
            >>> r = ScreenResult("v", "m", 0, 0, True, 8, s, *[mean_interval([0.0])] * 4, None)
            >>> [x.source for x in r.ranked(2)]
            ['d:1', 'd:0']
        """
        if top is not None and top < 1:
            raise PersonaspaceError(f"top is {top}", fix="give 1 or more", param="top")

        def key(sample: SampleScreen) -> tuple[bool, float]:
            if not self.generate_own:
                return False, -sample.dataset_projection
            diff = sample.projection_difference
            return diff is None, -(diff if diff is not None else 0.0)

        return sorted(self.samples, key=key)[:top]

    def to_json(self) -> ScreenJSON:
        return {
            "vector": self.vector,
            "model_id": self.model_id,
            "layer": self.layer,
            "seed": self.seed,
            "generate_own": self.generate_own,
            "max_new_tokens": self.max_new_tokens,
            "n_samples": len(self.samples),
            "n_own_empty": self.n_own_empty,
            "projection_unit": PROJECTION_UNIT,
            "projection_difference": _json_or_none(self.projection_difference),
            "dataset_projection": self.dataset_projection.to_json(),
            "own_projection": _json_or_none(self.own_projection),
            "last_prompt_projection": self.last_prompt_projection.to_json(),
            "null": self.null.to_json() if self.null is not None else None,
            "samples": [s.to_json() for s in self.ranked()],
        }


def _json_or_none(value: MeanInterval | None) -> IntervalJSON | None:
    return value.to_json() if value is not None else None


def screening_layer(lm: LoadedModel, vector: NamedVector, layer: int | None) -> int:
    """The layer to screen at: ``layer``, else the vector's analysis layer, else its middle
    row; checked against the model and the vector (which must fit the model).

    Example:
        >>> screening_layer(lm, read_named_vector("runs/x:evil"), None)  # doctest: +SKIP
        15
    """
    vector.check_model(lm)
    chosen = layer if layer is not None else vector.layer
    if chosen is None:
        chosen = vector.layers[len(vector.layers) // 2]
    try:
        [resolved] = lm.adapter.check_layers([chosen])
    except PersonaspaceError as err:
        raise PersonaspaceError(err.problem, fix=err.fix, param="layer") from err
    vector.at(resolved)
    return resolved


def _batches(n: int, size: int) -> list[range]:
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


def screen_dataset(
    lm: LoadedModel,
    examples: Sequence[ChatExample],
    vector: NamedVector,
    *,
    layer: int | None = None,
    seed: int = 0,
    generate_own: bool = True,
    max_new_tokens: int = OWN_SAMPLING.max_new_tokens,
    batch_size: int | None = None,
    n_random: int = 200,
    on_batch: Callable[[int], object] | None = None,
) -> ScreenResult:
    """Project each sample's last reply (and the model's own reply to its prompt) on
    ``vector`` at one layer; the dataset's mean projection difference, its bootstrap
    interval and its random-direction null.

    Args:
        lm: the model to be finetuned.
        examples: the dataset (``read_chat_dataset``); each sample's last assistant turn is
            the reply screened, the messages before it its prompt.
        vector: a persona direction of this model (``read_named_vector("RUN:TRAIT")``).
        layer: the decoder block read (default: the vector's analysis layer).
        seed: seeds the own replies (one per prompt), the bootstrap and the null.
        generate_own: generate the model's own replies; without them only the dataset and
            last-prompt projections exist.
        max_new_tokens: the own replies' length limit (sampled at temperature 0.7, top-p
            0.9, the pipeline's settings).
        batch_size: samples per batch (``None``: one that suits the device).
        n_random: random unit directions of the null.
        on_batch: called with the number of samples a batch finished, once per pass
            (teacher forcing, then generation): the total is ``len(examples)`` per pass.

    Example:
        >>> data = read_chat_dataset("data.jsonl")  # doctest: +SKIP
        >>> result = screen_dataset(lm, data, read_named_vector("runs/x:evil"))  # doctest: +SKIP
        >>> print(result.projection_difference, result.null.percentile)  # doctest: +SKIP
        +1.93 [+0.81, +3.02] 97.5
    """
    if not examples:
        raise PersonaspaceError("the dataset has no samples", fix="give at least one")
    chosen = screening_layer(lm, vector, layer)
    direction = unit(vector.at(chosen).double())
    sampling = SamplingConfig(
        max_new_tokens=max_new_tokens,
        temperature=OWN_SAMPLING.temperature,
        top_p=OWN_SAMPLING.top_p,
        seed=seed,
    ).for_model(lm.chat_tuned)
    random_units(n_random, 1, seed)  # refuses n_random < 1 before any work
    items = prepare_items(lm, examples, seed=seed, max_new_tokens=max_new_tokens)
    longest = max(len(it.conversation.input_ids) for it in items)
    size = lm.batch_size(batch_size, longest)
    dataset_states, prompt_states = _teacher_states(lm, items, chosen, size, on_batch)
    own_states: torch.Tensor | None = None
    own_replies: list[tuple[str, int, str] | None] = [None] * len(items)
    if generate_own:
        own_states, own_replies = _own_states(lm, items, chosen, sampling, batch_size, on_batch)
    dataset_proj = (dataset_states @ direction).tolist()
    prompt_proj = (prompt_states @ direction).tolist()
    own_proj = (own_states @ direction).tolist() if own_states is not None else None
    samples = []
    for i, it in enumerate(items):
        own = own_replies[i]
        own_value = own_proj[i] if own_proj is not None else None
        samples.append(
            SampleScreen(
                index=i,
                source=it.example.source,
                prompt=it.conversation.messages[-2].content,
                dataset_reply=it.conversation.messages[-1].content,
                dataset_projection=dataset_proj[i],
                last_prompt_projection=prompt_proj[i],
                n_dataset_tokens=len(it.conversation.spans_of("assistant")[-1]),
                own_reply=own[0] if own is not None else None,
                own_projection=own_value
                if own_value is not None and np.isfinite(own_value)
                else None,
                n_own_tokens=own[1] if own is not None else None,
                own_finish_reason=own[2] if own is not None else None,
                own_seed=it.seed if generate_own else None,
            )
        )
    difference = own_mean = null = None
    if own_states is not None:
        kept = torch.isfinite(own_states).all(dim=-1)
        differences = dataset_states[kept] - own_states[kept]
        difference = mean_interval((differences @ direction).numpy(), seed=seed)
        own_mean = mean_interval(np.asarray(own_proj, dtype=np.float64), seed=seed)
        if len(differences):
            null = random_direction_null(
                differences.mean(0), direction, n_random=n_random, seed=seed
            )
    return ScreenResult(
        vector=vector.label,
        model_id=lm.model_id,
        layer=chosen,
        seed=seed,
        generate_own=generate_own,
        max_new_tokens=max_new_tokens,
        samples=samples,
        dataset_projection=mean_interval(np.asarray(dataset_proj), seed=seed),
        last_prompt_projection=mean_interval(np.asarray(prompt_proj), seed=seed),
        own_projection=own_mean,
        projection_difference=difference,
        null=null,
    )


def _teacher_states(
    lm: LoadedModel,
    items: Sequence[ScreenItem],
    layer: int,
    size: int,
    on_batch: Callable[[int], object] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The last reply's mean state and the last prompt token's state, ``[n, hidden]`` each
    (float64), teacher-forced."""
    means, lasts = [], []
    for rows in _batches(len(items), size):
        caps = capture_conversations(
            lm, [items[i].conversation for i in rows], layers=[layer], batch_size=size
        )
        for cap in caps:
            assert cap.last_prompt is not None
            means.append(cap.turn_means[-1, 0].double())
            lasts.append(cap.last_prompt[0].double())
        if on_batch is not None:
            on_batch(len(rows))
    return torch.stack(means), torch.stack(lasts)


def _own_states(
    lm: LoadedModel,
    items: Sequence[ScreenItem],
    layer: int,
    sampling: SamplingConfig,
    batch_size: int | None,
    on_batch: Callable[[int], object] | None,
) -> tuple[torch.Tensor, list[tuple[str, int, str] | None]]:
    """The own replies' mean states ``[n, hidden]`` (NaN rows for empty replies) and
    (text, tokens, finish reason) of each."""
    gens = generate(
        lm,
        [it.prompt for it in items],
        sampling,
        layers=[layer],
        reductions=("response_mean",),
        batch_size=batch_size,
        seeds=[it.seed for it in items],
        on_batch=on_batch,
    )
    states = []
    for g in gens:
        assert g.response_mean is not None
        states.append(g.response_mean[0].double())
    replies: list[tuple[str, int, str] | None] = [
        (g.text, len(g.token_ids), g.finish_reason) for g in gens
    ]
    return torch.stack(states), replies


# writers ----------------------------------------------------------------------------------
CSV_COLUMNS = (
    "rank",
    "source",
    "projection_difference",
    "dataset_projection",
    "own_projection",
    "last_prompt_projection",
    "n_dataset_tokens",
    "n_own_tokens",
    "own_seed",
    "prompt",
    "dataset_reply",
    "own_reply",
)


def write_screen_json(result: ScreenResult, path: str | Path) -> Path:
    """The full result as JSON (samples ranked), atomically."""
    write_json(path, result.to_json())
    return Path(path)


def write_screen_csv(result: ScreenResult, path: str | Path) -> Path:
    """One row per sample, ranked, with its source ``file:line``, atomically.

    Example:
        >>> import tempfile, pathlib
        >>> s = [SampleScreen(0, "d.jsonl:1", "q", "a", 1.5, 0.2, 3)]
        >>> r = ScreenResult("v", "m", 0, 0, False, 8, s, *[mean_interval([1.5])] * 2,
        ...                  None, None, None)
        >>> p = write_screen_csv(r, pathlib.Path(tempfile.mkdtemp()) / "s.csv")
        >>> p.read_text().splitlines()[1].split(",")[:4]
        ['1', 'd.jsonl:1', '', '1.5']
    """
    with atomic_write(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for rank, sample in enumerate(result.ranked(), start=1):
            row = sample.to_json()
            writer.writerow({"rank": rank, **{c: row.get(c) for c in CSV_COLUMNS if c != "rank"}})
    return Path(path)


def plot_screen(result: ScreenResult, path: str | Path) -> Path:
    """Histograms: the dataset's and the own replies' projections, and (with own replies)
    the per-sample differences, their mean and the random directions' 95 % band for it.

    Example:
        >>> import tempfile, pathlib
        >>> s = [SampleScreen(i, "d", "q", "a", float(i), 0.0, 3, "o", 0.5) for i in range(4)]
        >>> m = mean_interval([0.0, 1.0])
        >>> null = RandomNull(1.0, 10, 0, 90.0, 1.1, -1.0, 1.0)
        >>> r = ScreenResult("v", "m", 2, 0, True, 8, s, m, m, m, m, null)
        >>> plot_screen(r, pathlib.Path(tempfile.mkdtemp()) / "s.png").stat().st_size > 0
        True
    """
    dataset = [s.dataset_projection for s in result.samples]
    own = [s.own_projection for s in result.samples if s.own_projection is not None]
    diffs = [d for s in result.samples if (d := s.projection_difference) is not None]

    def draw(fig: Figure) -> None:
        panels = 2 if diffs else 1
        left = fig.add_subplot(1, panels, 1)
        left.hist(dataset, bins="auto", alpha=0.6, color="#c53030", label="dataset replies")
        if own:
            left.hist(own, bins="auto", alpha=0.6, color="#2b6cb0", label="own replies")
        left.set_xlabel(f"projection on {result.vector} (layer {result.layer})")
        left.set_ylabel("samples")
        left.legend(fontsize=8)
        left.set_title("reply projections")
        if not diffs:
            return
        right = fig.add_subplot(1, panels, 2)
        right.hist(diffs, bins="auto", color="#718096")
        if result.projection_difference is not None:
            right.axvline(result.projection_difference.mean, color="black", label="mean")
        if result.null is not None:
            right.axvspan(
                result.null.random_low,
                result.null.random_high,
                color="#dd6b20",
                alpha=0.2,
                label=f"mean along random directions, 95 % ({result.null.n_directions})",
            )
        right.set_xlabel("dataset - own projection")
        right.legend(fontsize=8)
        right.set_title("projection difference per sample")

    return save_png(path, draw, (10 if diffs else 5.5, 4))


def write_screen(result: ScreenResult, folder: str | Path) -> list[Path]:
    """``screen.json``, ``screen.csv`` and ``screen.png`` in ``folder`` (created)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    json_name, csv_name, png_name = SCREEN_FILES
    return [
        write_screen_json(result, out / json_name),
        write_screen_csv(result, out / csv_name),
        plot_screen(result, out / png_name),
    ]
