"""``personaspace validate``: does a run's axis keep stable conversations flat and drifting
ones falling? (See ``personaspace.monitor.validate`` for the rule and its null.)"""

from __future__ import annotations

import argparse

import torch

from personaspace.cli.common import add_model_options, check_model_options, load_model_as_asked
from personaspace.errors import PersonaspaceError
from personaspace.fileformat import write_json
from personaspace.monitor.validate import read_validation_set, validate_axis
from personaspace.runfolder import VALIDATION_FILE, RunFolder


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "validate",
        help="project the validation conversations on a run's axis: stable stay, drifting fall",
        description="Project conversations whose behaviour is known (the catalogue's "
        "validation set, or --transcripts DIR) on the run's axis and report each one's change "
        "in default-role gaps; writes RUN/validate.json.",
    )
    parser.add_argument("run_dir", metavar="RUN", help="a finished axis run folder")
    parser.add_argument("--model", default=None, help="default: the run's model")
    parser.add_argument("--layer", type=int, default=None, help="default: the analysis layer")
    parser.add_argument(
        "--transcripts", default=None, metavar="DIR", help="your own validation transcripts"
    )
    parser.add_argument("--directions", type=int, default=200, help="random directions (null)")
    add_model_options(parser, batch_size=False)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_model_options(args)
    folder = RunFolder(args.run_dir)
    folder.require_axis()
    transcripts = read_validation_set(args.transcripts)
    if args.directions < 1:
        raise PersonaspaceError(f"--directions is {args.directions}", fix="give 1 or more")
    vectors = folder.vectors()
    layer = args.layer if args.layer is not None else folder.analysis_layer()
    if layer is None or layer not in vectors.layers or vectors.default is None:
        raise PersonaspaceError(
            f"{folder.path} has no vectors at layer {layer}", fix="pass --layer"
        )
    model = args.model or folder.model_spec()
    if not model:
        raise PersonaspaceError(f"{folder.path} does not name its model", fix="pass --model")
    lm = load_model_as_asked(model, args)
    axis = folder.axis(lm)
    row = vectors.layers.index(layer)
    roles = torch.stack([v[row] for v in vectors.roles.values()])
    report = validate_axis(
        lm, axis, layer, vectors.default[row], roles, transcripts, directions=args.directions
    )
    write_json(folder.file(VALIDATION_FILE), report.to_json())
    print(report.table())
    verdict = "passes" if report.passed else "does not pass"
    print(
        f"\nthe axis at layer {layer} {verdict}: {sum(r.passed for r in report.rows)} of "
        f"{len(report.rows)} conversations as expected; drifting minus stable "
        f"{report.separation_gaps:+.2f} gaps, effect size {report.separation_effect:+.2f} "
        f"(random directions at least as separating: {report.null_percentile:.1f} %)"
    )
    print(f"wrote {folder.file('validate.json').resolve()}")
    return 0
