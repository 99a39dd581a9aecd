"""Read a finished axis run (ours or a reference-layout folder) for ``compare``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from personaspace.analysis.compare import ComparedRun
from personaspace.errors import PersonaspaceError
from personaspace.fileformat import load_vectors, read_json
from personaspace.pipeline.results import load_run


def load_compared_run(
    path: str | Path, *, label: str | None = None, layer: int | None = None
) -> ComparedRun:
    """A run folder as a ``ComparedRun``; ``layer`` overrides the run's analysis layer.

    Our folders give the model, layer count, hidden size, analysis layer, catalogue and
    whether the model is chat-tuned; a reference folder (``axis.pt`` ...) gives vectors
    only, and the middle layer is used.

    Example:
        >>> run = load_compared_run("runs/axis-gemma-3-270m-quick")  # doctest: +SKIP
        >>> run.hidden_size, run.analysis_layer  # doctest: +SKIP
        (640, 9)
    """
    root = Path(path)
    if not root.is_dir():
        raise PersonaspaceError(
            f"{root} is not a run folder", fix="pass two --out folders of `personaspace axis`"
        )
    vectors = load_run(root)
    if vectors.default is None or not vectors.roles:
        raise PersonaspaceError(
            f"{root} has no default or role vectors", fix="pass a finished axis run folder"
        )
    config: dict[str, Any] = {}
    header: dict[str, Any] = {}
    analysis_layer = vectors.layers[len(vectors.layers) // 2]
    if (root / "config.json").is_file():
        header = read_json(root / "config.json")
        config = header.get("config", {})
    if (root / "axis.safetensors").is_file():
        meta = load_vectors(root / "axis.safetensors")[1]
        analysis_layer = int(meta.get("analysis_layer", analysis_layer))
    chosen = analysis_layer if layer is None else layer
    if chosen not in vectors.layers:
        raise PersonaspaceError(
            f"{root} has no vectors for layer {chosen}",
            fix=f"choose a layer in {vectors.layers[0]}..{vectors.layers[-1]}",
        )
    extra = {"folder": str(root.resolve())}
    for key in ("preset", "judge", "score_threshold", "min_count"):
        if key in config:
            extra[key] = config[key]
    return ComparedRun(
        label=label or root.name,
        model_id=str(header.get("model_id", vectors.model_id)),
        layers=list(vectors.layers),
        n_layers=int(header.get("n_layers", len(vectors.layers))),
        hidden_size=int(header.get("hidden_size", vectors.axis.shape[-1])),
        analysis_layer=chosen,
        axis=vectors.axis.float(),
        default=vectors.default.float(),
        roles={n: v.float() for n, v in vectors.roles.items()},
        catalogue=config.get("catalogue"),
        chat_tuned=header.get("chat_tuned"),
        extra=extra,
    )
