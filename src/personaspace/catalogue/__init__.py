"""The persona catalogue: roles, traits, questions, scenarios and rubrics, written in-house.

Example:
    >>> from personaspace.catalogue import load_catalogue, select
    >>> quick = select(load_catalogue(), "quick")
    >>> len(quick.questions)
    12
"""

from personaspace.catalogue.load import BUILTIN_DIR, load_catalogue, read_folder
from personaspace.catalogue.presets import PRESETS, Selection, select
from personaspace.catalogue.types import (
    ROLE_CATEGORIES,
    SCENARIO_DOMAINS,
    TRAIT_GROUPS,
    CapabilityItem,
    Catalogue,
    ModulationPrompt,
    Question,
    Role,
    Rubric,
    Scenario,
    Trait,
    TraitPair,
)

__all__ = [
    "BUILTIN_DIR",
    "PRESETS",
    "ROLE_CATEGORIES",
    "SCENARIO_DOMAINS",
    "TRAIT_GROUPS",
    "CapabilityItem",
    "Catalogue",
    "ModulationPrompt",
    "Question",
    "Role",
    "Rubric",
    "Scenario",
    "Selection",
    "Trait",
    "TraitPair",
    "load_catalogue",
    "read_folder",
    "select",
]
