"""The catalogue's entries as typed, immutable values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ROLE_CATEGORIES: tuple[str, ...] = (
    "profession",
    "everyday",
    "historical_mythic",
    "nonhuman_abstract",
    "fictional_ai",
    "emotional_state",
    "helpful_professional",
)
TRAIT_GROUPS: tuple[str, ...] = ("moral", "affect", "social", "cognitive")
SCENARIO_DOMAINS: tuple[str, ...] = ("coding", "writing", "therapy", "ai_self")


@dataclass(frozen=True)
class Role:
    """A character archetype and the system prompts that ask a model to be it."""

    name: str
    category: str
    description: str
    prompts: tuple[str, ...]
    in_role: str


@dataclass(frozen=True)
class TraitPair:
    """Instructions to express a trait (``pos``) and its opposite (``neg``)."""

    pos: str
    neg: str


@dataclass(frozen=True)
class Trait:
    """A character trait with contrastive instructions, questions and a 0-100 rubric."""

    name: str
    group: str
    description: str
    pairs: tuple[TraitPair, ...]
    extraction_questions: tuple[str, ...]
    evaluation_questions: tuple[str, ...]
    rubric: str


@dataclass(frozen=True)
class Question:
    """An extraction question that lets any character show itself."""

    id: str
    category: str
    text: str


@dataclass(frozen=True)
class Scenario:
    """The user side of a scripted multi-turn conversation in one domain."""

    id: str
    domain: str
    title: str
    user_turns: tuple[str, ...]


@dataclass(frozen=True)
class ModulationPrompt:
    """A user message that tries to talk the model into a harmful or deceptive persona."""

    id: str
    persona: str
    tactic: str
    text: str


@dataclass(frozen=True)
class CapabilityItem:
    """A benign item with a checkable answer (multiple choice letter or exact string)."""

    id: str
    topic: str
    kind: Literal["mc", "exact"]
    question: str
    answer: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rubric:
    """A judge prompt template and its score range."""

    name: str
    template: str
    scale: tuple[int, int]
    levels: dict[str, str] = field(default_factory=dict)

    def render(self, **fields: str) -> str:
        """The judge prompt with every placeholder filled.

        Example:
            >>> Rubric("r", "Q: {question} A: {answer}", (0, 3)).render(question="a?", answer="b")
            'Q: a? A: b'
        """
        from personaspace.catalogue.validate import placeholders

        missing = placeholders(self.template) - set(fields)
        if missing:
            from personaspace.errors import PersonaspaceError

            raise PersonaspaceError(
                f"rubric {self.name!r} needs {sorted(missing)}", fix="pass every placeholder"
            )
        return self.template.format(**{k: fields[k] for k in placeholders(self.template)})


@dataclass(frozen=True)
class Catalogue:
    """Everything the methods draw on, by section; names and ids are unique per section."""

    roles: dict[str, Role]
    traits: dict[str, Trait]
    questions: dict[str, Question]
    scenarios: dict[str, Scenario]
    modulation: dict[str, ModulationPrompt]
    capability: dict[str, CapabilityItem]
    default_prompts: tuple[str, ...]
    rubrics: dict[str, Rubric]
    sources: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        """Entries per section.

        Example:
            >>> from personaspace.catalogue import load_catalogue
            >>> load_catalogue().counts()["default_prompts"]
            6
        """
        return {
            "roles": len(self.roles),
            "traits": len(self.traits),
            "questions": len(self.questions),
            "scenarios": len(self.scenarios),
            "modulation": len(self.modulation),
            "capability": len(self.capability),
            "default_prompts": len(self.default_prompts),
            "rubrics": len(self.rubrics),
        }
