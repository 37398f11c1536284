"""Checkpoints written beside their target and moved into place: never half a ``last.ckpt``.

Lightning 2.6 serialises a checkpoint into memory, writes it to a temporary file from
``tempfile.mkstemp()`` (the node's ``$TMPDIR``) and moves that onto the target. When the
target lies on another file system (a cluster's shared storage, with ``/tmp`` local to the
node), the move is a copy into the target itself, so a process killed during it (a SLURM
preemption, an out-of-memory kill) leaves a ``last.ckpt`` that does not load, and the run
cannot resume. It also holds the checkpoint twice in memory and needs ``$TMPDIR`` room for
it.

:class:`AtomicCheckpointIO` streams the checkpoint into a temporary file in the target's
own folder, flushes it to disk and renames it onto the target, which is atomic: the target
is the old checkpoint or the new one, whole. A temporary file left by a killed writer is
removed the next time the same target is written. Paths of remote file systems (``s3://``
and the like) keep Lightning's writer.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import fsspec
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from stsun_lightning.io import atomic_path

__all__ = ["AtomicCheckpointIO"]

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, with local writes made atomic (see the module docstring)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` atomically.

        Args:
            checkpoint: what Lightning dumps.
            path: the target file.
            storage_options: not supported (as in ``TorchCheckpointIO``).

        Raises:
            TypeError: ``storage_options`` were given.
        """
        if storage_options is not None:
            raise TypeError(
                "`Trainer.save_checkpoint(..., storage_options=...)` with `storage_options` arg "
                f"is not supported for `{type(self).__name__}`. Please implement your custom "
                "`CheckpointIO` to define how you'd like to use `storage_options`."
            )
        filesystem, local_path = fsspec.core.url_to_fs(str(path))
        if not isinstance(filesystem, LocalFileSystem):
            super().save_checkpoint(checkpoint, path)
            return
        target = Path(local_path)
        _remove_partial_writes(target)
        with atomic_path(target) as partial, open(partial, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        _sync_folder(target.parent)


def _remove_partial_writes(target: Path) -> None:
    """Delete temporary files an interrupted writer of ``target`` left behind."""
    for stale in target.parent.glob(f".{target.name}.*.part"):
        log.info("Removing %s, left by a checkpoint write that did not finish.", stale)
        stale.unlink(missing_ok=True)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
