"""Calibrate a finished axis run: ``calibration.safetensors`` and ``capping.safetensors``.

Defaults: 64 replies of the run (default persona and roles, evenly spaced), two layer
ranges of up to 8 blocks (one centred on the middle layer, one starting at 70 % depth,
the region where the published caps sit) and the percentiles 10, 25 and 50.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from personaspace.conversation.format import FormattedConversation
from personaspace.conversation.prompts import format_exchange
from personaspace.interventions.calibrate import calibrate
from personaspace.models.loading import LoadedModel
from personaspace.runfolder import RunFolder
from personaspace.vectors.calibration import Calibration
from personaspace.vectors.capping import CappingConfig, build_capping_config

DEFAULT_LIMIT = 64
DEFAULT_PERCENTILES: tuple[float, ...] = (10.0, 25.0, 50.0)
RANGE_WIDTH = 8


def default_ranges(n_layers: int) -> list[tuple[int, int]]:
    """Up to two half-open ranges of ``RANGE_WIDTH`` blocks: middle and 70 % depth.

    Example:
        >>> default_ranges(30), default_ranges(18), default_ranges(3)
        ([(11, 19), (21, 29)], [(5, 13), (10, 18)], [(0, 3)])
    """
    width = min(RANGE_WIDTH, n_layers)
    middle = max(0, min(n_layers // 2 - width // 2, n_layers - width))
    late = max(0, min(round(0.7 * n_layers), n_layers - width))
    return sorted({(middle, middle + width), (late, late + width)})


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

    Example:
        >>> convs = run_calibration_set(lm, "runs/axis-smollm2-135m-instruct-quick", limit=8)
        ... # doctest: +SKIP
        >>> len(convs)  # doctest: +SKIP
        8
    """
    return [
        format_exchange(lm, row["question"], row["response"], row.get("system"))
        for row in RunFolder(run).replies(kinds, limit)
    ]


def calibrate_run(
    lm: LoadedModel,
    run: str | Path,
    *,
    limit: int | None = DEFAULT_LIMIT,
    kinds: Sequence[str] = ("default", "role"),
    ranges: Sequence[tuple[int, int]] | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    conversations: Sequence[FormattedConversation] | None = None,
    source: str | None = None,
    on_batch: Callable[[int], object] | None = None,
    batch_size: int | None = None,
) -> tuple[Calibration, CappingConfig]:
    """Calibrate the run's axis and write both files into the run.

    The calibration set is the run's own replies (``kinds``, ``limit``) unless
    ``conversations`` are given (then ``source`` says what they are).

    Example:
        >>> cal, cfg = calibrate_run(lm, "runs/axis-smollm2-135m-instruct-quick")  # doctest: +SKIP
        >>> cfg.ids[:2]  # doctest: +SKIP
        ['layers_11:19-p10', 'layers_11:19-p25']
    """
    folder = RunFolder(run)
    axis = folder.axis(lm)
    if conversations is None:
        conversations = run_calibration_set(lm, folder.path, kinds=kinds, limit=limit)
        source = f"{len(conversations)} replies ({', '.join(kinds)}) of {folder.path.name}"
    source = source or f"{len(conversations)} conversations"
    calibration = calibrate(
        lm, axis, conversations, batch_size=batch_size or 8, source=source, on_batch=on_batch
    )
    chosen = list(ranges) if ranges else default_ranges(lm.adapter.n_layers)
    config = build_capping_config(axis, calibration, chosen, percentiles)
    folder.save_calibration(calibration)
    folder.save_capping(config)
    return calibration, config
