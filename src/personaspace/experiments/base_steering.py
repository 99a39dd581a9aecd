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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from personaspace.capture import SamplingConfig, capture_conversations, generate, with_reply
from personaspace.conversation.format import FormattedConversation
from personaspace.errors import PersonaspaceError
from personaspace.interventions import (
    NORM_UNIT,
    calibrate,
    intervene,
    load_calibration,
    run_calibration_set,
    steer,
)
from personaspace.models.loading import LoadedModel
from personaspace.monitor.axis import CALIBRATION_FILE, Axis

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


@dataclass(frozen=True)
class SteeringSettings:
    """What to generate: prompts x samples per prompt, at each coefficient.

    Example:
        >>> SteeringSettings().coefs
        (0.0, 0.1, 0.2, 0.4, 0.8)
    """

    coefs: tuple[float, ...] = DEFAULT_COEFS
    prompts: tuple[str, ...] = OPEN_PROMPTS
    samples_per_prompt: int = 2
    max_new_tokens: int = 40
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 0
    nearest: int = 5

    def __post_init__(self) -> None:
        if not self.coefs or not self.prompts:
            raise PersonaspaceError(
                "steering needs coefficients and prompts", fix="e.g. --coefs 0,0.2,0.4"
            )
        if self.samples_per_prompt < 1:
            raise PersonaspaceError(
                f"--samples is {self.samples_per_prompt}",
                fix="ask for at least one completion per prompt, e.g. --samples 2",
            )
        if self.max_new_tokens < 1:
            raise PersonaspaceError(
                f"--steer-tokens is {self.max_new_tokens}", fix="ask for at least 1 token"
            )


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
    folder = Path(run)
    if (folder / CALIBRATION_FILE).is_file():
        calibration = load_calibration(folder)
        if layer in calibration.layers and calibration.model_id == lm.model_id:
            return calibration.norm(layer)
    conversations = run_calibration_set(lm, folder, limit=limit)
    return calibrate(lm, axis, conversations, source=str(folder)).norm(layer)


def _prompt_ids(lm: LoadedModel, text: str) -> list[int]:
    bos = lm.tokenizer.bos_token or ""
    return list(lm.tokenizer(bos + text, add_special_tokens=False)["input_ids"])


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm().clamp(min=1e-30)


def _ranked(scores: dict[str, float]) -> list[str]:
    return [n for n, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]


def _helpful_gap(scores: dict[str, float], categories: dict[str, str]) -> float | None:
    helpful = [v for n, v in scores.items() if categories.get(n) == HELPFUL_CATEGORY]
    other = [v for n, v in scores.items() if n in categories and categories[n] != HELPFUL_CATEGORY]
    if not helpful or not other:
        return None
    return round(sum(helpful) / len(helpful) - sum(other) / len(other), 5)


def _share(ranked: list[str], categories: dict[str, str], k: int) -> float | None:
    if not categories:
        return None
    return round(sum(categories.get(n) == HELPFUL_CATEGORY for n in ranked[:k]) / k, 4)


def steer_base_model(
    lm: LoadedModel,
    axis: Axis,
    layer: int,
    norm: float,
    roles: RoleReference,
    settings: SteeringSettings | None = None,
    *,
    judge_evidence: bool = True,
) -> dict[str, Any]:
    """Run the steering study (see the module docstring); JSON-ready result.

    ``axis`` must fit ``lm`` (same hidden size); ``norm`` is the steering unit at ``layer``
    (``residual_norm``); ``roles`` are the base run's role vectors at ``layer``.

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
    prompts = [(p, s) for p in settings.prompts for s in range(settings.samples_per_prompt)]
    ids = [_prompt_ids(lm, p) for p, _ in prompts]
    seeds = [settings.seed + i for i in range(len(prompts))]  # the same at every coefficient
    sampling = SamplingConfig(
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        seed=settings.seed,
    )
    rows: list[dict[str, Any]] = []
    for coef in settings.coefs:
        interventions = [] if coef == 0 else [steer(layer, unit, coef, norm)]
        with intervene(lm, interventions):
            gens = generate(lm, ids, sampling, reductions=(), batch_size=len(ids), seeds=seeds)
        for (prompt, sample), prompt_ids, g in zip(prompts, ids, gens):
            rows.append(
                {
                    "coef_frac": coef,
                    "prompt": prompt,
                    "sample": sample,
                    "completion": g.text,
                    "token_ids": g.token_ids,
                    "prompt_ids": prompt_ids,
                }
            )
    kept = [r for r in rows if r["token_ids"]]
    conversations = [
        with_reply(
            FormattedConversation("", r["prompt_ids"], [], "plain", len(r["prompt_ids"])),
            r["token_ids"],
        )
        for r in kept
    ]
    captures = capture_conversations(lm, conversations, layers=[layer])  # unsteered re-read
    reread = torch.stack([c.turn_means[0, 0].float() for c in captures])
    names = sorted(roles.vectors)
    role_stack = torch.stack([roles.vectors[n].float() for n in names])
    role_centred = role_stack - role_stack.mean(0)
    centred = reread - reread.mean(0)
    similarity = None
    if judge_evidence and roles.texts:
        from personaspace.judge.embeddings import embed

        texts = [roles.texts.get(n, n.replace("_", " ")) for n in names]
        similarity = embed([r["completion"] for r in kept]) @ embed(texts).T  # [n, roles]
    by_coefficient = []
    for coef in settings.coefs:
        pick = [i for i, r in enumerate(kept) if r["coef_frac"] == coef]
        if not pick:
            continue
        on_axis = reread[pick] @ unit
        mean_vec = centred[pick].mean(0)
        act = {n: float(_unit(mean_vec) @ _unit(role_centred[j])) for j, n in enumerate(names)}
        entry: dict[str, Any] = {
            "coef_frac": coef,
            "n": len(pick),
            "mean_tokens": round(sum(len(kept[i]["token_ids"]) for i in pick) / len(pick), 2),
            "reread_on_axis_mean": round(float(on_axis.mean()), 5),
            "reread_on_axis_sd": round(float(on_axis.std()), 5) if len(pick) > 1 else 0.0,
            "nearest_by_activation": _ranked(act)[: settings.nearest],
            "activation_cos": {n: round(act[n], 4) for n in _ranked(act)[: settings.nearest]},
            "helpful_share_activation": _share(_ranked(act), roles.categories, settings.nearest),
            "helpful_minus_other_activation": _helpful_gap(act, roles.categories),
        }
        if similarity is not None:
            judge = {n: float(similarity[pick, j].mean()) for j, n in enumerate(names)}
            entry["nearest_by_judge"] = _ranked(judge)[: settings.nearest]
            entry["judge_similarity"] = {
                n: round(judge[n], 4) for n in _ranked(judge)[: settings.nearest]
            }
            entry["helpful_share_judge"] = _share(
                _ranked(judge), roles.categories, settings.nearest
            )
            entry["helpful_minus_other_judge"] = _helpful_gap(judge, roles.categories)
        else:
            entry["nearest_by_judge"] = []
        by_coefficient.append(entry)
    completions = []
    for i, r in enumerate(kept):
        item = {k: r[k] for k in ("coef_frac", "prompt", "sample", "completion")}
        item["n_tokens"] = len(r["token_ids"])
        item["reread_on_axis"] = round(float(reread[i] @ unit), 5)
        item["nearest_by_activation"] = names[int((role_centred @ _unit(centred[i])).argmax())]
        if similarity is not None:
            item["nearest_by_judge"] = names[int(similarity[i].argmax())]
        completions.append(item)
    return {
        "model_id": lm.model_id,
        "axis_model_id": axis.model_id,
        "axis_source": axis.source,
        "layer": layer,
        "norm": round(norm, 5),
        "norm_unit": NORM_UNIT,
        "settings": asdict(settings),
        "roles_compared": len(names),
        "empty_completions": len(rows) - len(kept),
        "judge_evidence": "local judge embedding similarity (all-MiniLM-L6-v2) to each role's "
        "description and in-role note"
        if similarity is not None
        else "not computed",
        "by_coefficient": by_coefficient,
        "completions": completions,
    }


def parse_coefs(text: str) -> tuple[float, ...]:
    """``"0,0.1,0.2"`` -> ``(0.0, 0.1, 0.2)``, with a one-line error on bad input.

    Example:
        >>> parse_coefs("0, 0.2,-0.4")
        (0.0, 0.2, -0.4)
    """
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as err:
        raise PersonaspaceError(
            f"--coefs {text!r} is not a comma-separated list of numbers", fix="e.g. 0,0.2,0.4"
        ) from err
    if not values:
        raise PersonaspaceError("--coefs is empty", fix="e.g. 0,0.2,0.4")
    if not all(math.isfinite(v) for v in values):
        raise PersonaspaceError(f"--coefs {text!r} holds a non-finite value", fix="e.g. 0,0.2,0.4")
    return values


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
