"""``personaspace steer-base``: steer a base model along an axis; which archetypes emerge?"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from personaspace.catalogue import load_catalogue
from personaspace.cli.common import check_model_options, load_model_as_asked, parse_coefs
from personaspace.cli.compare_cmd import STEERING_FLAGS, _slug, add_steering_arguments
from personaspace.errors import PersonaspaceError
from personaspace.experiments.base_steering import (
    DEFAULT_COEFS,
    STEERING_SAMPLING,
    SteeringSettings,
    residual_norm,
    role_reference,
    steer_base_model,
)
from personaspace.fileformat import write_json
from personaspace.runfolder import RunFolder, load_axis


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "steer-base",
        help="steer a base model along an axis (its own or its instruct model's) and judge "
        "which roles its completions resemble",
    )
    parser.add_argument("run_base", metavar="RUN_BASE", help="the base model's axis run folder")
    parser.add_argument(
        "--axis",
        default=None,
        help="axis run folder or file to steer with (default: RUN_BASE's own axis)",
    )
    parser.add_argument("--model", default=None, help="default: the model RUN_BASE was run on")
    parser.add_argument("--out", default=None, help="output folder (default: runs/steer-RUN)")
    add_steering_arguments(parser)
    parser.set_defaults(run=run, param_flags=STEERING_FLAGS)


def steering_settings(args: argparse.Namespace) -> SteeringSettings:
    """``--coefs``, ``--samples`` and ``--steer-tokens`` as settings, checked before any
    model loads.

    Example:
        >>> args = argparse.Namespace(coefs="0,0.4", samples=3, steer_tokens=20)
        >>> steering_settings(args).coefs, steering_settings(args).samples_per_prompt
        ((0.0, 0.4), 3)
    """
    return SteeringSettings(
        coefs=parse_coefs(args.coefs) if args.coefs else DEFAULT_COEFS,
        samples_per_prompt=args.samples,
        sampling=dataclasses.replace(STEERING_SAMPLING, max_new_tokens=args.steer_tokens),
    )


def run_steering(args: argparse.Namespace, base_folder: Path, axis_source: Path) -> dict[str, Any]:
    """The steering study for parsed CLI arguments (shared with ``compare --steer-base``).

    Everything that can be checked without the model is checked before it loads.
    """
    if not base_folder.is_dir():
        raise PersonaspaceError(
            f"{base_folder} is not an axis run folder",
            fix="pass the --out folder of `personaspace axis --model BASE_MODEL`",
        )
    check_model_options(args)
    settings = steering_settings(args)
    run = RunFolder(base_folder)
    model = getattr(args, "model", None) or run.settings().get("model")
    if not model:
        raise PersonaspaceError(
            f"{base_folder} does not say which model it was run on", fix="pass --model"
        )
    base = run.compared()
    layer = base.analysis_layer if args.steer_layer is None else args.steer_layer
    row = base.row(layer)
    axis = load_axis(axis_source)
    base_axis = run.axis()
    print(f"steering {model} at layer {layer} with the axis of {axis_source} ...", file=sys.stderr)
    lm = load_model_as_asked(model, args)
    axis.check_model(lm)
    base_axis.check_model(lm)
    norm = residual_norm(lm, base_folder, base_axis, layer)
    roles = role_reference(base.roles, row, list(load_catalogue(base.catalogue).roles.values()))
    return steer_base_model(
        lm, axis, layer, norm, roles, settings, judge_evidence=not args.no_judge_evidence
    )


def run(args: argparse.Namespace) -> int:
    base_folder = Path(args.run_base)
    axis_source = Path(args.axis) if args.axis else base_folder
    result = run_steering(args, base_folder, axis_source)
    out = Path(args.out or Path("runs") / f"steer-{_slug(base_folder.name)}")
    write_json(out / "steer_base.json", result)
    for row in result["by_coefficient"]:
        judge = ", ".join(row["nearest_by_judge"][:3]) or "-"
        print(
            f"coef {row['coef_frac']:+.2f}  on axis {row['reread_on_axis_mean']:8.3f}  "
            f"activation: {', '.join(row['nearest_by_activation'][:3])}  judge: {judge}"
        )
    print(f"wrote {(out / 'steer_base.json').resolve()}")
    return 0
