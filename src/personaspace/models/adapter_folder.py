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


def is_adapter_folder(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file()


def _saved_name(name: str) -> str:
    return _PEFT_PREFIX + name.replace(".default.", ".")


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
        if "lora_" in n
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

    Example:
        >>> inject_saved_adapter(base.model, Path("runs/tune-x/final"))  # doctest: +SKIP
    """
    from peft import LoraConfig, inject_adapter_in_model
    from safetensors.torch import load_file

    config = read_adapter_config(folder)
    lora = LoraConfig(
        r=int(config["r"]),
        lora_alpha=int(config["lora_alpha"]),
        lora_dropout=float(config.get("lora_dropout", 0.0)),
        target_modules=list(config["target_modules"]),
        bias="none",
        fan_in_fan_out=bool(config.get("fan_in_fan_out", False)),
    )
    try:
        inject_adapter_in_model(lora, model)
    except ValueError as err:
        raise PersonaspaceError(
            f"the adapter in {folder} does not fit its base model ({str(err)[:120]})",
            fix="load it with the base model it was trained from",
        ) from err
    saved = load_file(str(folder / ADAPTER_WEIGHTS))
    params = {_saved_name(n): p for n, p in model.named_parameters() if "lora_" in n}
    if set(saved) != set(params):
        raise PersonaspaceError(
            f"the adapter weights in {folder} do not match its config and base model",
            fix="re-save the adapter, or load it with the base model it was trained from",
        )
    with torch.no_grad():
        for name, param in params.items():
            param.data = saved[name].to(device=param.device, dtype=torch.float32)
    model.requires_grad_(False)
