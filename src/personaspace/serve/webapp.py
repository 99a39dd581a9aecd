"""The web app: ``/`` and its static files under ``/static`` (no API key needed)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


async def index() -> FileResponse:
    """The web app's page, sent with ``Cache-Control: no-cache``."""
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def add_web_app(app: FastAPI) -> None:
    """Serve the web app from ``app``."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
