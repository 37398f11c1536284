"""Checkpoints are written beside their target and moved into place, never half-written.

The kill during a real save, and the resume from the previous ``last.ckpt``, is in
tests/test_distributed.py.
"""

import pytest
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from stsun_lightning.cli import with_atomic_checkpoints
from stsun_lightning.tasks.checkpoint_io import AtomicCheckpointIO


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("disk full")  # a writer that fails half way


def test_a_failed_write_leaves_the_previous_checkpoint_whole(tmp_path):
    target = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 3, "weights": torch.arange(4.0)}, target)
    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"global_step": 6, "broken": Unpicklable()}, target)
    loaded = torch.load(target, weights_only=True)
    assert loaded["global_step"] == 3 and torch.equal(loaded["weights"], torch.arange(4.0))
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_a_partial_file_of_a_killed_writer_is_removed_by_the_next_save(tmp_path):
    target = tmp_path / "last.ckpt"
    stale = tmp_path / ".last.ckpt.abc123.part"
    stale.write_bytes(b"PK\x03\x04 half a zip")
    other = tmp_path / ".epoch=1.ckpt.abc123.part"  # another target's: not ours to remove
    other.write_bytes(b"")
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".epoch=1.ckpt.abc123.part", "last.ckpt"]
    assert torch.load(target, weights_only=True) == {"global_step": 1}


def test_the_cli_adds_the_atomic_writer_unless_a_checkpoint_io_is_named():
    (added,) = with_atomic_checkpoints(None)
    assert isinstance(added, AtomicCheckpointIO)
    assert [type(p) for p in with_atomic_checkpoints("bf16-mixed")] == [str, AtomicCheckpointIO]
    own = TorchCheckpointIO()
    assert with_atomic_checkpoints([own]) == [own]
