"""A LoRA adapter folder as a model: ``adapter_config.json`` + ``adapter_model.safetensors``.

``personaspace tune`` writes its LoRA result this way (the layout peft's
``PeftModel.from_pretrained`` reads, so other tools load it too), with the base model's
spec in ``base_model_name_or_path`` and, when training changed the tokenizer (a chat
template), the tokenizer files beside it. ``load_model`` loads the base and injects the
adapter in place, unmerged: the loaded model computes exactly what the trained one did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from personaspace.errors import PersonaspaceError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."
# the name peft gives the trained embedding rows (``...token_adapter.trainable_tokens_delta``)
TOKEN_DELTA = "trainable_tokens_delta"


def is_adapter_weight(name: str) -> bool:
    """Whether parameter ``name`` belongs to the adapter: LoRA matrices or trained token rows.

    Example:
        >>> is_adapter_weight("model.layers.0.self_attn.q_proj.lora_A.default.weight")
        True
        >>> is_adapter_weight("model.embed_tokens.token_adapter.base_layer.weight")
        False
    """
    return "lora_" in name or TOKEN_DELTA in name


def peft_lora_config(config: dict[str, Any]) -> Any:
    """peft's ``LoraConfig`` for an adapter's settings as ``lora_config`` records them.

    Example:
        >>> peft_lora_config({"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}).r
        4
    """
    from peft import LoraConfig

    tokens = config.get("trainable_token_indices")
    return LoraConfig(
        r=int(config["r"]),
        lora_alpha=int(config["lora_alpha"]),
        lora_dropout=float(config.get("lora_dropout", 0.0)),
        target_modules=list(config["target_modules"]),
        bias="none",
        fan_in_fan_out=bool(config.get("fan_in_fan_out", False)),
        trainable_token_indices=[int(t) for t in tokens] if tokens else None,
    )


def is_adapter_folder(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file()


def _saved_name(name: str) -> str:
    # peft drops the adapter's name: ``lora_A.default.weight`` -> ``lora_A.weight``,
    # ``trainable_tokens_delta.default`` -> ``trainable_tokens_delta``
    return _PEFT_PREFIX + name.replace(".default.", ".").removesuffix(".default")


def save_adapter(
    folder: Path, model: nn.Module, lora: dict[str, Any], base: str, extra: dict[str, Any]
) -> None:
    """Write ``model``'s LoRA weights and config to ``folder`` (which must not exist yet).

    ``lora`` holds peft's ``r``, ``lora_alpha``, ``lora_dropout``, ``target_modules``;
    ``base`` is the spec the base model loads from; ``extra`` lands in the config under
    ``personaspace``.

    Example:
        >>> save_adapter(Path("runs/tune-x/final"), lm.model, lora, "smollm2-135m-instruct",
        ...              {})  # doctest: +SKIP
    """
    from safetensors.torch import save_file

    weights = {
        _saved_name(n): p.detach().cpu().contiguous()
        for n, p in model.named_parameters()
        if is_adapter_weight(n)
    }
    if not weights:
        raise PersonaspaceError("the model has no LoRA weights to save", fix="add an adapter")
    folder.mkdir(parents=True)
    save_file(weights, str(folder / ADAPTER_WEIGHTS))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        **lora,
        "personaspace": extra,
    }
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")


def read_adapter_config(folder: Path) -> dict[str, Any]:
    """The adapter's config, refusing one that is not a LoRA adapter with a base model."""
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PersonaspaceError(
            f"{folder / ADAPTER_CONFIG} is not readable JSON", fix="re-save the adapter"
        ) from err
    if config.get("peft_type") != "LORA" or not config.get("base_model_name_or_path"):
        raise PersonaspaceError(
            f"{folder} is not a LoRA adapter with a base model",
            fix="point at a folder `personaspace tune` wrote (its final/ or a checkpoint export)",
        )
    return dict(config)


def inject_saved_adapter(model: nn.Module, folder: Path) -> None:
    """Inject the adapter saved in ``folder`` into ``model`` in place, unmerged, frozen.

    Trained token rows (``trainable_token_indices``) are written into the input embedding
    (and so into a tied output head), in its dtype: what peft's wrapper computes, without
    it copying the whole embedding matrix at every forward pass.

    Example:
        >>> inject_saved_adapter(base.model, Path("runs/tune-x/final"))  # doctest: +SKIP
    """
    from peft import inject_adapter_in_model
    from safetensors.torch import load_file

    config = read_adapter_config(folder)
    tokens = [int(t) for t in config.get("trainable_token_indices") or []]
    lora = peft_lora_config({**config, "trainable_token_indices": None})
    try:
        inject_adapter_in_model(lora, model)
    except ValueError as err:
        raise PersonaspaceError(
            f"the adapter in {folder} does not fit its base model ({str(err)[:120]})",
            fix="load it with the base model it was trained from",
        ) from err
    saved = load_file(str(folder / ADAPTER_WEIGHTS))
    rows = [saved.pop(n) for n in list(saved) if TOKEN_DELTA in n]
    params = {_saved_name(n): p for n, p in model.named_parameters() if is_adapter_weight(n)}
    if set(saved) != set(params) or len(rows) != bool(tokens):
        raise PersonaspaceError(
            f"the adapter weights in {folder} do not match its config and base model",
            fix="re-save the adapter, or load it with the base model it was trained from",
        )
    with torch.no_grad():
        for name, param in params.items():
            param.data = saved[name].to(device=param.device, dtype=torch.float32)
        if tokens:
            _write_rows(model, tokens, rows[0], folder)
    model.requires_grad_(False)


def _write_rows(model: nn.Module, tokens: list[int], values: torch.Tensor, folder: Path) -> None:
    weight = model.get_input_embeddings().weight  # type: ignore[operator]
    if values.shape != (len(tokens), weight.shape[1]) or max(tokens) >= weight.shape[0]:
        raise PersonaspaceError(
            f"the trained token rows in {folder} do not fit the base model's embedding",
            fix="load it with the base model it was trained from",
        )
    index = torch.tensor(tokens, device=weight.device)
    weight.index_copy_(0, index, values.to(weight))
