"""``RunFolder``: reading and writing each part of a run folder."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from personaspace.analysis.compare import ComparedRun
from personaspace.errors import PersonaspaceError
from personaspace.fileformat import atomic_write, load_vectors, read_json, save_vectors, write_json
from personaspace.interop.reference import read_tensor, read_vector_folder
from personaspace.runfolder.names import (
    AXIS_FILE,
    CALIBRATION_FILE,
    CAPPING_FILE,
    CONFIG_FILE,
    DEFAULT_FILE,
    OUTPUTS,
    REFERENCE_AXIS,
    REFERENCE_DEFAULT,
    REFERENCE_ROLES,
    REFERENCE_TRAITS,
    REPORT_FILE,
    RESPONSES_FILE,
    ROLES_FILE,
    SCORES_FILE,
    SHARDS_DIR,
    SUMMARY_FILE,
    TRAITS_FILE,
)
from personaspace.runfolder.records import ResponseRecord, RunVectors
from personaspace.vectors.axis import Axis, read_axis_file, save_axis
from personaspace.vectors.calibration import Calibration, read_calibration_file, save_calibration
from personaspace.vectors.capping import CappingConfig, load_capping_config, save_capping_config
from personaspace.vectors.shape import ModelShape


@dataclass(frozen=True)
class RunFolder:
    """One run folder: its file names and the reading and writing of each part.

    Example:
        >>> import tempfile
        >>> run = RunFolder(tempfile.mkdtemp())
        >>> run.shard_path("role/pirate").name
        'role__pirate.safetensors'
        >>> run.has_axis
        False
    """

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    def file(self, name: str) -> Path:
        """The path of one of the run's files (a name above, e.g. ``AXIS_FILE``)."""
        return self.path / name

    @property
    def has_axis(self) -> bool:
        return self.file(AXIS_FILE).is_file()

    @property
    def is_reference_layout(self) -> bool:
        return not self.has_axis and self.file(REFERENCE_AXIS).is_file()

    def require_axis(self) -> None:
        """Refuse a folder without ``axis.safetensors`` (an unfinished or foreign folder)."""
        if not self.has_axis:
            raise PersonaspaceError(
                f"{self.path} holds no {AXIS_FILE}", fix="pass a finished `personaspace axis` run"
            )

    # --- settings --------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        """``config.json`` (the settings and the model's shape), or ``{}`` when absent."""
        path = self.file(CONFIG_FILE)
        data = read_json(path) if path.is_file() else {}
        return data if isinstance(data, dict) else {}

    def settings(self) -> dict[str, Any]:
        """The run's settings (the ``config`` part of ``config.json``)."""
        config = self.header().get("config", {})
        return config if isinstance(config, dict) else {}

    def write_header(self, header: Mapping[str, Any]) -> None:
        try:
            write_json(self.file(CONFIG_FILE), header)
        except OSError as err:
            raise PersonaspaceError(
                f"cannot write to {self.path} ({err.strerror})",
                fix="choose a writable folder for the run",
            ) from err

    def model_spec(self) -> str | None:
        """The model the run was made with (its spec, else the id files record)."""
        header = self.header()
        spec = self.settings().get("model") or header.get("model_id")
        return str(spec) if spec else None

    def check_new_or_own(self) -> None:
        """Refuse a folder that holds other files and is not one of our runs."""
        if self.file(CONFIG_FILE).is_file():
            return
        if self.path.exists() and any(self.path.iterdir()) and not self.file(SHARDS_DIR).is_dir():
            raise PersonaspaceError(
                f"{self.path} exists and is not a personaspace run folder",
                fix="choose an empty or new folder for the run",
            )

    def clear_outputs(self) -> None:
        """Remove everything a run wrote (before a run with other settings replaces it)."""
        for name in OUTPUTS:
            target = self.file(name)
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()

    # --- shards -----------------------------------------------------------------------------
    def shard_path(self, shard: str) -> Path:
        """``RUN/shards/role__pirate.safetensors`` for shard ``role/pirate``."""
        return self.path / SHARDS_DIR / (shard.replace("/", "__") + ".safetensors")

    def save_shard(
        self,
        shard: str,
        records: Sequence[ResponseRecord],
        vectors: torch.Tensor,
        meta: Mapping[str, Any],
    ) -> None:
        """Write a finished shard atomically (vectors ``[n, layers, hidden]`` as float16)."""
        save_vectors(
            self.shard_path(shard),
            {"response_mean": vectors.to(torch.float16)},
            {**meta, "shard": shard, "records": list(records)},
        )

    def load_shard(self, shard: str) -> tuple[list[ResponseRecord], torch.Tensor] | None:
        """The shard's records and vectors, or ``None`` if it is absent or unreadable."""
        path = self.shard_path(shard)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), "pt") as handle:
                meta = json.loads((handle.metadata() or {}).get("personaspace", "{}"))
            vectors = load_file(str(path))["response_mean"]
        except (SafetensorError, OSError, ValueError, KeyError):
            return None
        return list(meta.get("records", [])), vectors

    def shard_complete(self, shard: str, item_ids: list[str]) -> bool:
        loaded = self.load_shard(shard)
        return loaded is not None and [r["id"] for r in loaded[0]] == item_ids

    # --- replies ----------------------------------------------------------------------------
    def write_records(self, records: Iterable[ResponseRecord]) -> None:
        """``responses.jsonl`` (every field) and ``scores.jsonl`` (the scores alone)."""
        rows = list(records)
        with atomic_write(self.file(RESPONSES_FILE)) as handle:
            for r in rows:
                handle.write(json.dumps(r, ensure_ascii=False) + "\n")
        with atomic_write(self.file(SCORES_FILE)) as handle:
            for r in rows:
                score = {
                    "id": r["id"],
                    "score": r.get("score"),
                    "trait_score": r.get("trait_score"),
                    "judge": r["judge"],
                }
                handle.write(json.dumps(score) + "\n")

    def responses(self) -> list[ResponseRecord]:
        """Every record of ``responses.jsonl``."""
        path = self.file(RESPONSES_FILE)
        if not path.is_file():
            raise PersonaspaceError(
                f"{self.path} has no {RESPONSES_FILE}", fix="pass a finished axis run folder"
            )
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def replies(self, kinds: Sequence[str], limit: int | None = None) -> list[ResponseRecord]:
        """The non-empty replies of ``kinds`` (``default``, ``role``, ``trait_pos``...);
        ``limit`` keeps an evenly spaced subset."""
        rows = [
            r for r in self.responses() if r.get("kind") in kinds and r.get("response", "").strip()
        ]
        if limit is not None and len(rows) > limit:
            step = len(rows) / limit
            rows = [rows[int(i * step)] for i in range(limit)]
        if not rows:
            raise PersonaspaceError(
                f"{self.path} has no replies of kinds {list(kinds)}", fix="choose other kinds"
            )
        return rows

    # --- vectors and the axis ---------------------------------------------------------------
    def save_vectors(
        self,
        meta: Mapping[str, Any],
        *,
        roles: Mapping[str, torch.Tensor],
        role_counts: Mapping[str, int],
        default: torch.Tensor,
        default_count: int,
        traits: Mapping[str, torch.Tensor],
        trait_counts: Mapping[str, int],
    ) -> None:
        """Role, default and trait vectors, each file with the shared ``meta``."""
        save_vectors(
            self.file(ROLES_FILE), roles, {**meta, "kind": "role_vectors", "counts": role_counts}
        )
        save_vectors(
            self.file(DEFAULT_FILE),
            {"default": default},
            {**meta, "kind": "default_vector", "count": default_count},
        )
        if traits:
            save_vectors(
                self.file(TRAITS_FILE),
                traits,
                {**meta, "kind": "trait_vectors", "counts": trait_counts},
            )

    def save_axis(self, axis: torch.Tensor, meta: Mapping[str, Any], analysis_layer: int) -> None:
        save_axis(self.file(AXIS_FILE), axis, meta, analysis_layer=analysis_layer)

    def axis(self, lm: ModelShape | None = None) -> Axis:
        """The run's axis (ours, or ``axis.pt`` of a reference folder); checked against ``lm``."""
        file = self.file(AXIS_FILE)
        if not file.is_file():
            legacy = self.file(REFERENCE_AXIS)
            if not legacy.is_file():
                raise PersonaspaceError(
                    f"{self.path} holds no {AXIS_FILE} or {REFERENCE_AXIS}",
                    fix="pass a finished axis run folder (personaspace axis) or an axis file",
                )
            file = legacy
        axis = read_axis_file(file)
        if lm is not None:
            axis.check_model(lm)
        return axis

    def analysis_layer(self) -> int | None:
        """The layer the run analysed (recorded in its axis file), if it says."""
        if not self.has_axis:
            return None
        layer = load_vectors(self.file(AXIS_FILE))[1].get("analysis_layer")
        return int(layer) if layer is not None else None

    def vectors(self) -> RunVectors:
        """Axis, default, role and trait vectors (ours or the reference layout).

        Example:
            >>> v = RunFolder("runs/axis-smollm2-135m-instruct-quick").vectors()  # doctest: +SKIP
            >>> v.axis.shape  # doctest: +SKIP
            torch.Size([30, 576])
        """
        if self.has_axis:
            tensors, meta = load_vectors(self.file(AXIS_FILE))
            roles = load_vectors(self.file(ROLES_FILE))[0]
            default = load_vectors(self.file(DEFAULT_FILE))[0]["default"]
            traits_file = self.file(TRAITS_FILE)
            traits = load_vectors(traits_file)[0] if traits_file.is_file() else {}
            return RunVectors(
                meta["model_id"], list(meta["layers"]), tensors["axis"], default, roles, traits
            )
        if self.is_reference_layout:
            axis = read_tensor(self.file(REFERENCE_AXIS))
            default_file = self.file(REFERENCE_DEFAULT)
            roles_dir, traits_dir = self.file(REFERENCE_ROLES), self.file(REFERENCE_TRAITS)
            summary = self.file(SUMMARY_FILE)
            return RunVectors(
                read_json(summary).get("model_id", "unknown") if summary.is_file() else "unknown",
                list(range(axis.shape[0])),
                axis,
                read_tensor(default_file) if default_file.is_file() else None,
                read_vector_folder(roles_dir) if roles_dir.is_dir() else {},
                read_vector_folder(traits_dir) if traits_dir.is_dir() else {},
            )
        raise PersonaspaceError(
            f"{self.path} is neither an axis run folder nor an axis file",
            fix="pass the folder `personaspace axis` wrote, a reference folder with axis.pt, "
            "or an axis .pt/.safetensors file",
        )

    def compared(self, *, label: str | None = None, layer: int | None = None) -> ComparedRun:
        """The run as ``compare`` reads it; ``layer`` overrides the run's analysis layer.

        Our folders give the model, layer count, hidden size, analysis layer, catalogue and
        whether the model is chat-tuned; a reference folder gives vectors only, and the
        middle layer is used.

        Example:
            >>> run = RunFolder("runs/axis-gemma-3-270m-quick").compared()  # doctest: +SKIP
            >>> run.hidden_size, run.analysis_layer  # doctest: +SKIP
            (640, 9)
        """
        if not self.path.is_dir():
            raise PersonaspaceError(
                f"{self.path} is not a run folder",
                fix="pass two folders written by `personaspace axis`",
            )
        vectors = self.vectors()
        if vectors.default is None or not vectors.roles:
            raise PersonaspaceError(
                f"{self.path} has no default or role vectors", fix="pass a finished axis run folder"
            )
        header, config = self.header(), self.settings()
        recorded = self.analysis_layer()
        chosen = layer if layer is not None else recorded
        chosen = vectors.layers[len(vectors.layers) // 2] if chosen is None else chosen
        if chosen not in vectors.layers:
            raise PersonaspaceError(
                f"{self.path} has no vectors for layer {chosen}",
                fix=f"choose a layer in {vectors.layers[0]}..{vectors.layers[-1]}",
            )
        extra: dict[str, Any] = {"folder": str(self.path.resolve())}
        for key in ("preset", "judge", "score_threshold", "min_count"):
            if key in config:
                extra[key] = config[key]
        return ComparedRun(
            label=label or self.path.name,
            model_id=str(header.get("model_id", vectors.model_id)),
            layers=list(vectors.layers),
            n_layers=int(header.get("n_layers", len(vectors.layers))),
            hidden_size=int(header.get("hidden_size", vectors.axis.shape[-1])),
            analysis_layer=chosen,
            axis=vectors.axis.float(),
            default=vectors.default.float(),
            roles={n: v.float() for n, v in vectors.roles.items()},
            catalogue=config.get("catalogue"),
            chat_tuned=header.get("chat_tuned"),
            extra=extra,
        )

    # --- calibration and capping -------------------------------------------------------------
    def save_calibration(self, calibration: Calibration) -> None:
        save_calibration(self.file(CALIBRATION_FILE), calibration)

    def save_capping(self, config: CappingConfig) -> None:
        save_capping_config(self.file(CAPPING_FILE), config)

    @property
    def is_calibrated(self) -> bool:
        return self.file(CALIBRATION_FILE).is_file()

    def calibration(self) -> Calibration:
        """The run's calibration (steering units and capping floors); refused when absent."""
        if not self.is_calibrated:
            raise PersonaspaceError(
                f"{self.path} has not been calibrated",
                fix=f"run `personaspace calibrate {self.path}` first",
            )
        return read_calibration_file(self.file(CALIBRATION_FILE))

    def calibration_if_any(self) -> Calibration | None:
        return self.calibration() if self.is_calibrated else None

    def capping(self) -> CappingConfig:
        """The run's capping config; refused when the run was not calibrated."""
        file = self.file(CAPPING_FILE)
        if not file.is_file():
            raise PersonaspaceError(
                f"{self.path} has no {CAPPING_FILE}",
                fix=f"calibrate the run first (`personaspace calibrate {self.path}`)",
            )
        return load_capping_config(file)

    def capping_if_any(self) -> CappingConfig | None:
        return self.capping() if self.file(CAPPING_FILE).is_file() else None

    # --- summary and report -----------------------------------------------------------------
    def write_summary(self, summary: Mapping[str, Any]) -> None:
        write_json(self.file(SUMMARY_FILE), summary)

    def summary(self) -> dict[str, Any]:
        data = read_json(self.file(SUMMARY_FILE))
        return data if isinstance(data, dict) else {}

    def write_report(self, page: str) -> None:
        with atomic_write(self.file(REPORT_FILE)) as handle:
            handle.write(page)
