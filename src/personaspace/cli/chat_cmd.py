"""``personaspace chat``: a terminal chat that shows where each reply sits on the axis.

Reads one user message per line from stdin (interactive with a prompt, or piped), prints
each reply and beneath it its projection and, when capping, where the cap engaged.
Commands: ``/quit``, ``/reset``, ``/cap on|off``, ``/help``. End of input exits cleanly.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from personaspace.capture.sampling import SamplingConfig
from personaspace.cli.common import (
    add_model_options,
    check_model_options,
    load_axis_and_model,
    parse_layers,
)
from personaspace.errors import PersonaspaceError
from personaspace.monitor.forecast import (
    ForecastDecision,
    Forecaster,
    ForecastGate,
    load_forecaster,
    threshold_for,
)
from personaspace.monitor.live import LiveChat, TurnResult
from personaspace.monitor.transcripts import Transcript, write_transcript
from personaspace.runfolder import (
    CAPPING_FILE,
    RunFolder,
    calibration_for,
    load_axis,
    run_folder_for,
)
from personaspace.vectors.capping import load_capping_config
from personaspace.vectors.intervention import SCOPES, Intervention, steer_along_axis

HELP = "commands: /reset (new conversation), /cap on|off, /quit (or end of input)"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "chat",
        help="chat in the terminal, seeing each reply's projection on the axis",
        description="Interactive chat (or one message per line on piped stdin) showing each "
        "reply's projection on the Assistant Axis and, with --cap, where the cap engaged. " + HELP,
    )
    parser.add_argument("--axis", required=True, help="axis run folder (or axis file)")
    parser.add_argument("--model", default=None, help="model spec (default: the axis's model)")
    parser.add_argument("--cap", default=None, metavar="EXPERIMENT", help="e.g. layers_11:19-p25")
    parser.add_argument(
        "--capping-config", default=None, help=f"capping config (default RUN/{CAPPING_FILE})"
    )
    parser.add_argument(
        "--cap-when-forecast",
        default=None,
        metavar="THRESHOLD",
        help="apply --cap only to replies forecast below THRESHOLD (a projection, or 'floor': "
        "the forecaster's calibrated floor); needs --forecaster",
    )
    parser.add_argument(
        "--forecaster", default=None, metavar="FILE", help="from personaspace forecast fit"
    )
    parser.add_argument(
        "--steer",
        type=float,
        default=None,
        metavar="COEF",
        help="add COEF x the mean residual norm along the axis (+ toward the Assistant)",
    )
    parser.add_argument(
        "--layer", default=None, help="layer steered and shown (default: the axis's middle one)"
    )
    parser.add_argument("--scope", choices=SCOPES, default="all", help="positions intervened on")
    parser.add_argument("--system", default=None, help="system prompt")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default=None, help="write the conversation here (JSON)")
    add_model_options(parser, batch_size=False)
    parser.set_defaults(run=run_chat)


def _capping(args: argparse.Namespace) -> list[Intervention]:
    if args.cap is None:
        if args.capping_config is not None:
            raise PersonaspaceError(
                "--capping-config names a file but no experiment", fix="add --cap EXPERIMENT"
            )
        return []
    if args.capping_config is not None:
        path = Path(args.capping_config)
    elif Path(args.axis).is_dir():
        return RunFolder(args.axis).capping().interventions(args.cap, scope=args.scope)
    else:
        raise PersonaspaceError(
            "--cap needs a capping config", fix="pass --capping-config FILE or a run folder"
        )
    return load_capping_config(path).interventions(args.cap, scope=args.scope)


def _forecast_gate(args: argparse.Namespace) -> tuple[Forecaster, str] | None:
    """``--forecaster`` and ``--cap-when-forecast``, checked before the model loads."""
    threshold, path = getattr(args, "cap_when_forecast", None), getattr(args, "forecaster", None)
    if threshold is None and path is None:
        return None
    if threshold is None or path is None:
        raise PersonaspaceError(
            "--cap-when-forecast and --forecaster go together",
            fix="give both, e.g. --forecaster F.safetensors --cap-when-forecast floor",
        )
    if args.cap is None:
        raise PersonaspaceError(
            "--cap-when-forecast needs a cap to trigger", fix="add --cap EXPERIMENT"
        )
    forecaster = load_forecaster(path)
    threshold_for(threshold, forecaster)  # refuses a bad threshold now
    forecaster.check_axis(load_axis(args.axis))
    return forecaster, threshold


def _forecast_line(decision: ForecastDecision) -> str:
    verdict = "below: cap applied" if decision.capped else "not below: no cap"
    return (
        f"  forecast {decision.forecast:.3f} vs threshold {decision.threshold:.3f} ({verdict}; "
        f"{decision.seconds * 1000:.0f} ms)"
    )


def _lines(stream: TextIO, interactive: bool) -> Iterator[str]:
    if not interactive:
        yield from (line.rstrip("\n") for line in stream)
        return
    while True:
        try:
            yield input("you> ")
        except EOFError:
            print()
            return


def _cap_line(experiment: str, caps: list[Intervention], turn: TurnResult) -> str:
    engaged = {layer: n for layer, n in turn.cap_engaged.items() if n}
    n_layers = len({c.layer for c in caps})
    if not engaged:
        return f"  cap {experiment}: not engaged on the reply ({n_layers} layers)"
    detail = ", ".join(f"L{layer} {n}" for layer, n in engaged.items())
    return (
        f"  cap {experiment}: engaged on {len(engaged)} of {n_layers} layers "
        f"(reply tokens moved: {detail}; of {len(turn.token_ids)} tokens)"
    )


def _show(turn: TurnResult, floors: dict[int, float], cap_line: str | None) -> None:
    print(turn.text if turn.text else "(empty reply)")
    for layer, value in turn.projection.items():
        floor = f"  (p25 floor {floors[layer]:.3f})" if layer in floors else ""
        print(f"  projection at layer {layer}: {value:.3f}{floor}")
    if cap_line is not None:
        print(cap_line)
    print(flush=True)


def run_chat(args: argparse.Namespace) -> int:
    layers = parse_layers(args.layer, "--layer")
    if layers is not None and len(layers) != 1:
        raise PersonaspaceError("--layer takes one layer", fix="e.g. --layer 15")
    sampling = SamplingConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    check_model_options(args)
    caps = _capping(args)
    gating = _forecast_gate(args)
    axis, lm = load_axis_and_model(args.axis, args.model, args)
    steering: list[Intervention] = []
    chat = LiveChat(lm, axis, system=args.system, layers=layers, sampling=sampling)
    gate = None
    if gating is not None:
        forecaster, threshold = gating
        forecaster.check(lm, axis)
        gate = ForecastGate(forecaster, threshold_for(threshold, forecaster))
        chat.cap_gate = gate
    if args.steer is not None:
        unit = run_folder_for(args.axis, "steering").calibration()
        steering = steer_along_axis(axis, unit, args.steer, chat.layers, args.scope)
    calibration = calibration_for(args.axis)
    floors = {
        layer: calibration.tau(layer, 25)
        for layer in chat.layers
        if calibration is not None and layer in calibration.layers
    }
    caps_on = True
    chat.interventions = steering + caps
    interactive = sys.stdin is not None and sys.stdin.isatty()
    if interactive:
        extras = [f"cap {args.cap}"] if caps else []
        extras += [f"steer {args.steer:+g} at layer {chat.layers[0]}"] if steering else []
        print(f"chatting with {lm.model_id}" + (f" ({', '.join(extras)})" if extras else ""))
        print(HELP)
    for raw in _lines(sys.stdin, interactive) if sys.stdin is not None else ():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("/"):
            command = line.split()
            if command[0] in {"/quit", "/exit"}:
                break
            if command[0] == "/reset":
                chat.reset()
                print("(conversation cleared)\n")
            elif command[0] == "/cap" and len(command) == 2 and command[1] in {"on", "off"}:
                if not caps:
                    print("(no cap to switch: start with --cap EXPERIMENT)\n")
                    continue
                caps_on = command[1] == "on"
                chat.interventions = steering + (caps if caps_on else [])
                chat.cap_gate = gate if caps_on else None
                print(f"(cap {args.cap} {'on' if caps_on else 'off'})\n")
            else:
                print(HELP + "\n")
            continue
        turn = chat.send(line)
        if turn.forecast is not None:
            print(_forecast_line(turn.forecast))
        _show(turn, floors, _cap_line(args.cap, caps, turn) if caps and caps_on else None)
        if args.save:
            meta = {"axis": axis.source, "turns": [t.to_json() for t in chat.turns]}
            saved = Transcript(turn.messages, "chat", args.save, "personaspace", None, lm.model_id)
            write_transcript(args.save, [dataclasses.replace(saved, meta=meta)])
    return 0
