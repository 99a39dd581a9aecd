"""``personaspace export``: write a run's vectors in another project's format."""

from __future__ import annotations

import argparse
from pathlib import Path

from personaspace.errors import PersonaspaceError
from personaspace.interop.control_vector import write_control_vector
from personaspace.interop.reference import write_reference_layout
from personaspace.runfolder import run_vectors


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("export", help="export a run: reference .pt layout or llama.cpp GGUF")
    parser.add_argument("run_dir", metavar="RUN", help="an axis run folder")
    parser.add_argument("--format", choices=("reference", "gguf"), required=True)
    parser.add_argument("--out", required=True, help="folder (reference) or .gguf file")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="gguf: multiply the unit axis by this factor"
    )
    parser.add_argument("--raw", action="store_true", help="gguf: keep the axis unnormalised")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    vectors = run_vectors(args.run_dir)
    if args.format == "reference":
        if vectors.default is None:
            raise PersonaspaceError(
                f"{args.run_dir} has no default vector", fix="export a full run"
            )
        out = write_reference_layout(
            args.out,
            axis=vectors.axis,
            default=vectors.default,
            roles=vectors.roles,
            traits=vectors.traits,
        )
        print(f"wrote {out.resolve()}/ (axis.pt, default.pt, role_vectors/, trait_vectors/)")
    else:
        out = write_control_vector(
            Path(args.out),
            vectors.axis,
            vectors.layers,
            model_hint=vectors.model_id,
            normalize=not args.raw,
            scale=args.scale,
        )
        print(f"wrote {out.resolve()} (llama.cpp control vector, {len(vectors.layers) - 1} layers)")
    return 0
