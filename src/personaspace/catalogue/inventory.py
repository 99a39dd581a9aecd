"""A personality inventory: Likert statements per trait, their keying and the answer options.

The built-in inventory (``data/inventory/big_five.json``) is a Big Five inventory written for
personaspace: 50 first-person statements, 10 per trait, half of each trait reverse-keyed. A
file in the same format can replace it (``personaspace inventory --inventory FILE``)::

    {"name": "...", "instruction": "Statement: \\"{statement}\\" ... {options}.",
     "options": [{"label": "1", "value": 1, "text": "strongly disagree"}, ...],
     "traits": [{"name": "extraversion", "catalogue_trait": "extraverted",
                 "opposite": "introverted"}, ...],
     "items": [{"id": "E01", "trait": "extraversion", "keyed": 1, "text": "..."}, ...]}

``keyed`` is ``1`` when agreeing means more of the trait and ``-1`` when it means less (a
reverse-keyed item: its answer is mirrored, ``low + high - value``). A trait's
``catalogue_trait`` names the catalogue trait whose positive prompts ask for more of it;
``opposite`` (optional) one whose positive prompts ask for less. ``content_free`` (optional)
lists statements that say nothing (``"N/A"``, ``""``): asked under each prompt, their answers
measure the prompt's bias over the options, which calibration divides out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from personaspace.catalogue.load import read_json
from personaspace.errors import PersonaspaceError

BUILTIN_INVENTORY = Path(__file__).resolve().parent / "data" / "inventory" / "big_five.json"
_FIX = "see docs/inventory.md for the inventory format"


@dataclass(frozen=True)
class LikertOption:
    """One answer option: the ``label`` the model writes, its ``value`` and its meaning."""

    label: str
    value: float
    text: str


@dataclass(frozen=True)
class InventoryItem:
    """A statement of one trait's scale; ``keyed`` is ``1`` (agree = more) or ``-1``."""

    id: str
    trait: str
    text: str
    keyed: int


@dataclass(frozen=True)
class InventoryScale:
    """A trait the inventory measures, and the catalogue traits whose prompts move it."""

    name: str
    catalogue_trait: str
    opposite: str | None = None


@dataclass(frozen=True)
class Inventory:
    """Statements, answer options and the prompt that asks one statement.

    Example:
        >>> inv = load_inventory()
        >>> len(inv.items), [s.name for s in inv.scales][:2]
        (50, ['openness', 'conscientiousness'])
        >>> inv.keyed_value(2.0, -1)  # a reverse-keyed "disagree" on a 1..5 scale
        4.0
    """

    name: str
    instruction: str
    options: tuple[LikertOption, ...]
    scales: tuple[InventoryScale, ...]
    items: tuple[InventoryItem, ...]
    source: str
    content_free: tuple[str, ...] = ()
    order: str = "forward"

    @property
    def low(self) -> float:
        return min(o.value for o in self.options)

    @property
    def high(self) -> float:
        return max(o.value for o in self.options)

    def scale(self, name: str) -> InventoryScale:
        """The scale called ``name``, refusing an unknown one."""
        for scale in self.scales:
            if scale.name == name:
                return scale
        known = ", ".join(s.name for s in self.scales)
        raise PersonaspaceError(
            f"the inventory has no trait {name!r}", fix=f"use one of: {known}", param="scales"
        )

    def items_of(self, scale: str) -> tuple[InventoryItem, ...]:
        """The items of one scale, in file order."""
        return tuple(i for i in self.items if i.trait == scale)

    def keyed_value(self, value: float, keyed: int) -> float:
        """An answer's value as the trait's amount: mirrored for a reverse-keyed item."""
        return value if keyed > 0 else self.low + self.high - value

    def question(self, item: InventoryItem) -> str:
        """The user message that asks ``item``.

        Example:
            >>> inv = load_inventory()
            >>> print(inv.question(inv.items[0]).splitlines()[1][:37])
            How well does this statement describe
        """
        return self.ask(item.text)

    def ask(self, statement: str) -> str:
        """The user message that asks ``statement`` (an item's text or a content-free one)."""
        options = ", ".join(f"{o.label} = {o.text}" for o in self.options)
        return self.instruction.format(statement=statement, options=options)

    def reversed(self) -> Inventory:
        """The same inventory with the options' meanings in reverse order under the same
        labels (``1 = strongly agree`` ... ``5 = strongly disagree``): asked both ways, an
        answer that follows the label's position and not the statement cancels out.

        Example:
            >>> inv = load_inventory().reversed()
            >>> inv.order, inv.options[0].label, inv.options[0].value, inv.options[0].text
            ('reversed', '1', 5.0, 'strongly agree')
            >>> inv.reversed().options == load_inventory().options
            True
        """
        flipped = tuple(
            LikertOption(o.label, m.value, m.text)
            for o, m in zip(self.options, reversed(self.options))
        )
        order = "forward" if self.order == "reversed" else "reversed"
        return replace(self, options=flipped, order=order)


def _need(entry: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in entry:
        raise PersonaspaceError(f"{where} has no {key!r}", fix=f"add it; {_FIX}")
    value = entry[key]
    if not isinstance(value, kind) or isinstance(value, bool) or value == "":
        raise PersonaspaceError(f"{where}: {key!r} is {value!r}", fix=f"give a valid {key}; {_FIX}")
    return value


def _list(data: dict[str, Any], key: str, label: str) -> list[dict[str, Any]]:
    value = _need(data, key, list, label)
    for index, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise PersonaspaceError(
                f"{label}: {key}[{index}] is not an object", fix=f"give objects; {_FIX}"
            )
    if not value:
        raise PersonaspaceError(f"{label}: {key!r} is empty", fix=f"add some; {_FIX}")
    return value


def _options(data: dict[str, Any], label: str) -> tuple[LikertOption, ...]:
    options = []
    for index, entry in enumerate(_list(data, "options", label)):
        where = f"{label}: option {index + 1}"
        value = float(_need(entry, "value", (int, float), where))
        if not math.isfinite(value):
            raise PersonaspaceError(f"{where}: 'value' is not finite", fix="give a number")
        options.append(
            LikertOption(
                str(_need(entry, "label", str, where)), value, str(_need(entry, "text", str, where))
            )
        )
    if len(options) < 2 or len({o.label for o in options}) < len(options):
        raise PersonaspaceError(
            f"{label}: the options need at least 2 distinct labels", fix=f"fix 'options'; {_FIX}"
        )
    if len({o.value for o in options}) < 2:
        raise PersonaspaceError(
            f"{label}: every option has the same value", fix=f"fix 'options'; {_FIX}"
        )
    return tuple(options)


def parse_inventory(data: Any, label: str) -> Inventory:
    """An inventory from its JSON data, each problem one line naming the entry and key.

    Example:
        >>> parse_inventory({"instruction": "{statement}: {options}"}, "x")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        personaspace.errors.PersonaspaceError: x has no 'options': add it; ...
    """
    if not isinstance(data, dict):
        raise PersonaspaceError(f"{label} is not a JSON object", fix=_FIX)
    instruction = str(_need(data, "instruction", str, label))
    for field in ("{statement}", "{options}"):
        if field not in instruction:
            raise PersonaspaceError(
                f"{label}: the instruction has no {field}", fix=f"add it; {_FIX}"
            )
    try:
        instruction.format(statement="", options="")
    except (KeyError, IndexError, ValueError) as err:
        raise PersonaspaceError(
            f"{label}: the instruction has a placeholder other than {{statement}} and "
            f"{{options}} ({err})",
            fix="double other braces ({{ }})",
        ) from err
    options = _options(data, label)
    scales: list[InventoryScale] = []
    for index, entry in enumerate(_list(data, "traits", label)):
        where = f"{label}: trait {entry.get('name', index + 1)!r}"
        opposite = entry.get("opposite")
        if opposite is not None and (not isinstance(opposite, str) or not opposite):
            raise PersonaspaceError(f"{where}: 'opposite' is {opposite!r}", fix="give a trait name")
        scales.append(
            InventoryScale(
                str(_need(entry, "name", str, where)),
                str(_need(entry, "catalogue_trait", str, where)),
                opposite,
            )
        )
    names = [s.name for s in scales]
    if len(set(names)) < len(names):
        raise PersonaspaceError(f"{label}: a trait name is used twice", fix="give unique names")
    items: list[InventoryItem] = []
    for index, entry in enumerate(_list(data, "items", label)):
        where = f"{label}: item {entry.get('id', index + 1)!r}"
        item_id = str(_need(entry, "id", str, where))
        trait = str(_need(entry, "trait", str, where))
        text = str(_need(entry, "text", str, where))
        keyed = _need(entry, "keyed", int, where)
        if keyed not in (1, -1):
            raise PersonaspaceError(f"{where}: 'keyed' is {keyed!r}", fix="give 1 or -1")
        if trait not in names:
            raise PersonaspaceError(
                f"{where}: trait {trait!r} is not one of the inventory's traits",
                fix=f"use one of: {', '.join(names)}",
            )
        if any(i.id == item_id for i in items):
            raise PersonaspaceError(f"{where}: the id is used twice", fix="give unique ids")
        items.append(InventoryItem(item_id, trait, text, int(keyed)))
    for scale in scales:
        if sum(i.trait == scale.name for i in items) < 2:
            raise PersonaspaceError(
                f"{label}: trait {scale.name!r} has fewer than 2 items",
                fix="give each trait 2 or more (internal consistency needs them)",
            )
    content_free = data.get("content_free", [])
    if not isinstance(content_free, list) or not all(isinstance(c, str) for c in content_free):
        raise PersonaspaceError(
            f"{label}: 'content_free' is not a list of statements", fix=f"give strings; {_FIX}"
        )
    return Inventory(
        str(data.get("name", Path(label).stem)),
        instruction,
        options,
        tuple(scales),
        tuple(items),
        label,
        tuple(content_free),
    )


def load_inventory(path: str | Path | None = None) -> Inventory:
    """The built-in Big Five inventory, or the inventory file at ``path``.

    Example:
        >>> inv = load_inventory()
        >>> sorted({i.trait for i in inv.items}) == sorted(s.name for s in inv.scales)
        True
        >>> sum(i.keyed for i in inv.items_of("extraversion"))  # balanced keying
        0
    """
    file = BUILTIN_INVENTORY if path is None else Path(path).expanduser()
    label = file.name
    if not file.is_file():
        raise PersonaspaceError(f"inventory file {file} does not exist", fix="check the path")
    return parse_inventory(read_json(file, label), label)
