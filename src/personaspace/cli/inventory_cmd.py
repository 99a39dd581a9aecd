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
    ORDERS,
    Administration,
    ItemAnswer,
    Order,
    administer,
    inventory_prompts,
    scale_direction,
)
from personaspace.experiments.inventory_stats import (
    ReadingCheck,
    ScaleResult,
    answer_value,
    calibration_references,
    option_shares,
    prompt_projections,
    reading_check,
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
    parser.add_argument(
        "--orders",
        choices=["both", "forward"],
        default="both",
        help="ask each statement with the options in both orders (default; cancels answers "
        "by position) or only as written",
    )
    parser.add_argument(
        "--no-calibrate",
        dest="calibrate",
        action="store_false",
        help="do not divide out each prompt's option bias measured on content-free statements",
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


def _answers_json(
    answers: list[ItemAnswer], inventory: Inventory, calibrate: bool, adm: Administration
) -> list[dict[str, Any]]:
    keyed = {i.id: i.keyed for i in inventory.items}
    references = calibration_references(adm) if calibrate else None
    rows = []
    for a in answers:
        value = answer_value(a, inventory)
        row: dict[str, Any] = {
            "prompt": a.prompt_id,
            "item": a.item_id,
            "order": a.order,
            "option_probs": list(a.option_probs),
            "mass": a.mass,
            "value": value,
        }
        if a.item_id in keyed:
            row["score"] = inventory.keyed_value(value, keyed[a.item_id])
            if references is not None:
                row["calibrated_value"] = answer_value(a, inventory, references)
        rows.append(row)
    return rows


def _summaries(
    adm: Administration,
    inventory: Inventory,
    scales: list[str],
    directions: dict[str, tuple[dict[str, float], str]],
    calibrated: bool,
    seed: int,
) -> list[ScaleResult]:
    return [
        summarise_scale(
            adm,
            inventory,
            name,
            projections=directions[name][0] if name in directions else None,
            direction=directions[name][1] if name in directions else None,
            calibrated=calibrated,
            seed=seed,
        )
        for name in scales
    ]


def _reading_line(check: ReadingCheck) -> str:
    c = check.agreement
    kind = "calibrated" if check.calibrated else "raw"
    if c.p_permutation >= 0.05 or c.rho != c.rho:
        verdict = "no evidence that it reads the statements"
    elif c.rho > 0:
        verdict = "it reads the statements"
    else:
        verdict = "it answers by the label's position, not by the statement"
    return (
        f"order agreement ({kind}, {c.n} items over {check.prompts} prompts): rho {c.rho:+.2f} "
        f"[{c.ci_low:+.2f}, {c.ci_high:+.2f}], permutation p {c.p_permutation:.3g}: {verdict}"
    )


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
    if args.calibrate and not inventory.content_free:
        raise PersonaspaceError(
            f"{inventory.source} has no content-free statements to calibrate with",
            fix="add a 'content_free' list to the inventory or pass --no-calibrate",
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
    orders: tuple[Order, ...] = ORDERS if args.orders == "both" else ("forward",)
    per_prompt = len(inventory.content_free) if args.calibrate else 0
    total = len(orders) * sum(
        per_prompt + sum(len(inventory.items_of(s)) for s in p.scales) for p in prompts
    )
    with tqdm(total=total, desc=f"inventory {lm.model_id}", unit="answer", disable=None) as bar:

        def advance(n: int) -> None:
            bar.update(n)

        adm = administer(
            lm,
            inventory,
            prompts,
            layer=layer,
            orders=orders,
            calibrate=args.calibrate,
            batch_size=args.batch_size,
            progress=advance,
        )
    directions: dict[str, tuple[dict[str, float], str]] = {}
    if axis is not None and layer is not None:
        for name in scales:
            unit, direction = scale_direction(traits, layers, layer, inventory.scale(name), axis)
            ids = [i.id for i in inventory.items_of(name)]
            directions[name] = (prompt_projections(adm, ids, unit), direction)
    results = _summaries(adm, inventory, scales, directions, args.calibrate, args.seed)
    raw = (
        _summaries(adm, inventory, scales, directions, False, args.seed)
        if args.calibrate
        else results
    )
    checks = []
    if len(orders) == 2 and set(scales) == {s.name for s in inventory.scales}:
        checks = [
            reading_check(adm, inventory, calibrated=c, seed=args.seed)
            for c in ([False, True] if args.calibrate else [False])
        ]
    scoring = "calibrated" if args.calibrate else "raw"
    print(f"scores ({scoring}, options asked {' and '.join(orders)}):")
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
    print(f"share of each option label, renormalised, over all answers: {shares}")
    for check in checks:
        print(_reading_line(check))
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
                    "orders": list(orders),
                    "calibrated": args.calibrate,
                    "content_free": list(inventory.content_free),
                },
                "scales": [r.to_json() for r in results],
                "scales_uncalibrated": [r.to_json() for r in raw],
                "reading_check": [c.to_json() for c in checks],
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
                "answers": _answers_json(adm.answers, inventory, args.calibrate, adm),
                "calibration_answers": _answers_json(adm.calibration, inventory, False, adm),
            },
        )
        print(f"wrote {out.resolve()}", file=sys.stderr)
    return 0
