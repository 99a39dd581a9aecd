"""Model loading: bundled offline models, architecture adapters, the dequantization cache."""

from personaspace.models.adapters import ArchitectureAdapter, adapter_for
from personaspace.models.bundled import BUNDLED_MODELS, DEFAULT_MODEL, BundledModel
from personaspace.models.loading import LoadedModel, load_model

__all__ = [
    "BUNDLED_MODELS",
    "DEFAULT_MODEL",
    "ArchitectureAdapter",
    "BundledModel",
    "LoadedModel",
    "adapter_for",
    "load_model",
]
