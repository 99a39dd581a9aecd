"""Export an axis as a llama.cpp control vector (GGUF, architecture ``controlvector``).

llama.cpp adds tensor ``direction.L`` to the output of decoder block ``L`` (0-based; block 0
cannot carry one) scaled by the user's ``--control-vector-scaled`` factor. We write the
axis per layer, optionally unit-normalised and multiplied by ``scale``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from personaspace.errors import PersonaspaceError
from personaspace.fileformat import atomic_path


def write_control_vector(
    path: str | Path,
    axis: torch.Tensor,
    layers: list[int],
    *,
    model_hint: str,
    normalize: bool = True,
    scale: float = 1.0,
) -> Path:
    """Write ``axis`` (``[len(layers), hidden]``) as ``direction.<layer>`` tensors.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "axis.gguf"
        >>> _ = write_control_vector(p, torch.ones(2, 4), [1, 2], model_hint="llama")
        >>> from gguf import GGUFReader
        >>> sorted(t.name for t in GGUFReader(p).tensors)
        ['direction.1', 'direction.2']
    """
    from gguf import GGUFWriter

    if axis.shape[0] != len(layers):
        raise PersonaspaceError("axis rows and layers differ", fix="pass one layer per row")
    target = Path(path)
    with atomic_path(target) as tmp:
        writer = GGUFWriter(str(tmp), "controlvector")
        writer.add_string("controlvector.model_hint", model_hint)
        kept = [(layer, row) for layer, row in zip(layers, axis) if layer >= 1]
        writer.add_uint32("controlvector.layer_count", len(kept))
        for layer, row in kept:
            vector = row.double()
            if normalize:
                vector = vector / vector.norm().clamp(min=1e-30)
            writer.add_tensor(
                f"direction.{layer}", (vector * scale).float().numpy().astype(np.float32)
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return target
