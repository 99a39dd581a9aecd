"""``personaspace steer-base``: steer a model along an axis; which archetypes emerge, and
do random directions of the same norm do as much?"""

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
    DEFAULT_RANDOM_DIRECTIONS,
    STEERING_SAMPLING,
    SteeringSettings,
    residual_norm,
    role_reference,
    steer_base_model,
)
from personaspace.experiments.plots import plot_base_steering
from personaspace.fileformat import write_json
from personaspace.runfolder import RunFolder, load_axis

NULL_FLAGS = {"random_directions": "--random-directions"}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "steer-base",
        help="steer a model along an axis (its own, or another run's of the same hidden "
        "size), judge which roles its completions resemble, beside random directions",
    )
    parser.add_argument(
        "run_base",
        metavar="RUN",
        help="the axis run folder of the model to steer (a base or a chat model); its role "
        "vectors are the roles the completions are compared with",
    )
    parser.add_argument(
        "--axis",
        default=None,
        help="axis run folder or file to steer with, of the same hidden size (default: RUN's "
        "own axis); e.g. the instruct run to steer a base model, or the base run to steer "
        "the instruct model",
    )
    parser.add_argument("--model", default=None, help="default: the model RUN was run on")
    parser.add_argument("--out", default=None, help="output folder (default: runs/steer-RUN)")
    parser.add_argument(
        "--random-directions",
        type=int,
        default=DEFAULT_RANDOM_DIRECTIONS,
        metavar="K",
        help="steer along K seeded random unit directions too, as the null "
        f"(default {DEFAULT_RANDOM_DIRECTIONS}, the fewest that can give p = 0.05; 0: none)",
    )
    parser.add_argument(
        "--null-seed", type=int, default=0, help="seed of the random directions (default 0)"
    )
    add_steering_arguments(parser)
    parser.set_defaults(run=run, param_flags={**STEERING_FLAGS, **NULL_FLAGS})


def steering_settings(args: argparse.Namespace) -> SteeringSettings:
    """``--coefs``, ``--samples``, ``--steer-tokens`` and (``steer-base`` only)
    ``--random-directions`` and ``--null-seed`` as settings, checked before any model loads.

    Example:
        >>> args = argparse.Namespace(coefs="0,0.4", samples=3, steer_tokens=20)
        >>> steering_settings(args).coefs, steering_settings(args).samples_per_prompt
        ((0.0, 0.4), 3)
    """
    return SteeringSettings(
        coefs=parse_coefs(args.coefs) if args.coefs else DEFAULT_COEFS,
        samples_per_prompt=args.samples,
        sampling=dataclasses.replace(STEERING_SAMPLING, max_new_tokens=args.steer_tokens),
        random_directions=getattr(args, "random_directions", 0),
        null_seed=getattr(args, "null_seed", 0),
    )


def _progress(done: int, total: int) -> None:
    print(f"random direction {done}/{total}", file=sys.stderr)


def run_steering(args: argparse.Namespace, base_folder: Path, axis_source: Path) -> dict[str, Any]:
    """The steering study for parsed CLI arguments (shared with ``compare --steer-base``).

    Everything that can be checked without the model is checked before it loads: the
    options, the run folder, and the axis's hidden size against the run's.
    """
    if not base_folder.is_dir():
        raise PersonaspaceError(
            f"{base_folder} is not an axis run folder",
            fix="pass the --out folder of `personaspace axis --model MODEL`",
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
    if axis.hidden_size != base.hidden_size:
        raise PersonaspaceError(
            f"the axis of {axis_source} has hidden size {axis.hidden_size} but the run "
            f"{base_folder} (model {model}) has {base.hidden_size}",
            fix="steer with an axis of the same model family and size (e.g. the instruct "
            "run of this base model, or the converse), or leave out --axis to use the run's own",
        )
    axis.unit(layer)  # the axis has the steered layer
    base_axis = run.axis()
    print(f"steering {model} at layer {layer} with the axis of {axis_source} ...", file=sys.stderr)
    lm = load_model_as_asked(model, args)
    axis.check_model(lm)
    base_axis.check_model(lm)
    norm = residual_norm(lm, base_folder, base_axis, layer)
    roles = role_reference(base.roles, row, list(load_catalogue(base.catalogue).roles.values()))
    return steer_base_model(
        lm,
        axis,
        layer,
        norm,
        roles,
        settings,
        judge_evidence=not args.no_judge_evidence,
        progress=_progress,
    )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def print_summary(result: dict[str, Any]) -> None:
    """One line per coefficient, then (with the null) each figure beside the random
    directions: their mean [95 % range], p and the verdict."""
    for row in result["by_coefficient"]:
        judge = ", ".join(row["nearest_by_judge"][:3]) or "-"
        print(
            f"coef {row['coef_frac']:+.2f}  on axis {row['reread_on_axis_mean']:8.3f}  "
            f"activation: {', '.join(row['nearest_by_activation'][:3])}  judge: {judge}"
        )
    null = result.get("random_null")
    if not null:
        return
    print(
        f"beside {null['n_directions']} random unit directions of the same norm "
        f"(seed {null['seed']}): axis | random mean [95 % range] | p"
    )
    width = max(map(len, null["figures"]), default=0)
    for row in result["by_coefficient"]:
        for name, fig in row["null"].items():
            print(
                f"coef {row['coef_frac']:+.2f}  {name:<{width}}  {_number(fig['observed']):>8} | "
                f"{_number(fig['random_mean'])} [{_number(fig['random_low'])}, "
                f"{_number(fig['random_high'])}] | {fig['verdict']}"
            )
    for note in null["notes"]:
        print(f"note: {note}")


def run(args: argparse.Namespace) -> int:
    base_folder = Path(args.run_base)
    axis_source = Path(args.axis) if args.axis else base_folder
    result = run_steering(args, base_folder, axis_source)
    out = Path(args.out or Path("runs") / f"steer-{_slug(base_folder.name)}")
    write_json(out / "steer_base.json", result)
    plot_base_steering(result, out / "steer_base.png")
    print_summary(result)
    print(f"wrote {out.resolve()}/ (steer_base.json, steer_base.png)")
    return 0
