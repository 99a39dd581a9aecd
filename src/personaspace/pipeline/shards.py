"""Finished shards on disk: one safetensors file each (vectors + the records as metadata).

A shard file is written atomically, so it either exists whole or not at all: a killed run
loses at most the shards in flight, and a restarted run redoes exactly those.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from personaspace.fileformat import save_vectors


def shard_path(out: Path, shard: str) -> Path:
    """``out/shards/role__pirate.safetensors`` for shard ``role/pirate``."""
    return out / "shards" / (shard.replace("/", "__") + ".safetensors")


def save_shard(
    out: Path,
    shard: str,
    records: list[dict[str, Any]],
    vectors: torch.Tensor,
    meta: dict[str, Any],
) -> None:
    """Write a finished shard (vectors ``[n, layers, hidden]`` stored as float16)."""
    save_vectors(
        shard_path(out, shard),
        {"response_mean": vectors.to(torch.float16)},
        {**meta, "shard": shard, "records": records},
    )


def load_shard(out: Path, shard: str) -> tuple[list[dict[str, Any]], torch.Tensor] | None:
    """The shard's records and vectors, or ``None`` if it is absent or unreadable."""
    path = shard_path(out, shard)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as handle:
            meta = json.loads((handle.metadata() or {}).get("personaspace", "{}"))
        vectors = load_file(str(path))["response_mean"]
    except (SafetensorError, OSError, ValueError, KeyError):
        return None
    return list(meta.get("records", [])), vectors


def shard_complete(out: Path, shard: str, item_ids: list[str]) -> bool:
    loaded = load_shard(out, shard)
    return loaded is not None and [r["id"] for r in loaded[0]] == item_ids
