"""``personaspace serve``: an OpenAI-compatible server with capping, and a live drift web app.

``ServeEngine`` holds the model, axis, calibration and capping config; ``create_app`` wraps
it in a FastAPI app (OpenAI routes, web-app routes, static files); ``ServerThread`` runs
that app in the background (tests, benchmarks), ``serve_forever`` in the foreground (CLI).
"""

from personaspace.serve.app import create_app
from personaspace.serve.engine import ServeEngine, TurnPlan
from personaspace.serve.errors import APIError
from personaspace.serve.guard import API_KEY_ENV, Limits, check_bind, is_loopback
from personaspace.serve.runner import ServerThread, serve_forever

__all__ = [
    "API_KEY_ENV",
    "APIError",
    "Limits",
    "ServeEngine",
    "ServerThread",
    "TurnPlan",
    "check_bind",
    "create_app",
    "is_loopback",
    "serve_forever",
]
