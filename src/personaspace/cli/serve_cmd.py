"""``personaspace serve``: an OpenAI-compatible server with capping, and the live drift web app."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from personaspace.cli.common import add_model_options
from personaspace.errors import PersonaspaceError
from personaspace.monitor.forecast import Forecaster
from personaspace.runfolder import CAPPING_FILE, calibration_for
from personaspace.vectors.axis import Axis

DEFAULT_AXIS = Path("runs/axis-smollm2-135m-instruct-quick")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible API with capping, plus a live web app",
        description="Start an HTTP server: POST /v1/chat/completions (streaming too) and "
        "GET /v1/models for OpenAI clients, with a 'personaspace' extension to cap or steer "
        "per request and get each reply's axis projection; the web app at / charts the "
        "conversation's drift live. Binds to 127.0.0.1 unless --host and an API key are given.",
    )
    parser.add_argument(
        "--axis",
        default=None,
        help=f"axis run folder or axis file (default: {DEFAULT_AXIS} if it exists)",
    )
    parser.add_argument("--model", default=None, help="model spec (default: the axis's model)")
    parser.add_argument(
        "--capping", default=None, help=f"capping config (default: AXIS/{CAPPING_FILE} if any)"
    )
    parser.add_argument(
        "--cap",
        default=None,
        metavar="EXPERIMENT",
        help="cap every request by default (e.g. layers_11:19-p25); requests may override",
    )
    parser.add_argument(
        "--cap-when-forecast",
        default=None,
        metavar="THRESHOLD",
        help="apply a request's cap only when the reply's forecast is below THRESHOLD (a "
        "projection, or 'floor': the forecaster's calibrated floor); needs --forecaster",
    )
    parser.add_argument(
        "--forecaster", default=None, metavar="FILE", help="from personaspace forecast fit"
    )
    parser.add_argument(
        "--layers", default=None, help="layers to project at (default: the axis's middle one)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    parser.add_argument(
        "--api-key",
        default=None,
        help="bearer token clients must send (default: $PERSONASPACE_API_KEY); "
        "required with a non-loopback --host",
    )
    parser.add_argument("--temperature", type=float, default=0.0, help="default; 0 = greedy")
    parser.add_argument("--top-p", type=float, default=1.0, help="default nucleus mass")
    parser.add_argument("--max-tokens", type=int, default=1024, help="largest max_tokens allowed")
    parser.add_argument(
        "--default-max-tokens", type=int, default=256, help="when a request sets none"
    )
    parser.add_argument("--max-messages", type=int, default=128, help="messages per request")
    parser.add_argument("--max-body-kib", type=int, default=1024, help="request body size")
    parser.add_argument(
        "--max-pending", type=int, default=64, help="queued generations before a 429"
    )
    parser.add_argument("--no-access-log", action="store_true", help="do not log each request")
    add_model_options(parser, batch_size=False)
    parser.set_defaults(
        run=run_serve, param_flags={"host": "--host", "port": "--port", "default_cap": "--cap"}
    )


def _axis_path(option: str | None) -> Path:
    if option is not None:
        return Path(option)
    if DEFAULT_AXIS.exists():
        return DEFAULT_AXIS
    raise PersonaspaceError(
        f"no --axis given and {DEFAULT_AXIS} does not exist",
        fix="pass --axis RUN_FOLDER (build one with `personaspace axis`)",
    )


def _capping_path(option: str | None, axis: Path) -> Path | None:
    if option is not None:
        if not Path(option).is_file():
            raise PersonaspaceError(f"no such capping config: {option}", fix="check the path")
        return Path(option)
    candidate = axis / CAPPING_FILE
    return candidate if axis.is_dir() and candidate.is_file() else None


def _forecaster(args: argparse.Namespace, axis: Axis) -> tuple[Forecaster, str] | None:
    """``--forecaster`` and ``--cap-when-forecast`` checked (with the axis) before the model
    loads; ``None`` when neither is given."""
    from personaspace.monitor.forecast import load_forecaster, threshold_for

    threshold, path = getattr(args, "cap_when_forecast", None), getattr(args, "forecaster", None)
    if threshold is None and path is None:
        return None
    if threshold is None or path is None:
        raise PersonaspaceError(
            "--cap-when-forecast and --forecaster go together",
            fix="give both, e.g. --forecaster F.safetensors --cap-when-forecast floor",
        )
    forecaster = load_forecaster(path)
    threshold_for(threshold, forecaster)
    forecaster.check_axis(axis)
    return forecaster, threshold


def run_serve(args: argparse.Namespace) -> int:
    from personaspace.cli.common import (
        check_model_options,
        load_model_as_asked,
        model_spec_for,
        parse_layers,
    )
    from personaspace.runfolder import load_axis
    from personaspace.serve import (
        API_KEY_ENV,
        Limits,
        ServeEngine,
        check_bind,
        create_app,
        serve_forever,
    )
    from personaspace.vectors.capping import load_capping_config

    # Check everything cheap before loading the model.
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    check_bind(args.host, api_key)
    check_model_options(args)
    if not 0 <= args.port <= 65535:
        raise PersonaspaceError(f"--port {args.port} is not a port", fix="use 0..65535")
    limits = Limits(
        max_body_bytes=args.max_body_kib * 1024,
        max_messages=args.max_messages,
        max_tokens=args.max_tokens,
        default_max_tokens=args.default_max_tokens,
        max_pending=args.max_pending,
    )
    layers = parse_layers(args.layers)
    axis_path = _axis_path(args.axis)
    axis = load_axis(axis_path)
    capping_path = _capping_path(args.capping, axis_path)
    capping = load_capping_config(capping_path) if capping_path else None
    calibration = calibration_for(axis_path)
    gating = _forecaster(args, axis)
    spec = model_spec_for(axis, args.model)
    lm = load_model_as_asked(spec, args)
    gate = None
    if gating is not None:
        from personaspace.monitor.forecast import ForecastGate, threshold_for

        forecaster, threshold = gating
        forecaster.check(lm, axis)
        gate = ForecastGate(forecaster, threshold_for(threshold, forecaster))
    engine = ServeEngine(
        lm,
        axis,
        calibration=calibration,
        capping=capping,
        default_cap=args.cap,
        layers=layers,
        temperature=args.temperature,
        top_p=args.top_p,
        names=[spec],
        cap_gate=gate,
    )
    app = create_app(engine, limits=limits, api_key=api_key)
    print(f"model {lm.model_id}; axis {axis.source}; projecting at layers {engine.layers}")
    if capping is None:
        print("no capping config: requests cannot cap (run `personaspace calibrate RUN`)")
    else:
        default = f"default cap {args.cap}" if args.cap else "capping off by default"
        print(f"capping experiments: {', '.join(capping.ids)} ({default})")
    if calibration is None:
        print("no calibration: no thresholds on the chart and no steering")
    if gate is not None:
        print(f"caps apply only to replies forecast below {gate.threshold:.3f} ({args.forecaster})")
    auth = "bearer API key required" if api_key else "no API key"

    def ready(url: str) -> None:
        print(f"web app and API at {url}/ ({auth}); Ctrl-C stops", flush=True)

    serve_forever(app, args.host, args.port, access_log=not args.no_access_log, on_ready=ready)
    return 0
