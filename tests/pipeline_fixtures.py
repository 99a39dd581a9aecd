"""A tiny model folder and a tiny user catalogue for running the real pipeline fast."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import char_tokenizer, tiny_config
from transformers import AutoModelForCausalLM

ROLE_SPECS = [
    ("pirate", "profession", "A sea-roving pirate captain."),
    ("ghost", "nonhuman_abstract", "A restless ghost in an old house."),
    ("therapist", "helpful_professional", "A calm, caring therapist."),
    ("poet", "everyday", "A melancholy poet."),
    ("oracle", "historical_mythic", "A temple oracle who speaks in riddles."),
]


def make_tiny_model(folder: Path, hidden: int = 64, layers: int = 3) -> Path:
    config = tiny_config("llama")
    config.hidden_size, config.intermediate_size = hidden, 2 * hidden
    config.num_hidden_layers, config.head_dim = layers, hidden // 4
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = 3
    model.save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


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
