"""Other projects' formats: the reference .pt layout, capping configs, llama.cpp GGUF."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGUFReader

from personaspace import PersonaspaceError
from personaspace.interop.control_vector import write_control_vector
from personaspace.interop.reference import write_reference_layout
from personaspace.runfolder import run_vectors as load_run
from personaspace.vectors import read_reference_capping


def test_reference_layout_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    axis, default = torch.randn(4, 8), torch.randn(4, 8)
    roles = {"pirate": torch.randn(4, 8), "ghost": torch.randn(4, 8)}
    write_reference_layout(
        tmp_path, axis=axis, default=default, roles=roles, traits={"evil": torch.randn(4, 8)}
    )
    run = load_run(tmp_path)
    assert torch.equal(run.axis, axis) and torch.equal(run.default, default)
    assert set(run.roles) == {"pirate", "ghost"} and torch.equal(run.roles["ghost"], roles["ghost"])
    assert set(run.traits) == {"evil"}
    assert torch.equal(load_run(tmp_path / "axis.pt").axis, axis)


def test_reference_capping_config_reads_safely(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = {
        "vectors": {"layer_3": {"vector": torch.randn(8), "layer": 3}},
        "experiments": [
            {"id": "layers_3:4-p25", "interventions": [{"vector": "layer_3", "cap": 1.5}]}
        ],
    }
    torch.save(config, tmp_path / "caps.pt")
    loaded = read_reference_capping(tmp_path / "caps.pt")
    assert loaded["experiments"][0]["id"] == "layers_3:4-p25"
    assert torch.equal(
        loaded["vectors"]["layer_3"]["vector"], config["vectors"]["layer_3"]["vector"]
    )
    torch.save({"vectors": {}}, tmp_path / "bad.pt")
    with pytest.raises(PersonaspaceError, match="lacks 'vectors' and 'experiments'"):
        read_reference_capping(tmp_path / "bad.pt")


def test_control_vector_gguf(tmp_path) -> None:  # type: ignore[no-untyped-def]
    axis = torch.arange(12, dtype=torch.float32).reshape(3, 4) + 1
    path = write_control_vector(tmp_path / "a.gguf", axis, [0, 1, 2], model_hint="llama", scale=2)
    reader = GGUFReader(path)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    assert arch == "controlvector"
    assert int(reader.fields["controlvector.layer_count"].parts[-1][0]) == 2  # block 0 skipped
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    assert set(tensors) == {"direction.1", "direction.2"}
    expected = (axis[2] / axis[2].norm() * 2).numpy()
    assert np.allclose(tensors["direction.2"], expected, atol=1e-6)
