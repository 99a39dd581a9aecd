"""Architecture adapters: where a model keeps its decoder blocks, and its residual width.

One registry maps a config's ``model_type`` to the dotted path of its decoder-block list.
Everything that hooks the residual stream (capture, steering, capping) asks the adapter,
never the model, so layer lookup lives in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from personaspace.errors import PersonaspaceError

# model_type -> dotted path of the nn.ModuleList holding the decoder blocks.
LAYER_PATHS: dict[str, str] = {
    "llama": "model.layers",
    "mistral": "model.layers",
    "qwen2": "model.layers",
    "qwen3": "model.layers",
    "gemma": "model.layers",
    "gemma2": "model.layers",
    "gemma3_text": "model.layers",
    "gemma3": "model.language_model.layers",
    "phi3": "model.layers",
    "olmo2": "model.layers",
    "gpt2": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
}


@dataclass(frozen=True)
class ArchitectureAdapter:
    """How to reach the residual stream of one loaded model.

    Example:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
        ...                   num_hidden_layers=2, num_attention_heads=2)
        >>> adapter = adapter_for(LlamaForCausalLM(cfg))
        >>> (adapter.model_type, adapter.n_layers, adapter.hidden_size)
        ('llama', 2, 16)
    """

    model_type: str
    layers_path: str
    n_layers: int
    hidden_size: int

    def layers(self, model: nn.Module) -> nn.ModuleList:
        """The decoder blocks of ``model``, in order."""
        blocks = model.get_submodule(self.layers_path)
        assert isinstance(blocks, nn.ModuleList)
        return blocks

    def check_layers(self, layers: list[int] | None) -> list[int]:
        """Resolve ``None`` to all layers, allow negative indices, and reject out-of-range ones.

        Example:
            >>> ArchitectureAdapter("llama", "model.layers", 4, 8).check_layers([0, -1])
            [0, 3]
        """
        if layers is None:
            return list(range(self.n_layers))
        resolved: list[int] = []
        for layer in layers:
            index = layer + self.n_layers if layer < 0 else layer
            if not 0 <= index < self.n_layers:
                raise PersonaspaceError(
                    f"layer {layer} is out of range for this {self.model_type} model",
                    fix=f"choose layers from 0 to {self.n_layers - 1} (or negative, from the end)",
                )
            resolved.append(index)
        if len(set(resolved)) != len(resolved):
            raise PersonaspaceError(
                f"layers {layers} name the same layer twice", fix="list each layer once"
            )
        return resolved


def adapter_for(model: nn.Module) -> ArchitectureAdapter:
    """The adapter for a Hugging Face causal LM, or a one-line error if it is unsupported."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if config is None or model_type is None:
        raise PersonaspaceError(
            f"{type(model).__name__} has no Hugging Face config",
            fix="pass a transformers causal language model",
        )
    path = LAYER_PATHS.get(model_type)
    if path is None:
        raise PersonaspaceError(
            f"architecture '{model_type}' is not supported",
            fix=f"use one of: {', '.join(sorted(LAYER_PATHS))} (or add it to LAYER_PATHS)",
        )
    text_config = config.get_text_config()
    try:
        blocks = model.get_submodule(path)
    except AttributeError as err:
        raise PersonaspaceError(
            f"{type(model).__name__} ({model_type}) has no decoder blocks at '{path}'",
            fix="load it with AutoModelForCausalLM, not as a bare encoder or base model",
        ) from err
    n_layers = int(text_config.num_hidden_layers)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) != n_layers:
        raise PersonaspaceError(
            f"'{path}' of {type(model).__name__} does not hold {n_layers} decoder blocks",
            fix="report this model; its layout differs from the registered one",
        )
    return ArchitectureAdapter(
        model_type=model_type,
        layers_path=path,
        n_layers=n_layers,
        hidden_size=int(text_config.hidden_size),
    )


def block_output(output: object) -> torch.Tensor:
    """The residual-stream tensor in a decoder block's forward output (some return tuples).

    Example:
        >>> block_output((torch.ones(1), None)).tolist(), block_output(torch.zeros(1)).tolist()
        ([1.0], [0.0])
    """
    hidden = output[0] if isinstance(output, tuple) else output
    if not isinstance(hidden, torch.Tensor):
        raise TypeError(f"a decoder block returned {type(hidden).__name__}, not a tensor")
    return hidden
