"""A tiny served setup: random tiny model, random axis, real calibration and capping config."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import char_tokenizer, tiny_config, tiny_lm
from transformers import AutoModelForCausalLM

from personaspace.conversation import format_conversation
from personaspace.interventions import calibrate
from personaspace.models.adapters import adapter_for
from personaspace.models.loading import LoadedModel
from personaspace.serve import Limits, ServeEngine, create_app
from personaspace.vectors import (
    Axis,
    Calibration,
    CappingConfig,
    build_capping_config,
    save_calibration,
    save_capping_config,
)

CALIBRATION_REPLIES = [
    "Storm tonight, calm seas tomorrow.",
    "I keep the light burning for the ships.",
    "The gulls are loud this morning.",
    "Tea, then the night watch.",
]
# Capping at the 90th percentile on all three layers of the tiny model engages on most
# tokens, so capped and uncapped replies differ.
CAP = "layers_0:3-p90"


def tiny_model(seed: int = 0, context: int = 512) -> LoadedModel:
    """``conftest.tiny_lm`` (llama), optionally with a longer context."""
    if context == 512:
        return tiny_lm("llama", seed=seed)
    config = tiny_config("llama")
    config.max_position_embeddings = context
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.generation_config.eos_token_id = 3
    return LoadedModel(model, char_tokenizer(), adapter_for(model), "tiny-llama", "Tiny", True)


def tiny_setup(
    seed: int = 0, context: int = 512
) -> tuple[LoadedModel, Axis, Calibration, CappingConfig]:
    lm = tiny_model(seed, context)
    g = torch.Generator().manual_seed(seed + 1)
    n, h = lm.adapter.n_layers, lm.adapter.hidden_size
    axis = Axis(lm.model_id, list(range(n)), torch.randn(n, h, generator=g), n, "tiny-axis")
    convs = [
        format_conversation(
            lm.tokenizer,
            [{"role": "user", "content": f"Hello {i}"}, {"role": "assistant", "content": reply}],
        )
        for i, reply in enumerate(CALIBRATION_REPLIES)
    ]
    calibration = calibrate(lm, axis, convs, source="tiny")
    capping = build_capping_config(axis, calibration, [(0, 3), (1, 2)], [25, 90])
    return lm, axis, calibration, capping


def tiny_engine(context: int = 512, **kw: object) -> ServeEngine:
    lm, axis, calibration, capping = tiny_setup(context=context)
    return ServeEngine(lm, axis, calibration=calibration, capping=capping, **kw)  # type: ignore[arg-type]


def tiny_app(limits: Limits | None = None, api_key: str | None = None, **kw: object):  # type: ignore[no-untyped-def]
    return create_app(tiny_engine(**kw), limits=limits, api_key=api_key)


def write_tiny_run(folder: Path) -> Path:
    """A run folder with axis, calibration and capping files (no model: tests pass one)."""
    from personaspace.fileformat import save_vectors

    lm, axis, calibration, capping = tiny_setup()
    folder.mkdir(parents=True, exist_ok=True)
    save_vectors(
        folder / "axis.safetensors",
        {"axis": axis.vectors},
        {"model_id": lm.model_id, "layers": axis.layers, "n_layers": lm.adapter.n_layers},
    )
    save_calibration(folder / "calibration.safetensors", calibration)
    save_capping_config(folder / "capping.safetensors", capping)
    return folder
