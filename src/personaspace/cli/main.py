"""``personaspace`` entry point: subcommands, one-line errors, exit status 2 on bad input."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from personaspace import __version__
from personaspace.cli import (
    axis_cmd,
    calibrate_cmd,
    cap_eval_cmd,
    capture_cmd,
    catalogue_cmd,
    chat_cmd,
    compare_cmd,
    drift_cmd,
    export_cmd,
    models_cmd,
    monitor_cmd,
    serve_cmd,
    steer_base_cmd,
)
from personaspace.errors import PersonaspaceError

COMMANDS = (
    models_cmd,
    catalogue_cmd,
    axis_cmd,
    calibrate_cmd,
    compare_cmd,
    steer_base_cmd,
    export_cmd,
    capture_cmd,
    monitor_cmd,
    chat_cmd,
    drift_cmd,
    cap_eval_cmd,
    serve_cmd,
)


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line (problem and fix) and exit status 2, like all our errors."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"personaspace: error: {message}: see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="personaspace",
        description="Map, monitor and stabilize the persona space of language models.",
    )
    parser.add_argument("--version", action="version", version=f"personaspace {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except PersonaspaceError as err:
        if args.debug:
            raise
        print(f"personaspace: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("personaspace: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
