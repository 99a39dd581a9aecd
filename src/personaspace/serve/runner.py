"""Run the app with uvicorn: in the foreground (the CLI) or in a background thread.

``ServerThread`` binds its own socket first (port 0 picks a free port), so tests and
benchmarks never race for a fixed port, and it stops the server on exit.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import uvicorn

from personaspace.errors import PersonaspaceError


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as err:
        sock.close()
        raise PersonaspaceError(
            f"cannot listen on {host}:{port} ({err.strerror})",
            fix="choose another port (0 picks a free one) or stop what uses it",
        ) from err
    return sock


def _config(app: Any, log_level: str, access_log: bool) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=5,
        lifespan="on",
    )


class ServerThread:
    """Serve ``app`` on ``host:port`` in a daemon thread for the ``with`` block.

    Example:
        >>> with ServerThread(create_app(engine)) as server:  # doctest: +SKIP
        ...     urllib.request.urlopen(server.url + "/health").status
        200
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app, self.host, self.port = app, host, port
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def __enter__(self) -> ServerThread:
        sock = _bind(self.host, self.port)
        self.port = int(sock.getsockname()[1])
        self.server = uvicorn.Server(_config(self.app, "warning", False))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise PersonaspaceError("the server did not start", fix="see its log")
            time.sleep(0.01)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=30)


def serve_forever(
    app: Any,
    host: str,
    port: int,
    *,
    access_log: bool = True,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve in the foreground until interrupted (Ctrl-C or SIGTERM stop it cleanly).

    ``on_ready(url)`` is called once the socket is bound (with the real port when ``port``
    is 0), before requests are served.
    """
    sock = _bind(host, port)
    if on_ready is not None:
        shown = f"[{host}]" if ":" in host else host
        on_ready(f"http://{shown}:{sock.getsockname()[1]}")
    # uvicorn shuts down cleanly on Ctrl-C, then re-raises the signal
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(_config(app, "info", access_log)).run(sockets=[sock])
