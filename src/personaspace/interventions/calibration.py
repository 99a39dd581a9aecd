"""Calibration: the scale of the residual stream and the spread of axis projections per layer.

From a calibration set of conversations (by default the replies of the axis run itself),
one teacher-forced pass measures, at every layer of the axis and over every assistant
content token:

- ``norms``: the mean L2 norm of the residual stream, the unit of steering coefficients
  (``coef_frac`` = multiple of this norm);
- ``percentiles``: percentiles 0..100 of the per-token projection on the unit axis, from
  which capping thresholds are chosen (``tau = percentiles[layer, 25]`` for ``p25``).

It is stored beside the axis as ``calibration.safetensors``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from personaspace.capture.generate import _left_pad
from personaspace.capture.hooks import residual_hooks
from personaspace.conversation.format import FormattedConversation, format_conversation
from personaspace.errors import PersonaspaceError
from personaspace.fileformat import load_vectors, save_vectors
from personaspace.models.loading import LoadedModel
from personaspace.monitor.axis import Axis

NORM_UNIT = "mean L2 norm of the residual stream over assistant content tokens at that layer"


@dataclass(frozen=True, eq=False)
class Calibration:
    """Per-layer residual norms ``[L]`` and projection percentiles ``[L, 101]``."""

    model_id: str
    layers: list[int]
    norms: torch.Tensor
    percentiles: torch.Tensor
    n_tokens: int
    n_conversations: int
    source: str

    def _row(self, layer: int) -> int:
        if layer not in self.layers:
            raise PersonaspaceError(
                f"the calibration has no layer {layer}",
                fix=f"choose among layers {self.layers[0]}..{self.layers[-1]}",
            )
        return self.layers.index(layer)

    def norm(self, layer: int) -> float:
        """Mean residual norm at ``layer``: one unit of steering coefficient."""
        return float(self.norms[self._row(layer)])

    def tau(self, layer: int, percentile: float) -> float:
        """The projection at ``percentile`` (0..100, linear between whole percentiles).

        Example:
            >>> c = Calibration("m", [2], torch.ones(1), torch.arange(101.0)[None], 9, 1, "x")
            >>> c.tau(2, 25), c.tau(2, 12.5)
            (25.0, 12.5)
        """
        if not 0 <= percentile <= 100:
            raise PersonaspaceError(
                f"percentile {percentile} is outside 0..100", fix="use e.g. 25 for p25"
            )
        row = self.percentiles[self._row(layer)]
        low = int(percentile)
        high = min(low + 1, 100)
        frac = percentile - low
        return float(row[low] * (1 - frac) + row[high] * frac)


def calibrate(
    lm: LoadedModel,
    axis: Axis,
    conversations: Sequence[FormattedConversation],
    *,
    batch_size: int = 8,
    source: str = "conversations",
    on_batch: Callable[[int], None] | None = None,
) -> Calibration:
    """Measure norms and projection percentiles over the assistant tokens of ``conversations``.

    Example:
        >>> convs = run_calibration_set(lm, run_folder)  # doctest: +SKIP
        >>> cal = calibrate(lm, load_axis(run_folder, lm), convs)  # doctest: +SKIP
        >>> cal.tau(20, 25)  # doctest: +SKIP
        3.91
    """
    axis.check_model(lm)
    if not conversations:
        raise PersonaspaceError("the calibration set is empty", fix="give it some conversations")
    layers = list(axis.layers)
    units = axis.units.to(lm.device)
    projections: list[list[torch.Tensor]] = [[] for _ in layers]
    norm_sums = torch.zeros(len(layers), dtype=torch.float64)
    n_tokens = 0
    for start in range(0, len(conversations), batch_size):
        batch = list(conversations[start : start + batch_size])
        ids, mask = _left_pad([c.input_ids for c in batch], int(lm.tokenizer.pad_token_id))
        content = torch.zeros_like(mask, dtype=torch.bool)
        for row, conv in enumerate(batch):
            offset = ids.shape[1] - len(conv.input_ids)
            for span in conv.spans_of("assistant"):
                content[row, offset + span.start : offset + span.end] = True
        n_tokens += int(content.sum())
        keep = content.to(lm.device)

        def on_block(position: int, hidden: torch.Tensor, keep: torch.Tensor = keep) -> None:
            states = hidden.float()[keep]  # [n_content, H]
            projections[position].append((states @ units[position]).cpu())
            norm_sums[position] += float(states.norm(dim=-1).double().sum())

        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode(), residual_hooks(lm.model, lm.adapter, layers, on_block):
            lm.model(
                input_ids=ids.to(lm.device),
                attention_mask=mask.to(lm.device),
                position_ids=positions.to(lm.device),
                use_cache=False,
                logits_to_keep=1,
            )
        if on_batch is not None:
            on_batch(len(batch))
    if n_tokens == 0:
        raise PersonaspaceError(
            "the calibration set has no assistant content tokens", fix="give it replies"
        )
    q = torch.linspace(0, 1, 101, dtype=torch.float64)
    percentiles = torch.stack([torch.quantile(torch.cat(p).double(), q) for p in projections])
    return Calibration(
        model_id=lm.model_id,
        layers=layers,
        norms=(norm_sums / n_tokens).float(),
        percentiles=percentiles.float(),
        n_tokens=n_tokens,
        n_conversations=len(conversations),
        source=source,
    )


def run_calibration_set(
    lm: LoadedModel,
    run: str | Path,
    *,
    kinds: Sequence[str] = ("default", "role"),
    limit: int | None = None,
) -> list[FormattedConversation]:
    """The replies of an axis run as conversations (system prompt, question, reply).

    ``kinds`` picks default-persona and/or role replies (``"trait_pos"``/``"trait_neg"``
    too); ``limit`` keeps an evenly spaced subset. Replies are re-tokenized from text.
    """
    path = Path(run) / "responses.jsonl"
    if not path.is_file():
        raise PersonaspaceError(
            f"{run} has no responses.jsonl", fix="pass a finished axis run folder"
        )
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                if row.get("kind") in kinds and row.get("response", "").strip():
                    rows.append(row)
    if limit is not None and len(rows) > limit:
        step = len(rows) / limit
        rows = [rows[int(i * step)] for i in range(limit)]
    conversations = []
    for row in rows:
        messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
        messages += [
            {"role": "user", "content": row["question"]},
            {"role": "assistant", "content": row["response"]},
        ]
        conversations.append(format_conversation(lm.tokenizer, messages))
    if not conversations:
        raise PersonaspaceError(
            f"{run} has no replies of kinds {list(kinds)}", fix="choose other kinds"
        )
    return conversations


def save_calibration(path: str | Path, calibration: Calibration) -> Path:
    """Write ``calibration.safetensors`` (norms, percentiles; JSON metadata with the unit)."""
    return save_vectors(
        path,
        {"norms": calibration.norms, "percentiles": calibration.percentiles},
        {
            "kind": "calibration",
            "model_id": calibration.model_id,
            "layers": calibration.layers,
            "norm_unit": NORM_UNIT,
            "percentiles": "0..100 of the per-token projection on the unit axis",
            "n_tokens": calibration.n_tokens,
            "n_conversations": calibration.n_conversations,
            "source": calibration.source,
        },
    )


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration file (or the one inside a run folder)."""
    file = Path(path)
    if file.is_dir():
        file = file / "calibration.safetensors"
        if not file.is_file():
            raise PersonaspaceError(
                f"{path} has not been calibrated",
                fix=f"run `personaspace calibrate {path}` first",
            )
    tensors, meta = load_vectors(file)
    if meta.get("kind") != "calibration" or {"norms", "percentiles"} - set(tensors):
        raise PersonaspaceError(f"{file} is not a calibration file", fix="recalibrate")
    return Calibration(
        model_id=str(meta.get("model_id", "unknown")),
        layers=[int(i) for i in meta["layers"]],
        norms=tensors["norms"].float(),
        percentiles=tensors["percentiles"].float(),
        n_tokens=int(meta.get("n_tokens", 0)),
        n_conversations=int(meta.get("n_conversations", 0)),
        source=str(meta.get("source", "")),
    )
