"""Reaching the Hugging Face hub: fail within seconds when it cannot be reached."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

HUB_TIMEOUT_S = 3.0


def hub_endpoint() -> str:
    """The hub URL transformers would use (``HF_ENDPOINT`` or the public hub)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_offline_reason(timeout_s: float = HUB_TIMEOUT_S) -> str | None:
    """Why the hub cannot be used now, or ``None`` if a TCP connection to it succeeds.

    Offline mode (``HF_HUB_OFFLINE=1`` or ``TRANSFORMERS_OFFLINE=1``) answers at once; otherwise
    one connection attempt bounded by ``timeout_s`` decides, so a blocked network never hangs.

    Example:
        >>> import os
        >>> os.environ["HF_HUB_OFFLINE"] = "1"
        >>> hub_offline_reason()
        'HF_HUB_OFFLINE is set'
        >>> del os.environ["HF_HUB_OFFLINE"]
    """
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}:
            return f"{var} is set"
    url = urlparse(hub_endpoint())
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as err:
        return f"cannot connect to {host}:{port} ({err.__class__.__name__})"
