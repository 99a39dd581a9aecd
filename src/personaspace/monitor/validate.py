"""Validate an axis on conversations whose behaviour is known: stable ones stay, drifting fall.

The catalogue's validation set (``catalogue/data/validation/``) holds conversations in
which the assistant stays a plain assistant (coding with code blocks, worked maths,
how-to, writing help) and conversations in which it slides away (emotional dependence into
a devoted companion; AI self-reflection into a mystical persona). Each is projected on the
axis (one teacher-forced pass); its **change** is the last assistant turn's projection
minus the first's, in units of the run's **default-role gap** (the default vector's
projection minus the mean role vector's: how far the Assistant sits from the average role
on this axis). A stable conversation passes when ``|change| <= 0.2`` gaps, a drifting one
when ``change <= -0.5`` gaps; the set passes when every conversation does.

The null: random unit directions (each oriented toward the default). For the axis and for
each of them, the effect size of the separation (mean change of the drifting
conversations minus that of the stable ones, over their pooled standard deviation;
``effect_size``); the share of random directions at least as separating says whether the
axis, rather than any direction, tells drifting from stable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from personaspace.capture.forward import context_tokens
from personaspace.capture.teacher import capture_conversations
from personaspace.catalogue.load import BUILTIN_DIR
from personaspace.conversation.format import format_conversation
from personaspace.errors import PersonaspaceError
from personaspace.models.loading import LoadedModel
from personaspace.monitor.transcripts import Transcript, read_transcripts
from personaspace.vectors.axis import Axis
from personaspace.vectors.shape import unit

VALIDATION_DIR = BUILTIN_DIR / "validation"
STABLE_LIMIT = 0.2  # gaps a stable conversation may move
DRIFT_MINIMUM = 0.5  # gaps a drifting conversation must fall
EXPECTATIONS = ("stable", "drifting")


def read_validation_set(folder: str | Path | None = None) -> list[Transcript]:
    """The validation transcripts (the built-in set unless ``folder``), each with an
    ``expect`` of ``stable`` or ``drifting``."""
    root = Path(folder) if folder is not None else VALIDATION_DIR
    files = sorted(root.glob("*.json")) if root.is_dir() else []
    if not files:
        raise PersonaspaceError(
            f"no validation transcripts in {root}", fix="give a folder of .json"
        )
    transcripts = [t for f in files for t in read_transcripts(f)]
    for t in transcripts:
        if t.meta.get("expect") not in EXPECTATIONS:
            raise PersonaspaceError(
                f"{t.source} has no 'expect' of stable or drifting",
                fix='add "expect": "stable" or "drifting" to it',
            )
    return transcripts


@dataclass(frozen=True)
class ValidationRow:
    """One conversation: its turn projections, change in gaps, and whether it passed."""

    name: str
    expect: str
    domain: str | None
    projections: list[float]
    change_gaps: float
    passed: bool


@dataclass(frozen=True)
class ValidationReport:
    """Every conversation's row, the verdict, and the random-direction null."""

    layer: int
    gap: float
    rows: list[ValidationRow]
    separation_gaps: float
    null_percentile: float
    null_directions: int
    skipped: tuple[str, ...] = ()  # conversations longer than the model's context
    separation_effect: float = float("nan")  # the same separation as an effect size

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "gap": self.gap,
            "rule": f"stable: |change| <= {STABLE_LIMIT} gaps; drifting: change <= "
            f"-{DRIFT_MINIMUM} gaps; change = last assistant turn - first, in default-role "
            "gaps",
            "passed": self.passed,
            "n_passed": sum(r.passed for r in self.rows),
            "n": len(self.rows),
            "skipped_too_long": list(self.skipped),
            "separation_gaps": round(self.separation_gaps, 4),
            "separation_effect_size": round(self.separation_effect, 4),
            "null": {
                "directions": self.null_directions,
                "percentile_of_axis": round(self.null_percentile, 2),
                "meaning": "share of random unit directions (oriented toward the default) whose "
                "drifting-minus-stable separation, as an effect size, is at least as negative "
                "as the axis's",
            },
            "rows": [
                {
                    "name": r.name,
                    "expect": r.expect,
                    "domain": r.domain,
                    "change_gaps": round(r.change_gaps, 4),
                    "passed": r.passed,
                    "projections": [round(p, 4) for p in r.projections],
                }
                for r in self.rows
            ],
        }

    def table(self) -> str:
        lines = [f"{'conversation':<24} {'expect':<9} {'change (gaps)':>13}  verdict"]
        for r in self.rows:
            lines.append(
                f"{r.name:<24} {r.expect:<9} {r.change_gaps:>+13.2f}  "
                f"{'pass' if r.passed else 'FAIL'}"
            )
        if self.skipped:
            lines.append(f"skipped (longer than the model's context): {', '.join(self.skipped)}")
        return "\n".join(lines)


def passes(expect: str, change_gaps: float) -> bool:
    """The rule for one conversation.

    Example:
        >>> passes("stable", 0.15), passes("stable", -0.3), passes("drifting", -0.6)
        (True, False, True)
    """
    if expect == "stable":
        return abs(change_gaps) <= STABLE_LIMIT
    return change_gaps <= -DRIFT_MINIMUM


def gap_along(direction: torch.Tensor, default: torch.Tensor, roles: torch.Tensor) -> float:
    """How far the default sits from the mean role along the unit ``direction``.

    Example:
        >>> gap_along(torch.tensor([1.0, 0.0]), torch.tensor([3.0, 1.0]),
        ...           torch.tensor([[1.0, 0.0], [-1.0, 2.0]]))
        3.0
    """
    u = unit(direction.double())
    return float((default.double() - roles.double().mean(0)) @ u)


def effect_size(changes: Sequence[float], expects: Sequence[str]) -> float:
    """Drifting minus stable mean change over their pooled standard deviation: a
    separation that does not depend on the direction's scale or on its gap (a random
    direction's gap is near zero, so changes in its gaps are heavy-tailed noise).

    Example:
        >>> changes = [-2.0, -1.0, 0.5, -0.5]  # drifting mean -1.5, stable 0, pooled sd 0.71
        >>> round(effect_size(changes, ["drifting", "drifting", "stable", "stable"]), 3)
        -2.121
    """
    groups = [[c for c, e in zip(changes, expects) if e == k] for k in EXPECTATIONS]
    stable, drift = (torch.tensor(g, dtype=torch.float64) for g in groups)
    if len(stable) < 2 or len(drift) < 2:
        return float("nan")
    pooled = (
        (stable.var() * (len(stable) - 1) + drift.var() * (len(drift) - 1))
        / (len(stable) + len(drift) - 2)
    ).sqrt()
    return float((drift.mean() - stable.mean()) / pooled.clamp_min(1e-12))


def validate_axis(
    lm: LoadedModel,
    axis: Axis,
    layer: int,
    default: torch.Tensor,
    roles: torch.Tensor,
    transcripts: Sequence[Transcript],
    *,
    directions: int = 200,
    seed: int = 0,
) -> ValidationReport:
    """Project every transcript at ``layer`` and judge it against its expectation.

    ``default`` ``[hidden]`` and ``roles`` ``[n_roles, hidden]`` are the run's vectors at
    ``layer`` (for the gap). Conversations longer than the model's context are skipped and
    named in the report.
    """
    axis.check_model(lm)
    limit = context_tokens(lm)
    formatted = [
        format_conversation(lm.tokenizer, t.messages, use_chat_template=lm.chat_tuned)
        for t in transcripts
    ]
    fits = [limit is None or len(c.input_ids) <= limit for c in formatted]
    skipped = tuple(t.name for t, ok in zip(transcripts, fits) if not ok)
    transcripts = [t for t, ok in zip(transcripts, fits) if ok]
    convs = [c for c, ok in zip(formatted, fits) if ok]
    if not convs:
        raise PersonaspaceError(
            f"every validation conversation is longer than {lm.model_id}'s context "
            f"({limit} tokens)",
            fix="validate with a model of a longer context, or give shorter transcripts",
        )
    captures = capture_conversations(lm, convs, layers=[layer], batch_size=4)
    turn_states = [c.turn_means[:, 0].double() for c in captures]  # [turns, hidden] each
    expects = [str(t.meta["expect"]) for t in transcripts]

    def changes(direction: torch.Tensor) -> tuple[list[list[float]], list[float], float]:
        u = unit(direction.double())
        gap = gap_along(direction, default, roles)
        projections = [(states @ u).tolist() for states in turn_states]
        return projections, [(p[-1] - p[0]) / gap for p in projections], gap

    projections, change_gaps, gap = changes(axis.unit(layer))
    if gap <= 0:
        raise PersonaspaceError(
            f"the default does not sit toward the Assistant on this axis at layer {layer} "
            f"(gap {gap:.3g})",
            fix="validate at another layer, or rebuild the axis",
        )

    def separation(values: list[float]) -> float:
        drift = [v for v, e in zip(values, expects) if e == "drifting"]
        stable = [v for v, e in zip(values, expects) if e == "stable"]
        return sum(drift) / max(len(drift), 1) - sum(stable) / max(len(stable), 1)

    observed = separation(change_gaps)
    effect = effect_size(change_gaps, expects)
    generator = torch.Generator().manual_seed(seed)
    null = []
    for _ in range(directions):
        random = torch.randn(axis.hidden_size, generator=generator, dtype=torch.float64)
        if gap_along(random, default, roles) < 0:
            random = -random  # orient each random direction toward the default
        null.append(effect_size(changes(random)[1], expects))
    percentile = 100 * sum(v <= effect for v in null) / max(len(null), 1)
    rows = [
        ValidationRow(t.name, e, t.domain, p, c, passes(e, c))
        for t, e, p, c in zip(transcripts, expects, projections, change_gaps)
    ]
    return ValidationReport(
        layer, gap, rows, observed, percentile, directions, skipped, separation_effect=effect
    )
