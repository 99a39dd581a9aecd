"""``load_model``: one entry point for bundled aliases, local folders, GGUF files and hub ids."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from personaspace.errors import PersonaspaceError
from personaspace.models import cache
from personaspace.models.adapter_folder import (
    inject_saved_adapter,
    is_adapter_folder,
    read_adapter_config,
)
from personaspace.models.adapters import ArchitectureAdapter, adapter_for
from personaspace.models.bundled import BUNDLED_MODELS
from personaspace.models.device import (
    auto_batch_size,
    check_batch_size,
    resolve_device,
    resolve_dtype,
)
from personaspace.models.hub import hub_offline_reason

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class LoadedModel:
    """A causal LM ready for capture: model (eval mode), tokenizer and adapter.

    ``model_id`` is what files record as the model's identity; ``chat_tuned`` says whether
    conversations go through the tokenizer's chat template or the plain transcript format.
    """

    model: nn.Module
    tokenizer: Any
    adapter: ArchitectureAdapter
    model_id: str
    display_name: str
    chat_tuned: bool

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def kv_bytes_per_token(self) -> int:
        """Bytes of keys and values one token occupies in the cache, over all layers."""
        config = getattr(self.model, "config", None)
        getter = getattr(config, "get_text_config", None)
        text = getter() if callable(getter) else config
        heads = int(getattr(text, "num_attention_heads", 1) or 1)
        kv_heads = int(getattr(text, "num_key_value_heads", heads) or heads)
        head_dim = int(getattr(text, "head_dim", 0) or self.adapter.hidden_size // heads)
        element = torch.finfo(self.dtype).bits // 8
        return 2 * self.adapter.n_layers * kv_heads * head_dim * element

    def batch_size(self, requested: int | None, tokens: int) -> int:
        """``requested``, or (``None``) one that suits the device for sequences of ``tokens``:
        the KV cache, a block's activations and the fp32 logits of each row."""
        check_batch_size(requested)
        if requested is not None:
            return requested
        head: Any = getattr(self.model, "get_output_embeddings", lambda: None)()
        vocab = int(head.weight.shape[0]) if head is not None else 1
        activations = 8 * self.adapter.hidden_size * tokens * (torch.finfo(self.dtype).bits // 8)
        return auto_batch_size(
            self.device, self.kv_bytes_per_token() * tokens + activations + 8 * vocab
        )


def _bundled_names() -> str:
    return ", ".join(BUNDLED_MODELS)


def quiet_transformers() -> None:
    # Library code does not print: silence transformers' own warnings and progress bars.
    from transformers.utils import logging as hf_logging

    logging.getLogger("transformers").setLevel(logging.ERROR)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _from_folder(folder: Path, dtype: torch.dtype, device: str) -> tuple[nn.Module, Any]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as err:
        raise PersonaspaceError(
            f"{folder} has no readable config.json ({_first_line(err)})",
            fix="point at a Hugging Face model folder (config.json + weights) or a .gguf file",
        ) from err
    encoder_only = config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(
        config, "is_decoder", False
    )
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or encoder_only:
        raise PersonaspaceError(
            f"{folder} holds a '{config.model_type}' model, which is not a causal language model",
            fix="personaspace needs a decoder-only causal LM (e.g. Llama, Qwen, Gemma, GPT-2)",
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise PersonaspaceError(
            f"could not load the checkpoint in {folder} ({_first_line(err)})",
            fix="check that its weight and tokenizer files are complete (re-download or re-save)",
        ) from err
    return _on_device(model, device), tokenizer


def _from_gguf(path: Path, dtype: torch.dtype, device: str) -> tuple[nn.Module, Any]:
    folder = cache.gguf_cache_dir(path)
    if not cache.is_cached(folder):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(
                path.parent, gguf_file=path.name, dtype=torch.float32
            )
        except Exception as err:  # gguf raises many types for a corrupt file
            raise PersonaspaceError(
                f"could not read the GGUF file {path} ({_first_line(err)})",
                fix="check the file is a complete GGUF of a supported decoder-only model",
            ) from err
        cache.write_cache(folder, model, tokenizer)
    return _from_folder(folder, dtype, device)


def _from_hub(model_id: str, dtype: torch.dtype, device: str) -> tuple[nn.Module, Any]:
    reason = hub_offline_reason()
    if reason is not None:
        raise PersonaspaceError(
            f"'{model_id}' is not a bundled alias or local path, and the Hugging Face hub "
            f"is unreachable ({reason})",
            fix=f"use a bundled model ({_bundled_names()}), a local folder or a .gguf file",
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(model_id, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(model_id)
    except (OSError, ValueError) as err:
        raise PersonaspaceError(
            f"could not load '{model_id}' from the hub ({_first_line(err)})",
            fix="check the model id, your access to it, and HF_TOKEN",
        ) from err
    return _on_device(model, device), tokenizer


def _from_adapter_folder(folder: Path, dtype: torch.dtype, device: torch.device) -> LoadedModel:
    # A LoRA adapter (personaspace tune's final/): the base model, the adapter injected.
    base_spec = str(read_adapter_config(folder)["base_model_name_or_path"])
    if Path(base_spec).resolve() == folder.resolve():
        raise PersonaspaceError(f"the adapter in {folder} names itself as its base", fix="fix it")
    base = load_model(base_spec, dtype=dtype, device=device)
    inject_saved_adapter(base.model, folder)
    base.model.to(device)
    tokenizer = base.tokenizer
    if (folder / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(folder, local_files_only=True))
    chat = base.chat_tuned or getattr(tokenizer, "chat_template", None) is not None
    return LoadedModel(
        model=base.model,
        tokenizer=tokenizer,
        adapter=base.adapter,
        model_id=str(folder.resolve()),
        display_name=f"{base.display_name}+{folder.parent.name or folder.name}",
        chat_tuned=chat,
    )


def _on_device(model: nn.Module, device: str) -> nn.Module:
    return model.to(torch.device(device))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else err.__class__.__name__


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Left padding for batched generation, and a pad token where the tokenizer has none."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(spec: str) -> Any:
    """The tokenizer of a bundled alias or local folder, without keeping the model in memory.

    Example:
        >>> tok = load_tokenizer("smollm2-135m-instruct")  # doctest: +SKIP
        >>> tok.padding_side  # doctest: +SKIP
        'left'
    """
    from transformers import AutoTokenizer

    bundled = BUNDLED_MODELS.get(spec)
    if bundled is None:
        return load_model(spec).tokenizer
    folder = cache.gguf_cache_dir(bundled.locate_gguf(cache.cache_root()))
    if not cache.is_cached(folder):
        return load_model(spec).tokenizer  # writes the cache on the way
    return prepare_tokenizer(AutoTokenizer.from_pretrained(folder, local_files_only=True))


def load_model(
    spec: str,
    *,
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str = "cpu",
) -> LoadedModel:
    """Load a causal LM by bundled alias, local folder, ``.gguf`` file or hub id.

    Args:
        spec: ``smollm2-135m-instruct`` / ``gemma-3-270m`` (bundled, offline), a folder with
            ``config.json``, a ``.gguf`` file, or a hub id such as ``Qwen/Qwen3-0.6B``.
        dtype: weights dtype (fp32 by default: exact comparisons need it), or a name
            (``"auto"``, ``"bfloat16"``...; see ``personaspace.models.device``).
        device: ``"cpu"``, ``"cuda"``, ``"auto"``...

    Example:
        >>> lm = load_model("smollm2-135m-instruct")  # doctest: +SKIP
        >>> lm.adapter.n_layers, lm.adapter.hidden_size  # doctest: +SKIP
        (30, 576)
    """
    quiet_transformers()
    where = device if isinstance(device, torch.device) else resolve_device(device)
    if isinstance(dtype, str):
        dtype = resolve_dtype(dtype, where)[0]
    device = str(where)
    spec = spec.strip()
    if not spec:
        raise PersonaspaceError("the model spec is empty", fix=f"use one of: {_bundled_names()}")
    bundled = BUNDLED_MODELS.get(spec)
    path = Path(spec).expanduser()
    if bundled is not None:
        gguf = bundled.locate_gguf(cache.cache_root())
        model, tokenizer = _from_gguf(gguf, dtype, device)
        model_id, display, chat = bundled.alias, bundled.display_name, bundled.chat_tuned
    elif path.is_dir() and is_adapter_folder(path):
        return _from_adapter_folder(path, dtype, where)
    elif path.exists():
        if path.is_file() and path.suffix == ".gguf":
            model, tokenizer = _from_gguf(path, dtype, device)
        elif path.is_dir():
            model, tokenizer = _from_folder(path, dtype, device)
        else:
            raise PersonaspaceError(
                f"{path} is neither a .gguf file nor a model folder",
                fix="pass a .gguf file, a folder with config.json, or a bundled alias",
            )
        model_id, display = str(path.resolve()), path.stem
        chat = getattr(tokenizer, "chat_template", None) is not None
    elif spec.endswith(".gguf") or spec.startswith((".", "/", "~")):
        raise PersonaspaceError(f"no such file or folder: {spec}", fix="check the path")
    elif HUB_ID.match(spec):
        model, tokenizer = _from_hub(spec, dtype, device)
        model_id, display = spec, spec.split("/")[-1]
        chat = getattr(tokenizer, "chat_template", None) is not None
    else:
        raise PersonaspaceError(
            f"unknown model '{spec}'",
            fix=f"use a bundled alias ({_bundled_names()}), a local path, or a hub id org/name",
        )
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(
        model=model,
        tokenizer=prepare_tokenizer(tokenizer),
        adapter=adapter_for(model),
        model_id=model_id,
        display_name=display,
        chat_tuned=chat,
    )
