"""Chat templates that ship with personaspace, for base models that have none.

``gemma``: the Gemma turn format (``<start_of_turn>user ... <end_of_turn>``), used to
instruction-tune the bundled Gemma-3-270M base model (``personaspace tune --chat-template
gemma``).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from personaspace.errors import PersonaspaceError

BUILTIN_TEMPLATES: tuple[str, ...] = ("gemma",)


def read_chat_template(spec: str) -> str:
    """The Jinja text of a built-in template (by name) or of a template file.

    Example:
        >>> read_chat_template("gemma").count("<start_of_turn>")
        3
    """
    if spec in BUILTIN_TEMPLATES:
        return files(__package__).joinpath(f"{spec}.jinja").read_text(encoding="utf-8")
    path = Path(spec)
    if not path.is_file():
        raise PersonaspaceError(
            f"no such chat template: {spec}",
            fix=f"give a Jinja file or a built-in name ({', '.join(BUILTIN_TEMPLATES)})",
        )
    return path.read_text(encoding="utf-8")
