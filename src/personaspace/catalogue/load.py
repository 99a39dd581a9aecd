"""Load the built-in catalogue and merge (or replace) sections from a user folder.

A catalogue folder, built-in or the user's, may hold any of::

    roles/*.json        lists of roles          traits/*.json     lists of traits
    scenarios/*.json    lists of scripts        questions.json    extraction questions
    task_questions.json task-type questions     validation/*.json validation transcripts
    modulation.json     persona-modulation      capability.json   capability items
    default.json        {"prompts": [...]}      rubrics.json      judge templates
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from personaspace.catalogue import validate as v
from personaspace.catalogue.types import Catalogue
from personaspace.errors import PersonaspaceError

BUILTIN_DIR = Path(__file__).resolve().parent / "data"
LIST_SECTIONS: dict[str, tuple[tuple[str, ...], str, Any]] = {
    # section: (locations, key field, parser); a location ending in "/" is a folder of files
    "roles": (("roles/",), "name", v.parse_role),
    "traits": (("traits/",), "name", v.parse_trait),
    "scenarios": (("scenarios/",), "id", v.parse_scenario),
    "questions": (("questions.json", "task_questions.json"), "id", v.parse_question),
    "modulation": (("modulation.json",), "id", v.parse_modulation),
    "capability": (("capability.json",), "id", v.parse_capability),
}
OTHER_FILES = {"default.json", "rubrics.json"}


def _read(path: Path, root: Path) -> Any:
    return read_json(path, str(path.relative_to(root)))


def read_json(path: Path, label: str) -> Any:
    """A catalogue file's JSON; a syntax or encoding error is one line naming ``label``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PersonaspaceError(
            f"{label}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})",
            fix="fix the JSON syntax",
        ) from err
    except UnicodeDecodeError as err:
        raise PersonaspaceError(f"{label}: not UTF-8 text", fix="save it as UTF-8") from err


def _files(root: Path, location: str) -> list[Path]:
    if location.endswith("/"):
        folder = root / location.rstrip("/")
        return sorted(folder.glob("*.json")) if folder.is_dir() else []
    path = root / location
    return [path] if path.is_file() else []


def read_folder(root: Path) -> dict[str, Any]:
    """Parse every section present in ``root``; absent sections are simply not returned."""
    known = {
        loc for locs, _, _ in LIST_SECTIONS.values() for loc in locs if not loc.endswith("/")
    } | OTHER_FILES
    for stray in sorted(root.glob("*.json")):
        if stray.name not in known:
            raise PersonaspaceError(
                f"{stray.name}: not a catalogue file",
                fix=f"name it one of {', '.join(sorted(known))} or put it under roles/, "
                "traits/ or scenarios/",
            )
    sections: dict[str, Any] = {}
    for section, (locations, key, parse) in LIST_SECTIONS.items():
        files = [f for location in locations for f in _files(root, location)]
        if not files:
            continue
        entries: dict[str, Any] = {}
        seen_in: dict[str, str] = {}
        for path in files:
            label = str(path.relative_to(root))
            for entry in v.parse_list(_read(path, root), label, key, parse):
                name = getattr(entry, key)
                if name in entries:
                    raise PersonaspaceError(
                        f"{label}: {key} {name!r} is already used in {seen_in[name]}",
                        fix=f"give each {section[:-1]} a unique {key}",
                    )
                entries[name], seen_in[name] = entry, label
        sections[section] = entries
    if (root / "default.json").is_file():
        sections["default_prompts"] = v.parse_default(
            _read(root / "default.json", root), "default.json"
        )
    if (root / "rubrics.json").is_file():
        sections["rubrics"] = v.parse_rubrics(_read(root / "rubrics.json", root), "rubrics.json")
    return sections


def load_catalogue(user_dir: str | Path | None = None, *, replace: bool = False) -> Catalogue:
    """The built-in catalogue, optionally combined with a user folder in the same format.

    Args:
        user_dir: a folder laid out like the built-in catalogue (any subset of sections).
        replace: ``False`` merges (user entries are added; a user entry with a built-in
            name replaces that entry); ``True`` replaces each section the folder provides.

    Example:
        >>> cat = load_catalogue()
        >>> "therapist" in cat.roles and len(cat.roles) >= 275
        True
    """
    sections = read_folder(BUILTIN_DIR)
    sources = ["builtin"]
    if user_dir is not None:
        folder = Path(user_dir).expanduser()
        if not folder.is_dir():
            raise PersonaspaceError(
                f"catalogue folder {folder} does not exist", fix="check the path"
            )
        user = read_folder(folder)
        if not user:
            raise PersonaspaceError(
                f"{folder} holds no catalogue files",
                fix="add roles/*.json, traits/*.json, questions.json, ... (docs/catalogue.md)",
            )
        for section, entries in user.items():
            if replace:
                sections[section] = entries
            elif section == "default_prompts":
                builtin = sections.get(section, ())
                sections[section] = builtin + tuple(p for p in entries if p not in builtin)
            else:  # user entries are added; the same name replaces the built-in entry
                sections[section] = {**sections.get(section, {}), **entries}
        sources.append(str(folder))
    return Catalogue(
        roles=sections.get("roles", {}),
        traits=sections.get("traits", {}),
        questions=sections.get("questions", {}),
        scenarios=sections.get("scenarios", {}),
        modulation=sections.get("modulation", {}),
        capability=sections.get("capability", {}),
        default_prompts=sections.get("default_prompts", ()),
        rubrics=sections.get("rubrics", {}),
        sources=tuple(sources),
    )
