"""Administer a personality inventory to a model under many system prompts.

Each statement is asked as the user message (``Inventory.question``) after a system prompt
(the default persona, a trait's positive or negative prompt, an unrelated trait's prompt, a
role), rendered the way the model reads conversations (``format_prompt``: its chat template,
or the plain transcript format of a base model). The answer is read from the model's
next-token distribution at the start of the reply, over the first token of each option's
label (``"1"`` .. ``"5"``; after a plain transcript's ``Assistant:``, ``" 1"`` .. ``" 5"``):
never from generated text. The residual stream at that position (the last prompt token) is
kept at one layer, to project on a trait vector.

Two corrections for a respondent that answers by position (small models favour the first
option whatever the statement): each statement can be asked with the options in both orders
(``orders``: under the reversed order ``1`` means strongly agree), and each prompt can ask the
inventory's content-free statements (``calibrate``), whose answers are the prompt's bias
over the options (``inventory_stats.calibrated_probs`` divides it out).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from personaspace.capture.forward import check_fits, left_pad, positions_of
from personaspace.capture.hooks import contiguous_head_input, residual_hooks
from personaspace.catalogue.inventory import Inventory, InventoryScale
from personaspace.catalogue.types import Catalogue, Trait
from personaspace.conversation.format import FormattedConversation
from personaspace.conversation.prompts import default_system_prompt, format_prompt
from personaspace.errors import PersonaspaceError
from personaspace.models.loading import LoadedModel
from personaspace.vectors.axis import Axis

PromptKind = Literal["default", "pos", "neg", "baseline_pos", "baseline_neg", "role"]
Order = Literal["forward", "reversed"]
ORDERS: tuple[Order, ...] = ("forward", "reversed")
CONTENT_FREE = "content-free/"  # the item id prefix of a content-free statement's answer
Progress = Callable[[int], None]  # answers read in the last batch


@dataclass(frozen=True)
class InventoryPrompt:
    """One respondent: a system prompt and the scales whose items are asked under it.

    ``name`` is the scale (``pos``/``neg``), the unrelated catalogue trait (``baseline_*``),
    the role, or ``default``; ``variant`` numbers the prompts of one kind and name.
    """

    id: str
    kind: PromptKind
    name: str
    variant: int
    system: str | None
    scales: tuple[str, ...]


def _trait(catalogue: Catalogue, name: str, scale: str) -> Trait:
    trait = catalogue.traits.get(name)
    if trait is None:
        raise PersonaspaceError(
            f"the catalogue has no trait {name!r} (the inventory's {scale!r} names it)",
            fix="add it to the catalogue or fix the inventory's traits",
        )
    return trait


def pole_prompts(
    catalogue: Catalogue, inventory: Inventory, scale: str
) -> tuple[list[str], list[str]]:
    """The prompts that ask for more (first) and less (second) of ``scale``: the catalogue
    trait's positive and negative prompts, then its opposite's negative and positive ones.

    Example:
        >>> from personaspace.catalogue import load_catalogue
        >>> from personaspace.catalogue.inventory import load_inventory
        >>> more, less = pole_prompts(load_catalogue(), load_inventory(), "extraversion")
        >>> len(more), len(less)
        (10, 10)
    """
    entry = inventory.scale(scale)
    trait = _trait(catalogue, entry.catalogue_trait, scale)
    more, less = [p.pos for p in trait.pairs], [p.neg for p in trait.pairs]
    if entry.opposite is not None:
        opposite = _trait(catalogue, entry.opposite, scale)
        more += [p.neg for p in opposite.pairs]
        less += [p.pos for p in opposite.pairs]
    return more, less


def baseline_traits(
    catalogue: Catalogue, inventory: Inventory, n: int, seed: int = 0
) -> list[Trait]:
    """``n`` catalogue traits that none of the inventory's scales names (drawn with ``seed``):
    their prompts are the unrelated-persona baseline.

    Example:
        >>> from personaspace.catalogue import load_catalogue
        >>> from personaspace.catalogue.inventory import load_inventory
        >>> [t.name for t in baseline_traits(load_catalogue(), load_inventory(), 2)] == [
        ...     t.name for t in baseline_traits(load_catalogue(), load_inventory(), 2)]
        True
    """
    named = {s.catalogue_trait for s in inventory.scales} | {
        s.opposite for s in inventory.scales if s.opposite
    }
    pool = sorted(name for name in catalogue.traits if name not in named)
    if n > len(pool):
        raise PersonaspaceError(
            f"baseline is {n} but the catalogue has {len(pool)} other traits",
            fix=f"use at most {len(pool)}",
            param="baseline",
        )
    return [catalogue.traits[name] for name in sorted(random.Random(seed).sample(pool, n))]


def inventory_prompts(
    catalogue: Catalogue,
    inventory: Inventory,
    *,
    chat_tuned: bool,
    model_name: str,
    scales: Sequence[str] | None = None,
    variants: int = 5,
    baseline: int = 6,
    roles: Sequence[str] = (),
    seed: int = 0,
) -> list[InventoryPrompt]:
    """The respondents of one administration, in a fixed order.

    - ``default``: each of the catalogue's default prompts (``default_system_prompt``: a base
      model reads each after the transcript frame), all scales;
    - ``pos``/``neg``: ``variants`` prompts per pole of each scale (``pole_prompts``), that
      scale's items only;
    - ``baseline_pos``/``baseline_neg``: the first prompt pair of ``baseline`` unrelated
      traits (``baseline_traits``), all scales;
    - ``role``: the first prompt of each role named in ``roles``, all scales.

    Example:
        >>> from personaspace.catalogue import load_catalogue
        >>> from personaspace.catalogue.inventory import load_inventory
        >>> ps = inventory_prompts(load_catalogue(), load_inventory(), chat_tuned=True,
        ...                        model_name="M", scales=["extraversion"], variants=2, baseline=1)
        >>> [p.id for p in ps][-4:-2], [p.kind for p in ps][-2:]
        (['pos/extraversion/1', 'neg/extraversion/1'], ['baseline_pos', 'baseline_neg'])
    """
    chosen = [s.name for s in inventory.scales] if scales is None else list(scales)
    if not chosen:
        raise PersonaspaceError(
            "no inventory traits are chosen", fix="name one or more", param="scales"
        )
    for name in chosen:
        inventory.scale(name)
    if variants < 2:
        raise PersonaspaceError(
            f"variants is {variants}",
            fix="use 2 or more (the permutation test compares prompts)",
            param="variants",
        )
    if baseline < 0:
        raise PersonaspaceError(f"baseline is {baseline}", fix="use 0 or more", param="baseline")
    every = tuple(chosen)
    prompts: list[InventoryPrompt] = []
    for v, text in enumerate(catalogue.default_prompts or ("",)):
        system = default_system_prompt(text, model_name, chat_tuned=chat_tuned)
        prompts.append(InventoryPrompt(f"default/{v}", "default", "default", v, system, every))
    for name in chosen:
        more, less = pole_prompts(catalogue, inventory, name)
        if variants > min(len(more), len(less)):
            raise PersonaspaceError(
                f"variants is {variants} but {name!r} has {min(len(more), len(less))} prompts "
                "per pole",
                fix=f"use at most {min(len(more), len(less))}",
                param="variants",
            )
        for v in range(variants):
            prompts.append(InventoryPrompt(f"pos/{name}/{v}", "pos", name, v, more[v], (name,)))
            prompts.append(InventoryPrompt(f"neg/{name}/{v}", "neg", name, v, less[v], (name,)))
    for trait in baseline_traits(catalogue, inventory, baseline, seed):
        pair = trait.pairs[0]
        poles: tuple[tuple[PromptKind, str], ...] = (
            ("baseline_pos", pair.pos),
            ("baseline_neg", pair.neg),
        )
        for kind, system in poles:
            prompts.append(
                InventoryPrompt(f"{kind}/{trait.name}/0", kind, trait.name, 0, system, every)
            )
    for role_name in roles:
        role = catalogue.roles.get(role_name)
        if role is None:
            raise PersonaspaceError(
                f"the catalogue has no role {role_name!r}",
                fix="see `personaspace catalogue`",
                param="roles",
            )
        prompts.append(
            InventoryPrompt(f"role/{role.name}", "role", role.name, 0, role.prompts[0], every)
        )
    return prompts


def answer_tokens(
    lm: LoadedModel, prompt: FormattedConversation, labels: Sequence[str]
) -> tuple[list[int], list[int]]:
    """The tokens the model reads before its answer, and the token that starts each option.

    Each label is appended to the prompt's text (after a space when the prompt is a plain
    transcript ending ``Assistant:``) and tokenized; whitespace tokens every option starts
    with (a lone space) join the context, and the next token must differ for every option.

    Example:
        >>> prompt = format_prompt(lm, "Rate it from 1 to 5.")  # doctest: +SKIP
        >>> context, options = answer_tokens(lm, prompt, "12345")  # doctest: +SKIP
        >>> lm.tokenizer.decode(options[0])  # doctest: +SKIP
        '1'
    """
    sep = " " if prompt.format == "plain" else ""
    ids = list(prompt.input_ids)
    full = [
        list(lm.tokenizer(prompt.text + sep + label, add_special_tokens=False)["input_ids"])
        for label in labels
    ]
    for label, row in zip(labels, full):
        if row[: len(ids)] != ids or len(row) == len(ids):
            raise PersonaspaceError(
                f"the answer {label!r} merges with the prompt's last token in "
                f"{lm.model_id}'s tokenizer",
                fix="use option labels that tokenize apart from the prompt (e.g. digits)",
            )
    shared = len(ids)
    while (
        all(len(row) > shared + 1 for row in full)
        and len({row[shared] for row in full}) == 1
        and not lm.tokenizer.decode([full[0][shared]]).strip()
    ):
        shared += 1
    options = [row[shared] for row in full]
    if len(set(options)) < len(options):
        raise PersonaspaceError(
            f"two answer options start with the same token in {lm.model_id}'s tokenizer",
            fix="use option labels with distinct first tokens (e.g. digits)",
        )
    return full[0][:shared], options


@dataclass(frozen=True)
class ItemAnswer:
    """One statement answered under one prompt, with the options in one ``order``: the
    probability of each option's token (as the model gives them: they sum to ``mass`` <= 1).
    A content-free statement's answer has the item id ``content-free/K``."""

    prompt_id: str
    item_id: str
    option_probs: tuple[float, ...]
    order: Order = "forward"

    @property
    def mass(self) -> float:
        return float(sum(self.option_probs))


@dataclass(frozen=True)
class Administration:
    """Every answer of an administration, in order, then prompt, then item order, with the
    residual stream at the answer position at ``layer`` (``states[i]`` for ``answers[i]``),
    when a layer was asked for; ``calibration`` holds the content-free statements' answers
    (no states)."""

    prompts: list[InventoryPrompt]
    answers: list[ItemAnswer]
    layer: int | None
    states: torch.Tensor | None
    calibration: list[ItemAnswer] = field(default_factory=list)


Row = tuple[InventoryPrompt, str, Order]  # a prompt, an item id, the options' order


def _rows(
    lm: LoadedModel,
    inventory: Inventory,
    prompts: Sequence[InventoryPrompt],
    orders: Sequence[Order],
    calibrate: bool,
) -> tuple[list[Row], list[list[int]], list[list[int]]]:
    labels = [o.label for o in inventory.options]
    rows: list[Row] = []
    contexts, options = [], []

    def add(prompt: InventoryPrompt, item_id: str, order: Order, question: str) -> None:
        formatted = format_prompt(lm, question, prompt.system)
        context, tokens = answer_tokens(lm, formatted, labels)
        check_fits(lm, len(context), f"item {item_id} under prompt {prompt.id}")
        rows.append((prompt, item_id, order))
        contexts.append(context)
        options.append(tokens)

    for order in orders:
        asked = inventory if order == inventory.order else inventory.reversed()
        for prompt in prompts:
            for item in asked.items:
                if item.trait in prompt.scales:
                    add(prompt, item.id, order, asked.question(item))
            for k, statement in enumerate(asked.content_free if calibrate else ()):
                add(prompt, f"{CONTENT_FREE}{k}", order, asked.ask(statement))
    return rows, contexts, options


def administer(
    lm: LoadedModel,
    inventory: Inventory,
    prompts: Sequence[InventoryPrompt],
    *,
    layer: int | None = None,
    orders: Sequence[Order] = ("forward",),
    calibrate: bool = False,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> Administration:
    """Ask every prompt its scales' items and read the answers from the next-token
    distribution (one forward pass per answer, batched, only the last position's logits).

    ``orders`` chooses the option orders each statement is asked in: ``forward`` is the
    inventory file's order, ``reversed`` its reverse, whichever the ``Inventory`` object holds
    (``("forward", "reversed")`` asks it twice); ``calibrate`` also asks each prompt the inventory's
    content-free statements (in each order), kept in ``calibration``.

    Example:
        >>> adm = administer(lm, load_inventory(), prompts, layer=9)  # doctest: +SKIP
        >>> adm.answers[0].mass <= 1.0, adm.states.shape[0] == len(adm.answers)  # doctest: +SKIP
        (True, True)
    """
    if layer is not None:
        layer = lm.adapter.check_layers([layer])[0]
    if not orders or any(o not in ORDERS for o in orders) or len(set(orders)) < len(orders):
        raise PersonaspaceError(
            f"orders is {list(orders)}", fix="give forward, reversed or both", param="orders"
        )
    if calibrate and not inventory.content_free:
        raise PersonaspaceError(
            f"{inventory.source} has no content-free statements to calibrate with",
            fix="add a 'content_free' list to the inventory or do not calibrate",
            param="calibrate",
        )
    pairs, contexts, options = _rows(lm, inventory, prompts, orders, calibrate)
    if not any(not item.startswith(CONTENT_FREE) for _p, item, _o in pairs):
        raise PersonaspaceError("no item is asked under any prompt", fix="choose other traits")
    size = lm.batch_size(batch_size, max(len(c) for c in contexts))
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(contexts)), key=lambda i: len(contexts[i]))
    probs: list[tuple[float, ...]] = [()] * len(contexts)
    states = torch.zeros(len(contexts), lm.adapter.hidden_size) if layer is not None else None
    seen: list[torch.Tensor] = []

    def keep_last(_position: int, hidden: torch.Tensor) -> None:
        seen.append(hidden[:, -1].float().cpu())

    for start in range(0, len(order), size):
        batch = order[start : start + size]
        seen.clear()
        ids, mask = left_pad([contexts[i] for i in batch], pad)
        with (
            torch.inference_mode(),
            contiguous_head_input(lm.model),
            residual_hooks(
                lm.model,
                lm.adapter,
                [layer] if layer is not None else [],
                keep_last,
            ),
        ):
            logits = lm.model(
                input_ids=ids.to(lm.device),
                attention_mask=mask.to(lm.device),
                position_ids=positions_of(mask).to(lm.device),
                use_cache=False,
                logits_to_keep=1,
            ).logits[:, -1]
        p = torch.softmax(logits.float(), dim=-1).cpu()
        for row, i in enumerate(batch):
            probs[i] = tuple(float(p[row, t]) for t in options[i])
            if states is not None:
                states[i] = seen[0][row]
        if progress is not None:
            progress(len(batch))
    every = [ItemAnswer(p.id, item, probs[i], order) for i, (p, item, order) in enumerate(pairs)]
    keep = [i for i, a in enumerate(every) if not a.item_id.startswith(CONTENT_FREE)]
    return Administration(
        list(prompts),
        [every[i] for i in keep],
        layer,
        states[keep] if states is not None else None,
        [a for a in every if a.item_id.startswith(CONTENT_FREE)],
    )


def scale_direction(
    traits: Mapping[str, torch.Tensor],
    layers: Sequence[int],
    layer: int,
    scale: InventoryScale,
    axis: Axis,
) -> tuple[torch.Tensor, str]:
    """The unit direction a scale's answer states are projected on, and its name: the run's
    trait vector of the scale's catalogue trait at ``layer``; else minus its opposite's; else
    (no such trait vector in the run) the Assistant axis.

    Example:
        >>> axis = Axis("m", [0], torch.tensor([[0.0, 2.0]]), 1, "x")
        >>> scale = InventoryScale("extraversion", "extraverted", "introverted")
        >>> scale_direction({"introverted": torch.tensor([[3.0, 4.0]])}, [0], 0, scale, axis)
        (tensor([-0.6000, -0.8000]), '-trait vector introverted')
        >>> scale_direction({}, [0], 0, scale, axis)
        (tensor([0., 1.]), 'assistant axis (the run has no trait vector extraverted)')
    """
    for name, sign, label in (
        (scale.catalogue_trait, 1.0, f"trait vector {scale.catalogue_trait}"),
        (scale.opposite, -1.0, f"-trait vector {scale.opposite}"),
    ):
        if name is not None and name in traits and layer in layers:
            vector = traits[name][list(layers).index(layer)].float()
            return sign * vector / vector.norm(), label
    return (
        axis.unit(layer).float(),
        f"assistant axis (the run has no trait vector {scale.catalogue_trait})",
    )
