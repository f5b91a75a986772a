"""A checkpoint write that fails half-way leaves the previous checkpoint whole and nothing else."""

from pathlib import Path

import pytest
import torch

from infodecomp.lightning import AtomicCheckpointIO


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "run" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)
    assert torch.load(path, weights_only=False)["global_step"] == 1

    class Unpicklable:
        def __reduce__(self):  # noqa: ANN204 - fails while torch.save is writing
            raise RuntimeError("interrupted mid-write")

    with pytest.raises(RuntimeError, match="interrupted mid-write"):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(1000), "bad": Unpicklable()}, path)
    assert torch.load(path, weights_only=False)["global_step"] == 1  # the old one, whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no partial file left
    io.save_checkpoint({"global_step": 3}, path)
    assert torch.load(path, weights_only=False)["global_step"] == 3
