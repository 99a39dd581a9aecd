"""Directions applied while training: ``--prevent VECTOR:COEF[@LAYER]`` (add the direction,
in calibrated residual-norm units) and ``--ablate-direction VECTOR[@LAYER]`` (project it out).

``VECTOR`` is ``RUN`` (its axis) or ``RUN:TRAIT``; ``LAYER`` defaults to the run's analysis
layer. Both become ``Intervention`` values at all positions, which ``tune`` enters around
its training steps only.
"""

from __future__ import annotations

from dataclasses import dataclass

from personaspace.errors import PersonaspaceError
from personaspace.models.loading import LoadedModel
from personaspace.runfolder.paths import NamedVector, read_named_vector
from personaspace.vectors.intervention import Intervention, ablate, steer


@dataclass(frozen=True)
class TrainingDirection:
    """A parsed ``--prevent`` / ``--ablate-direction``: which vector, how much, where."""

    kind: str  # "prevent" | "ablate"
    vector: str
    coef: float | None
    layer: int | None

    @property
    def text(self) -> str:
        coef = f":{self.coef:g}" if self.coef is not None else ""
        layer = f"@{self.layer}" if self.layer is not None else ""
        return f"{self.vector}{coef}{layer}"


def _split_layer(text: str, option: str) -> tuple[str, int | None]:
    head, sep, tail = text.rpartition("@")
    if not sep:
        return text, None
    try:
        return head, int(tail)
    except ValueError:
        raise PersonaspaceError(
            f"{option} {text}: the layer after '@' is not a whole number",
            fix="e.g. RUN:evil:0.5@15",
        ) from None


def parse_prevent(text: str) -> TrainingDirection:
    """``VECTOR:COEF[@LAYER]`` as a direction to add while training.

    Example:
        >>> parse_prevent("runs/axis-x:evil:0.5@15")
        TrainingDirection(kind='prevent', vector='runs/axis-x:evil', coef=0.5, layer=15)
        >>> parse_prevent("runs/axis-x:-1").vector
        'runs/axis-x'
    """
    rest, layer = _split_layer(text, "--prevent")
    vector, sep, coef = rest.rpartition(":")
    try:
        value = float(coef) if sep else float("nan")
    except ValueError:
        value = float("nan")
    if not sep or not vector or value != value or value in (float("inf"), float("-inf")):
        raise PersonaspaceError(
            f"--prevent {text} is not VECTOR:COEF[@LAYER]",
            fix="e.g. --prevent runs/axis-x:evil:0.5@15 (COEF in residual-norm units)",
        )
    return TrainingDirection("prevent", vector, value, layer)


def parse_ablate(text: str) -> TrainingDirection:
    """``VECTOR[@LAYER]`` as a direction to project out while training.

    Example:
        >>> parse_ablate("runs/axis-x:evil@12")
        TrainingDirection(kind='ablate', vector='runs/axis-x:evil', coef=None, layer=12)
    """
    vector, layer = _split_layer(text, "--ablate-direction")
    if not vector:
        raise PersonaspaceError(
            f"--ablate-direction {text} names no vector", fix="e.g. runs/axis-x:evil@12"
        )
    return TrainingDirection("ablate", vector, None, layer)


def resolve(direction: TrainingDirection, lm: LoadedModel) -> tuple[Intervention, NamedVector]:
    """The intervention ``direction`` asks for on ``lm``, its vector checked against the model.

    Example:
        >>> item, vector = resolve(parse_prevent("runs/axis-x:evil:0.5"), lm)  # doctest: +SKIP
        >>> item.kind, item.layer  # doctest: +SKIP
        ('steer', 15)
    """
    vector = read_named_vector(direction.vector)
    vector.check_model(lm)
    layer = direction.layer if direction.layer is not None else vector.layer
    if layer is None:
        raise PersonaspaceError(
            f"{direction.vector} has no analysis layer", fix="name one: VECTOR:COEF@LAYER"
        )
    lm.adapter.check_layers([layer])
    unit = vector.at(layer)
    if direction.kind == "ablate":
        return ablate(layer, unit), vector
    if vector.calibration is None:
        raise PersonaspaceError(
            f"{vector.run} is not calibrated, so COEF has no residual-norm unit",
            fix=f"run `personaspace calibrate {vector.run}` first",
        )
    assert direction.coef is not None
    return steer(layer, unit, direction.coef, vector.calibration.norm(layer)), vector
