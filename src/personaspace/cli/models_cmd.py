"""``personaspace models``: the bundled models and what is known about them."""

from __future__ import annotations

import argparse
import json
from typing import TypedDict

from personaspace.models.bundled import BUNDLED_MODELS, DEFAULT_MODEL
from personaspace.models.cache import cache_root, gguf_cache_dir, is_cached


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("models", help="list the bundled models")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run)


class ModelRow(TypedDict):
    alias: str
    default: bool
    kind: str
    licence: str
    installed: bool
    cached: bool
    parameters: int | None
    layers: int | None
    hidden_size: int | None


def describe(alias: str) -> ModelRow:
    """Installed/cached status and shape of a bundled model, read from its GGUF header."""
    bundled = BUNDLED_MODELS[alias]
    row: ModelRow = {
        "alias": alias,
        "default": alias == DEFAULT_MODEL,
        "kind": "chat" if bundled.chat_tuned else "base",
        "licence": bundled.licence,
        "installed": bundled.is_installed(),
        "cached": False,
        "parameters": None,
        "layers": None,
        "hidden_size": None,
    }
    if not bundled.is_installed():
        return row
    from gguf import GGUFReader

    path = bundled.locate_gguf(cache_root())
    row["cached"] = is_cached(gguf_cache_dir(path))
    reader = GGUFReader(path)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()

    def field(name: str) -> int:
        return int(reader.fields[f"{arch}.{name}"].parts[-1][0])

    row["layers"] = field("block_count")
    row["hidden_size"] = field("embedding_length")
    row["parameters"] = int(sum(int(t.n_elements) for t in reader.tensors))
    return row


def run(args: argparse.Namespace) -> int:
    rows = [describe(alias) for alias in BUNDLED_MODELS]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'alias':<24}{'kind':<6}{'installed':<11}{'cached':<8}{'params':>9}"
    header += f"{'layers':>8}{'hidden':>8}  licence"
    print(header)
    for r in rows:
        params = f"{r['parameters'] / 1e6:.0f}M" if r["parameters"] else "-"
        alias = f"{r['alias']}{' *' if r['default'] else ''}"
        print(
            f"{alias:<24}{r['kind']!s:<6}{'yes' if r['installed'] else 'no':<11}"
            f"{'yes' if r['cached'] else 'no':<8}{params:>9}{r['layers'] or '-':>8}"
            f"{r['hidden_size'] or '-':>8}  {r['licence']}"
        )
    print("* default model. 'cached': dequantized weights ready (loads in seconds).")
    return 0
