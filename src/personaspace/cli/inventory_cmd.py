"""``personaspace inventory``: a Big Five inventory under the default, trait and role prompts:
do prompted personas move the model's answers? (See ``personaspace.experiments.inventory``
and docs/inventory.md.)"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from personaspace.catalogue import load_catalogue
from personaspace.catalogue.inventory import Inventory, load_inventory
from personaspace.catalogue.types import Catalogue
from personaspace.cli.common import (
    add_model_options,
    check_model_options,
    load_model_as_asked,
    model_spec_for,
    parse_names,
)
from personaspace.errors import PersonaspaceError
from personaspace.experiments.inventory import (
    Administration,
    administer,
    inventory_prompts,
    scale_direction,
)
from personaspace.experiments.inventory_stats import (
    expected_value,
    option_shares,
    prompt_projections,
    scale_table,
    summarise_scale,
)
from personaspace.fileformat import write_json
from personaspace.models import DEFAULT_MODEL
from personaspace.runfolder import RunFolder, load_axis, run_vectors

PARAM_FLAGS = {
    "scales": "--traits",
    "variants": "--variants",
    "baseline": "--baseline",
    "roles": "--roles",
    "layer": "--layer",
}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "inventory",
        help="a Big Five inventory under default, trait and role prompts: do personas move it?",
        description="Ask the inventory's statements under the default prompts, each Big Five "
        "trait's positive and negative prompts, unrelated traits' prompts (the baseline) and "
        "role prompts; read each answer from the next-token distribution over the options. "
        "Reports per trait the scores, the pos-neg shift with its interval over items, a "
        "permutation test, the baseline, Cronbach's alpha and, with --axis, the rank "
        "correlation across prompts of the trait-vector projection with the score.",
    )
    parser.add_argument(
        "--model", default=None, help=f"default: the axis's model, else {DEFAULT_MODEL}"
    )
    parser.add_argument(
        "--axis", default=None, metavar="RUN", help="an axis run folder (or axis file)"
    )
    parser.add_argument("--layer", type=int, default=None, help="default: the run's analysis layer")
    parser.add_argument(
        "--inventory", default=None, metavar="FILE", help="default: the built-in Big Five"
    )
    parser.add_argument(
        "--traits", default=None, help="comma-separated inventory traits (default: all)"
    )
    parser.add_argument("--variants", type=int, default=5, help="prompts per pole of each trait")
    parser.add_argument("--baseline", type=int, default=6, help="unrelated traits' prompt pairs")
    parser.add_argument(
        "--roles", default="0", help="N (that many catalogue roles, drawn with --seed) or names"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, metavar="FILE.json", help="write the results here")
    add_model_options(parser)
    parser.set_defaults(run=run, param_flags=PARAM_FLAGS)


def _roles(text: str, catalogue: Catalogue, seed: int) -> list[str]:
    names = parse_names(text)
    if len(names) == 1 and names[0].lstrip("-").isdigit():
        n = int(names[0])
        if not 0 <= n <= len(catalogue.roles):
            raise PersonaspaceError(f"--roles is {n}", fix=f"use 0..{len(catalogue.roles)}")
        return sorted(random.Random(seed).sample(sorted(catalogue.roles), n))
    unknown = [n for n in names if n not in catalogue.roles]
    if unknown:
        raise PersonaspaceError(
            f"--roles: the catalogue has no role {unknown[0]!r}", fix="see `personaspace catalogue`"
        )
    return names


def _out_path(text: str | None) -> Path | None:
    if text is None:
        return None
    path = Path(text)
    if path.is_dir() or not path.parent.is_dir():
        raise PersonaspaceError(
            f"--out {text}: not a file in an existing folder", fix="check the path"
        )
    return path


def _answers_json(adm: Administration, inventory: Inventory) -> list[dict[str, Any]]:
    values = [o.value for o in inventory.options]
    keyed = {i.id: i.keyed for i in inventory.items}
    rows = []
    for a in adm.answers:
        value = expected_value(a.option_probs, values)
        rows.append(
            {
                "prompt": a.prompt_id,
                "item": a.item_id,
                "option_probs": list(a.option_probs),
                "mass": a.mass,
                "value": value,
                "score": inventory.keyed_value(value, keyed[a.item_id]),
            }
        )
    return rows


def run(args: argparse.Namespace) -> int:
    check_model_options(args)
    inventory = load_inventory(args.inventory)
    catalogue = load_catalogue()
    scales = parse_names(args.traits) or [s.name for s in inventory.scales]
    for name in scales:
        inventory.scale(name)
    roles = _roles(args.roles, catalogue, args.seed)
    out = _out_path(args.out)
    inventory_prompts(  # refuses bad counts before the model loads
        catalogue,
        inventory,
        chat_tuned=True,
        model_name="",
        scales=scales,
        variants=args.variants,
        baseline=args.baseline,
        roles=roles,
        seed=args.seed,
    )
    if args.layer is not None and not args.axis:
        raise PersonaspaceError("--layer is given without --axis", fix="add --axis RUN")
    axis = load_axis(args.axis) if args.axis else None
    spec = model_spec_for(axis, args.model) if axis is not None else args.model or DEFAULT_MODEL
    lm = load_model_as_asked(spec, args)
    prompts = inventory_prompts(
        catalogue,
        inventory,
        chat_tuned=lm.chat_tuned,
        model_name=lm.display_name,
        scales=scales,
        variants=args.variants,
        baseline=args.baseline,
        roles=roles,
        seed=args.seed,
    )
    layer, traits, layers = None, {}, []
    if axis is not None:
        axis.check_model(lm)
        folder = Path(args.axis)
        recorded = RunFolder(folder).analysis_layer() if folder.is_dir() else None
        layer = args.layer if args.layer is not None else recorded
        layer = layer if layer is not None else axis.middle_layer
        if layer not in axis.layers:
            raise PersonaspaceError(
                f"layer is {layer} but the axis has layers {axis.layers[0]}..{axis.layers[-1]}",
                fix="choose one of them",
                param="layer",
            )
        if folder.is_dir():
            vectors = run_vectors(folder)
            traits, layers = vectors.traits, vectors.layers
    total = sum(len(inventory.items_of(s)) for p in prompts for s in p.scales)
    with tqdm(total=total, desc=f"inventory {lm.model_id}", unit="answer", disable=None) as bar:

        def advance(n: int) -> None:
            bar.update(n)

        adm = administer(
            lm, inventory, prompts, layer=layer, batch_size=args.batch_size, progress=advance
        )
    results = []
    for name in scales:
        projections, direction = None, None
        if axis is not None and layer is not None:
            unit, direction = scale_direction(traits, layers, layer, inventory.scale(name), axis)
            ids = [i.id for i in inventory.items_of(name)]
            projections = prompt_projections(adm, ids, unit)
        results.append(
            summarise_scale(
                adm, inventory, name, projections=projections, direction=direction, seed=args.seed
            )
        )
    print(scale_table(results))
    if axis is not None:
        for r in results:
            print(f"{r.scale}: projected on the {r.direction} at layer {layer}")
    mass = sum(a.mass for a in adm.answers) / len(adm.answers)
    print(
        f"\n{len(adm.answers)} answers under {len(prompts)} prompts; "
        f"mean probability on the options {mass:.2f}"
    )
    shares = ", ".join(f"{o.label}: {s:.2f}" for o, s in zip(inventory.options, option_shares(adm)))
    print(f"share of each option, renormalised, over all answers: {shares}")
    if out is not None:
        write_json(
            out,
            {
                "model_id": lm.model_id,
                "chat_tuned": lm.chat_tuned,
                "inventory": {"name": inventory.name, "source": inventory.source},
                "settings": {
                    "traits": scales,
                    "variants": args.variants,
                    "baseline": args.baseline,
                    "roles": roles,
                    "seed": args.seed,
                    "axis": args.axis,
                    "axis_fingerprint": axis.fingerprint() if axis is not None else None,
                    "layer": layer,
                },
                "scales": [r.to_json() for r in results],
                "prompts": [
                    {
                        "id": p.id,
                        "kind": p.kind,
                        "name": p.name,
                        "variant": p.variant,
                        "system": p.system,
                    }
                    for p in prompts
                ],
                "answers": _answers_json(adm, inventory),
            },
        )
        print(f"wrote {out.resolve()}", file=sys.stderr)
    return 0
