"""Steer a base model along an Assistant Axis and ask which archetypes its completions become.

The published finding to test: steering a pre-trained model toward the Assistant end turns
its completions toward helpful human professionals (therapist, consultant, coach).

Method: open prompts that invite the text to say who is speaking ("My name is") are
completed by the base model under increasing steering coefficients (``coef_frac`` x the
mean residual norm at the layer, added at every position). Each completion is then judged
two ways, neither of which sees the steering itself:

- **by activation**: the completion is re-read by the *unsteered* model (teacher forcing
  over prompt + completion) and its mean residual stream at the layer is compared with the
  base run's role vectors (both centred: completions on the mean of all completions, roles
  on the mean role), and projected on the unit axis;
- **by the judge's evidence**: the sentence-embedding similarity between the completion and
  each role's description (what the local judge scores role adherence with).

Reading the steered activations directly would be circular (they contain the added axis).

**The random-direction null** (``SteeringSettings.random_directions`` > 0): the same
prompts, seeds and coefficients, steering along seeded random unit directions of the same
hidden size (``analysis.intervals.random_units``) by the same norm, judged the same way
(coefficient 0 is not regenerated: it steers nothing). Each figure of the axis (the
re-read projection on the unit *axis*, the helpful-professional share and gap, and the
mystical share where the catalogue has that category) is set beside the random
directions' mean, 95 % range and empirical p-value (``analysis.intervals.figure_null``).

The open prompts are plain text after the tokenizer's BOS token, for a base model and a
chat model alike (no chat template), so both read the same document to continue.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import torch

from personaspace.analysis.intervals import NULL_ALPHA, Tail, figure_null, random_units
from personaspace.capture import SamplingConfig, capture_conversations, generate, with_reply
from personaspace.conversation.format import FormattedConversation
from personaspace.errors import PersonaspaceError
from personaspace.interventions import calibrate, intervene
from personaspace.models.loading import LoadedModel
from personaspace.pipeline.calibrate import run_calibration_set
from personaspace.runfolder import RunFolder
from personaspace.vectors.axis import Axis
from personaspace.vectors.calibration import NORM_UNIT
from personaspace.vectors.intervention import steer
from personaspace.vectors.shape import unit as _unit

OPEN_PROMPTS: tuple[str, ...] = (
    "Let me introduce myself. I am",
    "My name is",
    "People often ask me what I do for a living. I tell them",
    "The thing I care about most in my work is",
    "When someone comes to me with a problem, I",
    "Here is a little about who I am:",
)
DEFAULT_COEFS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.4, 0.8)
HELPFUL_CATEGORY = "helpful_professional"
# Not a category of the bundled catalogue; its share is reported when a catalogue has it.
MYSTICAL_CATEGORY = "mystical_spiritual"
DEFAULT_RANDOM_DIRECTIONS = 19  # the fewest for which p = 1 / (1 + K) reaches 0.05

# The figures set beside the random-direction null, and which way is toward the Assistant
# end and helpful professionals (+1: larger; -1: smaller).
NULL_FIGURES: dict[str, int] = {
    "reread_on_axis_mean": 1,
    "helpful_share_activation": 1,
    "helpful_minus_other_activation": 1,
    "mystical_share_activation": -1,
    "helpful_share_judge": 1,
    "helpful_minus_other_judge": 1,
    "mystical_share_judge": -1,
}


STEERING_SAMPLING = SamplingConfig(max_new_tokens=40, temperature=0.7, top_p=0.9, seed=0)


@dataclass(frozen=True)
class SteeringSettings:
    """What to generate: prompts x samples per prompt, at each coefficient, decoded by
    ``sampling`` (each completion with its own seed, the same at every coefficient), and
    ``random_directions`` seeded by ``null_seed`` for the null (0: no null).

    Example:
        >>> SteeringSettings().coefs, SteeringSettings().random_directions
        ((0.0, 0.1, 0.2, 0.4, 0.8), 0)
    """

    coefs: tuple[float, ...] = DEFAULT_COEFS
    prompts: tuple[str, ...] = OPEN_PROMPTS
    samples_per_prompt: int = 2
    sampling: SamplingConfig = STEERING_SAMPLING
    nearest: int = 5
    random_directions: int = 0
    null_seed: int = 0

    def __post_init__(self) -> None:
        if not self.coefs or not self.prompts:
            raise PersonaspaceError(
                "steering needs coefficients and prompts", fix="e.g. coefficients 0, 0.2, 0.4"
            )
        if self.samples_per_prompt < 1:
            raise PersonaspaceError(
                f"samples_per_prompt is {self.samples_per_prompt}",
                fix="ask for at least one completion per prompt, e.g. 2",
                param="samples_per_prompt",
            )
        if self.random_directions < 0:
            raise PersonaspaceError(
                f"random_directions is {self.random_directions}",
                fix=f"give 0 (no null) or more, e.g. {DEFAULT_RANDOM_DIRECTIONS}",
                param="random_directions",
            )

    def to_json(self) -> dict[str, Any]:
        """The settings as ``steer_base.json`` records them (the null's, under
        ``random_null``)."""
        s = self.sampling
        return {
            "coefs": list(self.coefs),
            "prompts": list(self.prompts),
            "samples_per_prompt": self.samples_per_prompt,
            "max_new_tokens": s.max_new_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "seed": s.seed,
            "nearest": self.nearest,
        }


@dataclass(frozen=True)
class RoleReference:
    """The base run's roles at the steered layer: vectors ``[hidden]``, and for the judge's
    evidence their description texts and categories (empty when unknown)."""

    vectors: dict[str, torch.Tensor]
    texts: dict[str, str]
    categories: dict[str, str]


def residual_norm(
    lm: LoadedModel, run: str | Path, axis: Axis, layer: int, limit: int = 48
) -> float:
    """The mean residual norm at ``layer`` (the steering unit): from the run's calibration
    file when it has one, else measured over ``limit`` of the run's replies."""
    calibration = RunFolder(run).calibration_if_any()
    if (
        calibration is not None
        and layer in calibration.layers
        and calibration.model_id == lm.model_id
    ):
        return calibration.norm(layer)
    conversations = run_calibration_set(lm, run, limit=limit)
    return calibrate(lm, axis, conversations, source=str(run)).norm(layer)


def open_prompt_ids(tokenizer: Any, text: str) -> list[int]:
    """An open prompt as a plain continuation: the BOS token (if any) then ``text``, with no
    chat template, for base and chat models alike.

    Example:
        >>> class Chars:  # a tokenizer of one id per character
        ...     bos_token = "^"
        ...     def __call__(self, text, add_special_tokens):
        ...         return {"input_ids": [ord(c) for c in text]}
        >>> [chr(i) for i in open_prompt_ids(Chars(), "My name is")][:4]
        ['^', 'M', 'y', ' ']
    """
    bos = tokenizer.bos_token or ""
    return list(tokenizer(bos + text, add_special_tokens=False)["input_ids"])


def _ranked(scores: dict[str, float]) -> list[str]:
    return [n for n, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]


def _helpful_gap(scores: dict[str, float], categories: dict[str, str]) -> float | None:
    helpful = [v for n, v in scores.items() if categories.get(n) == HELPFUL_CATEGORY]
    other = [v for n, v in scores.items() if n in categories and categories[n] != HELPFUL_CATEGORY]
    if not helpful or not other:
        return None
    return round(sum(helpful) / len(helpful) - sum(other) / len(other), 5)


def _share(
    ranked: list[str], categories: dict[str, str], k: int, category: str = HELPFUL_CATEGORY
) -> float | None:
    if not categories:
        return None
    return round(sum(categories.get(n) == category for n in ranked[:k]) / k, 4)


@dataclass(frozen=True)
class Completion:
    """One steered completion: its coefficient, prompt, sample index and tokens."""

    coef_frac: float
    prompt: str
    sample: int
    text: str
    token_ids: list[int]
    prompt_ids: list[int]


def _complete(
    lm: LoadedModel,
    unit: torch.Tensor,
    layer: int,
    norm: float,
    settings: SteeringSettings,
    zero: Sequence[Completion] | None = None,
) -> list[Completion]:
    """Every prompt x sample completed under each coefficient (seeds shared across them);
    ``zero``, when given, stands for coefficient 0 (plain generation, whatever the direction)."""
    prompts = [(p, s) for p in settings.prompts for s in range(settings.samples_per_prompt)]
    ids = [open_prompt_ids(lm.tokenizer, p) for p, _ in prompts]
    seeds = [settings.sampling.seed + i for i in range(len(prompts))]
    rows: list[Completion] = []
    for coef in settings.coefs:
        if coef == 0 and zero is not None:
            rows += zero
            continue
        interventions = [] if coef == 0 else [steer(layer, unit, coef, norm)]
        with intervene(lm, interventions):
            gens = generate(
                lm, ids, settings.sampling, reductions=(), batch_size=len(ids), seeds=seeds
            )
        rows += [
            Completion(coef, prompt, sample, g.text, g.token_ids, prompt_ids)
            for (prompt, sample), prompt_ids, g in zip(prompts, ids, gens)
        ]
    return rows


def _reread(lm: LoadedModel, kept: list[Completion], layer: int) -> torch.Tensor:
    """Each completion's mean residual stream at ``layer``, re-read by the unsteered model."""
    conversations = [
        with_reply(
            FormattedConversation("", c.prompt_ids, [], "plain", len(c.prompt_ids)), c.token_ids
        )
        for c in kept
    ]
    captures = capture_conversations(lm, conversations, layers=[layer])
    return torch.stack([c.turn_means[0, 0].float() for c in captures])


@dataclass(frozen=True)
class _Evidence:
    """What the completions are judged by: their unsteered re-read at the layer, the roles'
    centred vectors, and (optionally) the judge's embedding similarity to each role."""

    kept: list[Completion]
    reread: torch.Tensor  # [n, hidden]
    unit: torch.Tensor  # the unit axis at the layer
    names: list[str]
    roles: RoleReference
    similarity: torch.Tensor | None  # [n, roles]

    @property
    def centred(self) -> torch.Tensor:
        return self.reread - self.reread.mean(0)

    @property
    def role_centred(self) -> torch.Tensor:
        stack = torch.stack([self.roles.vectors[n].float() for n in self.names])
        return stack - stack.mean(0)

    def coefficient(self, coef: float, pick: list[int], nearest: int) -> dict[str, Any]:
        """Where one coefficient's completions sit and which roles they resemble."""
        on_axis = self.reread[pick] @ self.unit
        mean_vec, role_centred = self.centred[pick].mean(0), self.role_centred
        act = {n: float(_unit(mean_vec) @ _unit(role_centred[j])) for j, n in enumerate(self.names)}
        categories = self.roles.categories
        mystical = MYSTICAL_CATEGORY in categories.values()
        entry: dict[str, Any] = {
            "coef_frac": coef,
            "n": len(pick),
            "mean_tokens": round(sum(len(self.kept[i].token_ids) for i in pick) / len(pick), 2),
            "reread_on_axis_mean": round(float(on_axis.mean()), 5),
            "reread_on_axis_sd": round(float(on_axis.std()), 5) if len(pick) > 1 else 0.0,
            "nearest_by_activation": _ranked(act)[:nearest],
            "activation_cos": {n: round(act[n], 4) for n in _ranked(act)[:nearest]},
            "helpful_share_activation": _share(_ranked(act), categories, nearest),
            "helpful_minus_other_activation": _helpful_gap(act, categories),
        }
        if mystical:
            entry["mystical_share_activation"] = _share(
                _ranked(act), categories, nearest, MYSTICAL_CATEGORY
            )
        if self.similarity is None:
            entry["nearest_by_judge"] = []
            return entry
        judge = {n: float(self.similarity[pick, j].mean()) for j, n in enumerate(self.names)}
        entry["nearest_by_judge"] = _ranked(judge)[:nearest]
        entry["judge_similarity"] = {n: round(judge[n], 4) for n in _ranked(judge)[:nearest]}
        entry["helpful_share_judge"] = _share(_ranked(judge), categories, nearest)
        entry["helpful_minus_other_judge"] = _helpful_gap(judge, categories)
        if mystical:
            entry["mystical_share_judge"] = _share(
                _ranked(judge), categories, nearest, MYSTICAL_CATEGORY
            )
        return entry

    def by_coefficient(self, settings: SteeringSettings) -> list[dict[str, Any]]:
        """``coefficient`` for each coefficient that kept a completion, in order."""
        entries = []
        for coef in settings.coefs:
            pick = [i for i, c in enumerate(self.kept) if c.coef_frac == coef]
            if pick:
                entries.append(self.coefficient(coef, pick, settings.nearest))
        return entries

    def completions(self) -> list[dict[str, Any]]:
        """Each completion with its re-read projection and nearest role."""
        centred, role_centred = self.centred, self.role_centred
        rows = []
        for i, c in enumerate(self.kept):
            item: dict[str, Any] = {
                "coef_frac": c.coef_frac,
                "prompt": c.prompt,
                "sample": c.sample,
                "completion": c.text,
                "n_tokens": len(c.token_ids),
                "reread_on_axis": round(float(self.reread[i] @ self.unit), 5),
                "nearest_by_activation": self.names[
                    int((role_centred @ _unit(centred[i])).argmax())
                ],
            }
            if self.similarity is not None:
                item["nearest_by_judge"] = self.names[int(self.similarity[i].argmax())]
            rows.append(item)
        return rows


def _role_embeddings(names: list[str], roles: RoleReference) -> torch.Tensor:
    from personaspace.judge.embeddings import embed

    return embed([roles.texts.get(n, n.replace("_", " ")) for n in names])


def _judge_similarity(kept: list[Completion], role_embeddings: torch.Tensor) -> torch.Tensor:
    from personaspace.judge.embeddings import embed

    return embed([c.text for c in kept]) @ role_embeddings.T


def _key(c: Completion) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    """What a completion's evidence depends on: the tokens re-read and the text embedded."""
    return (tuple(c.prompt_ids), tuple(c.token_ids), c.text)


def _rows_reusing(
    kept: list[Completion],
    earlier: _Evidence | None,
    of: Callable[[_Evidence], torch.Tensor | None],
    compute: Callable[[list[Completion]], torch.Tensor],
) -> torch.Tensor:
    """One row per completion of ``kept``: ``earlier``'s row (``of(earlier)``) for the
    completions it already judged, ``compute`` (in one call) for the others."""
    known = {} if earlier is None else {_key(c): i for i, c in enumerate(earlier.kept)}
    old = None if earlier is None else of(earlier)
    fresh = [c for c in kept if _key(c) not in known]
    new = iter(compute(fresh)) if fresh else iter(())
    return torch.stack(
        [old[known[_key(c)]] if old is not None and _key(c) in known else next(new) for c in kept]
    )


def _judged(
    lm: LoadedModel,
    rows: list[Completion],
    unit: torch.Tensor,
    layer: int,
    roles: RoleReference,
    role_embeddings: torch.Tensor | None,
    earlier: _Evidence | None = None,
) -> _Evidence:
    """The evidence on ``rows``' non-empty completions (re-read, and the judge's similarity
    when ``role_embeddings`` are given), reusing ``earlier``'s for completions it shares."""
    kept = [c for c in rows if c.token_ids]
    names = sorted(roles.vectors)
    reread = _rows_reusing(kept, earlier, lambda e: e.reread, lambda f: _reread(lm, f, layer))
    similarity = (
        None
        if role_embeddings is None
        else _rows_reusing(
            kept, earlier, lambda e: e.similarity, lambda f: _judge_similarity(f, role_embeddings)
        )
    )
    return _Evidence(kept, reread, unit, names, roles, similarity)


class DirectionJSON(TypedDict):
    """One random direction of the null: its cosine with the axis, and its figures
    (``NULL_FIGURES`` that the axis has) at each coefficient."""

    direction: int
    cos_with_axis: float
    by_coefficient: list[dict[str, float]]


class RandomNullJSON(TypedDict):
    """``random_null`` in ``steer_base.json``."""

    n_directions: int
    seed: int
    alpha: float
    method: str
    figures: list[str]
    mystical_category: str | None
    notes: list[str]
    by_direction: list[DirectionJSON]
    verdicts: list[str]


NULL_METHOD = (
    "the same prompts, seeds and coefficients, steering along seeded random unit directions "
    "of the same hidden size (the same norm: coef_frac x norm), judged the same way; the "
    "re-read projection is on the unit axis. p = (1 + random directions at least as far "
    "toward the Assistant end / helpful professionals, or away from them for a negative "
    "coefficient) / (1 + n_directions); two-sided at coefficient 0"
)


def null_tail(coef: float, sense: int) -> Tail:
    """The tail a figure is tested in: toward the Assistant end (``sense`` +1: larger;
    -1: smaller) for a positive coefficient, away from it for a negative one, either way
    at 0 (which steers nothing).

    Example:
        >>> null_tail(0.4, 1), null_tail(-0.4, 1), null_tail(0.4, -1), null_tail(0.0, 1)
        ('greater', 'less', 'less', 'two-sided')
    """
    if coef == 0:
        return "two-sided"
    return "greater" if coef * sense > 0 else "less"


def _figures(entry: dict[str, Any]) -> dict[str, float]:
    return {k: float(entry[k]) for k in NULL_FIGURES if entry.get(k) is not None}


def _random_null(
    lm: LoadedModel,
    axis_evidence: _Evidence,
    rows: list[Completion],
    layer: int,
    norm: float,
    settings: SteeringSettings,
    by_coefficient: list[dict[str, Any]],
    role_embeddings: torch.Tensor | None,
    progress: Callable[[int, int], object] | None,
) -> RandomNullJSON:
    """Steer along ``settings.random_directions`` random unit directions; add each axis
    figure's ``null`` to its entry of ``by_coefficient`` and return ``random_null``."""
    unit = axis_evidence.unit
    k = settings.random_directions
    directions = random_units(k, int(unit.numel()), settings.null_seed).to(unit.dtype)
    zero = [c for c in rows if c.coef_frac == 0]
    directions_json: list[DirectionJSON] = []
    for r, direction in enumerate(directions):
        steered = _complete(lm, direction, layer, norm, settings, zero=zero)
        evidence = _judged(
            lm, steered, unit, layer, axis_evidence.roles, role_embeddings, axis_evidence
        )
        directions_json.append(
            {
                "direction": r,
                "cos_with_axis": round(float(direction @ unit), 5),
                "by_coefficient": [
                    {"coef_frac": e["coef_frac"], **_figures(e)}
                    for e in evidence.by_coefficient(settings)
                ],
            }
        )
        if progress is not None:
            progress(r + 1, k)
    verdicts = []
    for entry in by_coefficient:
        coef, figures = entry["coef_frac"], _figures(entry)
        entry["null"] = {}
        for name, observed in figures.items():
            values = [
                row[name]
                for d in directions_json
                for row in d["by_coefficient"]
                if row["coef_frac"] == coef and name in row
            ]
            if values:
                null = figure_null(observed, values, tail=null_tail(coef, NULL_FIGURES[name]))
                entry["null"][name] = null.to_json()
                verdicts.append(f"coef {coef:+g}, {name}: {null.verdict}")
    categories = set(axis_evidence.roles.categories.values())
    return {
        "n_directions": k,
        "seed": settings.null_seed,
        "alpha": NULL_ALPHA,
        "method": NULL_METHOD,
        "figures": [n for n in NULL_FIGURES if any(n in e["null"] for e in by_coefficient)],
        "mystical_category": MYSTICAL_CATEGORY if MYSTICAL_CATEGORY in categories else None,
        "notes": []
        if MYSTICAL_CATEGORY in categories
        else [
            f"the roles compared have no {MYSTICAL_CATEGORY} category (the bundled catalogue "
            "has none), so no mystical share is reported"
        ],
        "by_direction": directions_json,
        "verdicts": verdicts,
    }


def steer_base_model(
    lm: LoadedModel,
    axis: Axis,
    layer: int,
    norm: float,
    roles: RoleReference,
    settings: SteeringSettings | None = None,
    *,
    judge_evidence: bool = True,
    progress: Callable[[int, int], object] | None = None,
) -> dict[str, Any]:
    """Run the steering study (see the module docstring); JSON-ready result.

    ``axis`` must fit ``lm`` (same hidden size); ``norm`` is the steering unit at ``layer``
    (``residual_norm``); ``roles`` are the reference run's role vectors at ``layer`` (the
    steered model's own run: a base or a chat model). With ``settings.random_directions``
    > 0 each coefficient's entry gains ``null`` and the result ``random_null``;
    ``progress(done, total)`` is called after each random direction.

    Example:
        >>> result = steer_base_model(lm, axis, 9, norm, roles)  # doctest: +SKIP
        >>> [r["nearest_by_activation"][0] for r in result["by_coefficient"]]  # doctest: +SKIP
    """
    settings = settings or SteeringSettings()
    axis.check_model(lm)
    if len(roles.vectors) < 2:
        raise PersonaspaceError(
            "the steering study needs the base run's role vectors",
            fix="pass a finished axis run of the base model",
        )
    unit = axis.unit(layer).float()
    names = sorted(roles.vectors)
    embeddings = _role_embeddings(names, roles) if judge_evidence and roles.texts else None
    rows = _complete(lm, unit, layer, norm, settings)
    evidence = _judged(lm, rows, unit, layer, roles, embeddings)
    by_coefficient = evidence.by_coefficient(settings)
    result: dict[str, Any] = {
        "model_id": lm.model_id,
        "axis_model_id": axis.model_id,
        "axis_source": axis.source,
        "layer": layer,
        "norm": round(norm, 5),
        "norm_unit": NORM_UNIT,
        "settings": settings.to_json(),
        "roles_compared": len(names),
        "empty_completions": len(rows) - len(evidence.kept),
        "judge_evidence": "local judge embedding similarity (all-MiniLM-L6-v2) to each role's "
        "description and in-role note"
        if embeddings is not None
        else "not computed",
        "by_coefficient": by_coefficient,
    }
    if settings.random_directions:
        result["random_null"] = _random_null(
            lm, evidence, rows, layer, norm, settings, by_coefficient, embeddings, progress
        )
    result["completions"] = evidence.completions()
    return result


def role_reference(
    role_vectors: dict[str, torch.Tensor], row: int, catalogue_roles: Sequence[Any] = ()
) -> RoleReference:
    """The base run's role vectors at vector row ``row``, with catalogue texts if given.

    Example:
        >>> ref = role_reference({"ghost": torch.ones(2, 3)}, 1)
        >>> ref.vectors["ghost"].shape, ref.texts
        (torch.Size([3]), {})
    """
    known = {r.name: r for r in catalogue_roles}
    return RoleReference(
        vectors={n: v[row] for n, v in role_vectors.items()},
        texts={n: f"{known[n].description} {known[n].in_role}" for n in role_vectors if n in known},
        categories={n: known[n].category for n in role_vectors if n in known},
    )
