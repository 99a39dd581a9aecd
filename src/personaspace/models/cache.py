"""Dequantize a GGUF once and keep it as a plain safetensors checkpoint.

transformers dequantizes GGUF weights to fp32 on every load (slow, ~10 s for 135M
parameters here). The first load writes the result as an ordinary Hugging Face folder
(config, ``model.safetensors``, tokenizer); later loads read that folder in about a second.
The folder is written under a temporary name and renamed when complete, so a killed
first load never leaves a half-written cache behind.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from safetensors.torch import save_model
from torch import nn

CACHE_ENV = "PERSONASPACE_CACHE"
COMPLETE_MARKER = "personaspace-complete"


def cache_root() -> Path:
    """The cache folder: ``$PERSONASPACE_CACHE`` or ``~/.cache/personaspace``.

    Example:
        >>> import os
        >>> os.environ["PERSONASPACE_CACHE"] = "/tmp/ps-cache"
        >>> str(cache_root())
        '/tmp/ps-cache'
        >>> del os.environ["PERSONASPACE_CACHE"]
    """
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "personaspace"


def gguf_cache_dir(gguf_path: Path, root: Path | None = None) -> Path:
    """Where the dequantized copy of ``gguf_path`` lives (keyed by path, size and mtime)."""
    stat = gguf_path.stat()
    key = f"{gguf_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return (root or cache_root()) / "dequantized" / f"{gguf_path.stem}-{digest}"


def is_cached(folder: Path) -> bool:
    """Whether ``folder`` is a complete dequantized checkpoint."""
    return (folder / COMPLETE_MARKER).is_file()


def write_cache(folder: Path, model: nn.Module, tokenizer: Any) -> None:
    """Save ``model`` and ``tokenizer`` to ``folder`` atomically (temp folder, then rename)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        # transformers refuses save_pretrained on a GGUF-loaded model; the weights are plain
        # fp32 tensors by now, so write them and a config without the "gguf" quantization entry.
        config: Any = copy.deepcopy(model.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"))  # handles tied embeddings
        tokenizer.save_pretrained(tmp)
        (tmp / COMPLETE_MARKER).write_text("ok\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
