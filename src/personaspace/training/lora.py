"""LoRA adapters through peft: settings, target modules checked against the architecture.

The adapter is injected into the model in place (``peft.inject_adapter_in_model``), so the
decoder blocks stay where ``ArchitectureAdapter`` finds them and every capture,
intervention and generation path works on the model being trained unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from personaspace.errors import PersonaspaceError
from personaspace.models.adapter_folder import is_adapter_weight, peft_lora_config

# Attention projections to adapt when none are named: query and value, or the fused
# projection where an architecture has one (Phi-3, GPT-2, GPT-NeoX).
DEFAULT_TARGETS: tuple[tuple[str, ...], ...] = (
    ("q_proj", "v_proj"),
    ("qkv_proj",),
    ("c_attn",),
    ("query_key_value",),
)


@dataclass(frozen=True)
class LoraSettings:
    """Rank, scaling (``alpha / rank``), dropout, the module names to adapt and the token
    ids whose embedding rows train too (peft's trainable tokens: a base model's chat
    special tokens, never seen in pre-training, get rows it can learn to predict)."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None
    trainable_tokens: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["target_modules"] = list(self.target_modules) if self.target_modules else None
        data["trainable_tokens"] = list(self.trainable_tokens)
        return data


def adaptable_names(model: nn.Module) -> list[str]:
    """The last name components of the model's linear (and GPT-2 Conv1D) layers.

    Example:
        >>> adaptable_names(nn.Sequential(nn.Linear(2, 2)))
        ['0']
    """
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def resolve_targets(model: nn.Module, targets: tuple[str, ...] | None) -> tuple[str, ...]:
    """``targets``, checked to exist in ``model``; or the default attention projections.

    Example:
        >>> resolve_targets(nn.Sequential(nn.Linear(2, 2)), ("k_proj",))
        Traceback (most recent call last):
        personaspace.errors.PersonaspaceError: LoRA target module 'k_proj' does not exist in this architecture (its linear layers: 0): name one of them with --lora-targets
    """  # noqa: E501
    available = adaptable_names(model)
    if targets is None:
        for candidate in DEFAULT_TARGETS:
            if set(candidate) <= set(available):
                return candidate
        raise PersonaspaceError(
            "no default LoRA targets (attention projections) found in this architecture",
            fix=f"name modules with --lora-targets (its linear layers: {', '.join(available)})",
            param="target_modules",
        )
    for name in targets:
        if name not in available:
            raise PersonaspaceError(
                f"LoRA target module '{name}' does not exist in this architecture "
                f"(its linear layers: {', '.join(available)})",
                fix="name one of them with --lora-targets",
                param="target_modules",
            )
    return targets


def check_settings(settings: LoraSettings) -> None:
    """Refuse a rank below 1, a non-positive alpha or a dropout outside [0, 1)."""
    if settings.rank < 1:
        raise PersonaspaceError(f"rank is {settings.rank}", fix="use 1 or more", param="rank")
    if not settings.alpha > 0:
        raise PersonaspaceError(f"alpha is {settings.alpha}", fix="use > 0", param="alpha")
    if not 0 <= settings.dropout < 1:
        raise PersonaspaceError(
            f"dropout is {settings.dropout}", fix="use a value in [0, 1)", param="dropout"
        )
    if len(set(settings.trainable_tokens)) != len(settings.trainable_tokens):
        raise PersonaspaceError(
            f"trainable tokens repeat: {list(settings.trainable_tokens)}",
            fix="name each token once",
            param="trainable_tokens",
        )


def add_lora(model: nn.Module, settings: LoraSettings) -> tuple[str, ...]:
    """Inject a LoRA adapter into ``model`` in place; only its weights train afterwards.

    Returns the target modules used. The adapter's initial weights come from torch's global
    RNG (seed it first for a reproducible start).

    Example:
        >>> torch.manual_seed(0)  # doctest: +SKIP
        >>> add_lora(lm.model, LoraSettings(rank=4))  # doctest: +SKIP
        ('q_proj', 'v_proj')
    """
    from peft import inject_adapter_in_model

    check_settings(settings)
    targets = resolve_targets(model, settings.target_modules)
    config = peft_lora_config(lora_config(settings, targets, transposed(model, targets)))
    model.requires_grad_(False)
    inject_adapter_in_model(config, model)
    for name, param in model.named_parameters():
        if is_adapter_weight(name):
            param.data = param.data.float()  # adapters train in fp32 on a bf16 base
        param.requires_grad_(is_adapter_weight(name))
    return targets


def transposed(model: nn.Module, targets: tuple[str, ...]) -> bool:
    """Whether the targets store their weight as ``[in, out]`` (GPT-2's Conv1D)."""
    return any(
        type(m).__name__ == "Conv1D" and name.rsplit(".", 1)[-1] in targets
        for name, m in model.named_modules()
    )


def lora_config(
    settings: LoraSettings, targets: tuple[str, ...], fan_in_fan_out: bool = False
) -> dict[str, Any]:
    """The adapter's settings as ``adapter_config.json`` records them (peft's names)."""
    return {
        "r": settings.rank,
        "lora_alpha": settings.alpha,
        "lora_dropout": settings.dropout,
        "target_modules": sorted(targets),
        "fan_in_fan_out": fan_in_fan_out,
        "trainable_token_indices": list(settings.trainable_tokens) or None,
    }


def token_ids(tokenizer: Any, names: Sequence[str]) -> tuple[int, ...]:
    """The vocabulary ids of tokens named as the tokenizer spells them (``<end_of_turn>``),
    refusing a name that is not one token of its vocabulary.

    Example:
        >>> token_ids(lm.tokenizer, ["<start_of_turn>", "<end_of_turn>"])  # doctest: +SKIP
        (105, 106)
    """
    vocab = tokenizer.get_vocab()
    missing = [n for n in names if n not in vocab]
    if missing:
        raise PersonaspaceError(
            f"--train-tokens: {', '.join(missing)} is not a token of this model's vocabulary",
            fix="name tokens as the tokenizer spells them, e.g. <end_of_turn>",
        )
    return tuple(int(vocab[n]) for n in names)
