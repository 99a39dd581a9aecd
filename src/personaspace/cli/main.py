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
    consistency_cmd,
    data_cmd,
    drift_cmd,
    export_cmd,
    forecast_cmd,
    inventory_cmd,
    models_cmd,
    monitor_cmd,
    screen_cmd,
    serve_cmd,
    shift_cmd,
    steer_base_cmd,
    tune_cmd,
    validate_cmd,
)
from personaspace.errors import PersonaspaceError

COMMANDS = (
    models_cmd,
    catalogue_cmd,
    data_cmd,
    tune_cmd,
    screen_cmd,
    shift_cmd,
    axis_cmd,
    calibrate_cmd,
    validate_cmd,
    compare_cmd,
    steer_base_cmd,
    export_cmd,
    capture_cmd,
    monitor_cmd,
    chat_cmd,
    drift_cmd,
    forecast_cmd,
    consistency_cmd,
    inventory_cmd,
    cap_eval_cmd,
    serve_cmd,
)


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line (problem and fix) and exit status 2, like all our errors."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"personaspace: error: {message}: see `{self.prog} --help`\n")


# Library parameters named like the option that sets them, in every command that has it.
COMMON_FLAGS = {
    "device": "--device",
    "dtype": "--dtype",
    "batch_size": "--batch-size",
    "workers": "--workers",
    "ray": "--ray",
}


def option_for(parser: argparse.ArgumentParser, param: str) -> str | None:
    """The command-line option that sets library parameter ``param``: as the command
    declares it (``parser.set_defaults(param_flags={"n_bootstrap": "--bootstrap"})``), or one
    of ``COMMON_FLAGS`` when the command has that option.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> _ = p.add_argument("--batch-size", type=int)
        >>> p.set_defaults(param_flags={"n_bootstrap": "--bootstrap"})
        >>> option_for(p, "n_bootstrap"), option_for(p, "batch_size"), option_for(p, "x")
        ('--bootstrap', '--batch-size', None)
    """
    flags = parser.get_default("param_flags") or {}
    option = flags.get(param)
    if option is not None:
        return str(option)
    common = COMMON_FLAGS.get(param)
    if common is not None and common in parser._option_string_actions:
        return common
    return None


def cli_message(err: PersonaspaceError, parser: argparse.ArgumentParser | None) -> str:
    """The error as the command line shows it: a parameter the library names becomes the
    option that set it (``top is 0`` from ``--top 0`` reads ``--top is 0``).

    Example:
        >>> p = argparse.ArgumentParser()
        >>> p.set_defaults(param_flags={"top": "--top"})
        >>> cli_message(PersonaspaceError("top is 0", fix="give at least 2", param="top"), p)
        '--top is 0: give at least 2'
    """
    option = option_for(parser, err.param) if parser is not None and err.param else None
    if option is None or err.param is None:
        return str(err)
    if err.problem.startswith(f"{err.param} "):
        problem = option + err.problem[len(err.param) :]
    else:
        problem = f"{option}: {err.problem}"
    return str(PersonaspaceError(problem, fix=err.fix))


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


def _subparser(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found = action.choices.get(args.command)
            return found if isinstance(found, argparse.ArgumentParser) else None
    return None


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
        print(f"personaspace: error: {cli_message(err, _subparser(parser, args))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("personaspace: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
