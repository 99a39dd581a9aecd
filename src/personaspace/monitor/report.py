"""Monitor transcripts: per-turn projections on the axis, as a table, JSON and CSV.

``monitor_transcripts`` formats each transcript for the model, projects every assistant
turn (one teacher-forced pass per conversation, ``project_turns``) and, when the axis run
is calibrated, attaches the capping floor ``tau`` at a percentile (p25 by default) of each
layer. The floor is a percentile of *per-token* projections of the calibration replies,
the threshold a cap holds tokens above; a turn's value is a mean over its tokens.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from personaspace.capture.forward import check_fits
from personaspace.conversation.format import format_conversation
from personaspace.errors import PersonaspaceError
from personaspace.fileformat import finite_or_none
from personaspace.models.loading import LoadedModel
from personaspace.monitor.projection import Trajectory, project_turns, resolve_layers
from personaspace.monitor.transcripts import Transcript
from personaspace.vectors.axis import Axis
from personaspace.vectors.calibration import Calibration

PROJECTION_DEFINITION = (
    "mean over the assistant turn's content tokens of h . u, with h the residual stream "
    "after the decoder block and u the unit Assistant Axis at that layer (higher = closer "
    "to the Assistant)"
)
CSV_COLUMNS = (
    "transcript",
    "source",
    "domain",
    "turn",
    "message_index",
    "n_tokens",
    "layer",
    "projection",
    "threshold",
)


@dataclass
class MonitoredTranscript:
    """One transcript, its trajectory, and (per-token runs) each turn's token strings."""

    transcript: Transcript
    trajectory: Trajectory
    token_texts: list[list[str]] | None = None

    def turn_tokens(self, turn: int) -> list[list[float]]:
        """Per-token projections ``[n_tokens][n_layers]`` of assistant turn ``turn`` (0-based)."""
        if self.trajectory.tokens is None:
            raise PersonaspaceError(
                "per-token projections were not computed", fix="monitor with per_token=True"
            )
        span = self.trajectory.spans[turn]
        return self.trajectory.tokens[span.start : span.end].tolist()


@dataclass
class MonitorReport:
    """Everything ``personaspace monitor`` shows and writes.

    ``thresholds`` maps layer -> calibrated floor at ``percentile`` (empty when the axis run
    is not calibrated).
    """

    model_id: str
    axis_source: str
    layers: list[int]
    items: list[MonitoredTranscript]
    thresholds: dict[int, float]
    percentile: float
    calibration_source: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (NaN -> ``None``); what ``monitor.json`` holds."""
        transcripts = []
        for item in self.items:
            t = item.transcript
            turns = []
            for index, span in enumerate(item.trajectory.spans):
                row: dict[str, Any] = {
                    "turn": index + 1,
                    "message_index": span.message_index,
                    "n_tokens": len(span),
                    "projection": _by_layer(self.layers, item.trajectory.turns[index].tolist()),
                }
                if item.trajectory.tokens is not None:
                    values = item.turn_tokens(index)
                    row["tokens"] = {
                        "text": item.token_texts[index] if item.token_texts else None,
                        "projection": {
                            str(layer): [finite_or_none(v[i]) for v in values]
                            for i, layer in enumerate(self.layers)
                        },
                    }
                turns.append(row)
            transcripts.append(
                {
                    "name": t.name,
                    "source": t.source,
                    "format": t.format,
                    "domain": t.domain,
                    "model": t.model,
                    "meta": t.meta,
                    "n_messages": len(t.messages),
                    "turns": turns,
                }
            )
        return {
            "kind": "monitor",
            "model_id": self.model_id,
            "axis": self.axis_source,
            "layers": self.layers,
            "projection": PROJECTION_DEFINITION,
            "calibration": None
            if not self.thresholds
            else {
                "calibration_set": self.calibration_source,
                "percentile": self.percentile,
                "thresholds": {str(k): v for k, v in sorted(self.thresholds.items())},
                "meaning": "capping floor: this percentile of per-token projections of the "
                "calibration replies",
            },
            "transcripts": transcripts,
        }

    def csv_text(self) -> str:
        """One row per (transcript, assistant turn, layer): the tidy table in ``monitor.csv``."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for item in self.items:
            t = item.transcript
            for index, span in enumerate(item.trajectory.spans):
                for col, layer in enumerate(self.layers):
                    value = finite_or_none(float(item.trajectory.turns[index, col]))
                    threshold = self.thresholds.get(layer)
                    writer.writerow(
                        [
                            t.name,
                            t.source,
                            t.domain or "",
                            index + 1,
                            span.message_index,
                            len(span),
                            layer,
                            "" if value is None else repr(value),
                            "" if threshold is None else repr(threshold),
                        ]
                    )
        return buffer.getvalue()

    def table(self) -> str:
        """A fixed-width text table: one row per assistant turn, one column per layer."""
        name_width = max([10, *(len(i.transcript.name) for i in self.items)])
        head = f"{'transcript':<{name_width}}  {'turn':>4}  {'tokens':>6}"
        head += "".join(f"  {f'L{layer}':>9}" for layer in self.layers)
        lines = [head]
        if self.thresholds:
            label = f"p{self.percentile:g} floor"
            row = f"{label:<{name_width}}  {'':>4}  {'':>6}"
            row += "".join(f"  {_cell(self.thresholds.get(layer))}" for layer in self.layers)
            lines.append(row)
        for item in self.items:
            for index, span in enumerate(item.trajectory.spans):
                row = f"{item.transcript.name:<{name_width}}  {index + 1:>4}  {len(span):>6}"
                row += "".join(f"  {_cell(float(v))}" for v in item.trajectory.turns[index])
                lines.append(row)
        return "\n".join(lines)


def _by_layer(layers: list[int], values: list[float]) -> dict[str, float | None]:
    return {str(layer): finite_or_none(v) for layer, v in zip(layers, values)}


def _cell(value: float | None) -> str:
    shown = None if value is None else finite_or_none(value)
    return f"{'-':>9}" if shown is None else f"{shown:>9.3f}"


def monitor_transcripts(
    lm: LoadedModel,
    axis: Axis,
    transcripts: Sequence[Transcript],
    *,
    layers: Sequence[int] | None = None,
    per_token: bool = False,
    calibration: Calibration | None = None,
    percentile: float = 25.0,
    batch_size: int = 4,
) -> MonitorReport:
    """Project every assistant turn of ``transcripts`` on ``axis`` at ``layers``.

    Args:
        lm: the model the axis was built on (checked).
        axis: from ``load_axis``.
        transcripts: from ``read_transcripts``.
        layers: decoder blocks (default: the axis's middle layer).
        per_token: also project each content token (kept with its text).
        calibration: the axis run's calibration, for the floor lines (optional).
        percentile: which calibrated floor to show (25 = p25).
        batch_size: conversations per forward pass.

    Example:
        >>> lm = load_model("smollm2-135m-instruct")  # doctest: +SKIP
        >>> report = monitor_transcripts(lm, load_axis(run, lm), read_transcripts("t.json"))
        ... # doctest: +SKIP
        >>> print(report.table())  # doctest: +SKIP
    """
    if not transcripts:
        raise PersonaspaceError("no transcripts to monitor", fix="give at least one transcript")
    axis.check_model(lm)
    chosen = resolve_layers(axis, lm, layers)
    formatted = []
    for t in transcripts:
        try:
            conv = format_conversation(lm.tokenizer, t.messages, use_chat_template=lm.chat_tuned)
            check_fits(lm, len(conv.input_ids), "the transcript")
        except PersonaspaceError as err:
            raise err.within(t.source) from err
        formatted.append(conv)
    trajectories = project_turns(
        lm, axis, formatted, layers=chosen, per_token=per_token, batch_size=batch_size
    )
    items = []
    for transcript, conv, trajectory in zip(transcripts, formatted, trajectories):
        texts = None
        if per_token:
            texts = [
                [lm.tokenizer.decode([i]) for i in conv.input_ids[s.start : s.end]]
                for s in trajectory.spans
            ]
        items.append(MonitoredTranscript(transcript, trajectory, texts))
    return MonitorReport(
        model_id=lm.model_id,
        axis_source=axis.source,
        layers=chosen,
        items=items,
        thresholds={} if calibration is None else calibration.thresholds(chosen, percentile),
        percentile=percentile,
        calibration_source=calibration.source if calibration is not None else None,
    )
