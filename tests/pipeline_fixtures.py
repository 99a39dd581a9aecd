"""A tiny model folder and a tiny user catalogue for running the real pipeline fast."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from conftest import CHATML, char_tokenizer, tiny_config
from transformers import AutoModelForCausalLM

ROLE_SPECS = [
    ("pirate", "profession", "A sea-roving pirate captain."),
    ("ghost", "nonhuman_abstract", "A restless ghost in an old house."),
    ("therapist", "helpful_professional", "A calm, caring therapist."),
    ("poet", "everyday", "A melancholy poet."),
    ("oracle", "historical_mythic", "A temple oracle who speaks in riddles."),
]


def make_tiny_model(folder: Path, hidden: int = 64, layers: int = 3, *, chat: bool = True) -> Path:
    """A tiny random llama in ``folder``; ``chat=False`` gives it no chat template (a base
    model, read in the plain transcript format)."""
    config = tiny_config("llama")
    config.hidden_size, config.intermediate_size = hidden, 2 * hidden
    config.num_hidden_layers, config.head_dim = layers, hidden // 4
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = 3
    model.save_pretrained(folder)
    char_tokenizer(None if not chat else CHATML).save_pretrained(folder)
    return folder


def tiny_axis_run(model: Path, out: Path, roles: Sequence[str], seed: int = 0) -> Path:
    """A finished axis run of a tiny model on catalogue ``roles`` (no judge, no traits)."""
    from personaspace.capture import SamplingConfig
    from personaspace.pipeline import AxisConfig, run_axis

    config = AxisConfig(
        model=str(model),
        preset="tiny",
        roles=tuple(roles),
        traits=(),
        judge="none",
        min_count=1,
        sampling=SamplingConfig(max_new_tokens=6, temperature=0.7, top_p=0.9, seed=seed),
        batch_size=16,
        role_card=False,  # a character per token: the card would pass 512 positions
    )
    return run_axis(config, out).out


def make_user_catalogue(folder: Path) -> Path:
    (folder / "roles").mkdir(parents=True)
    (folder / "traits").mkdir()
    roles = [
        {
            "name": n,
            "category": c,
            "description": d,
            "prompts": [
                f"{d} Variant {i}: speak as this character, {'xyzwv'[i] * 3}." for i in range(5)
            ],
            "in_role": f"Answers in the voice of {d.lower()}",
        }
        for n, c, d in ROLE_SPECS
    ]
    (folder / "roles" / "r.json").write_text(json.dumps(roles))
    traits = [
        {
            "name": name,
            "group": "affect",
            "description": f"{name} in tone.",
            "pairs": [
                {"pos": f"Be {name} {i}.", "neg": f"Be the opposite of {name} {i}."}
                for i in range(5)
            ],
            "extraction_questions": [f"How was day {i}?" for i in range(20)],
            "evaluation_questions": [f"How was night {i}?" for i in range(20)],
            "rubric": "0 absent, 50 some, 100 strong.",
        }
        for name in ("cheerful", "gloomy")
    ]
    (folder / "traits" / "t.json").write_text(json.dumps(traits))
    return folder
