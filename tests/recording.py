"""Callbacks for tests that run ``stsun`` in subprocesses (importable by jsonargparse).

The subprocess is given this folder on ``PYTHONPATH``; every rank writes its own file.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from stsun_lightning.batch import Batch

__all__ = ["BatchRecorder", "KillAtStep", "fingerprints"]


def fingerprints(batch: Batch) -> list[str]:
    """One identity per item: its source and sums of its image (flips and turns keep them)."""
    image = batch.image.nan_to_num(0.0).double()
    sums = image.flatten(1).sum(1).tolist()
    squares = image.square().flatten(1).sum(1).tolist()
    return [
        f"{source}:{s:.6e}:{q:.6e}"
        for source, s, q in zip(batch.source, sums, squares, strict=True)
    ]


class BatchRecorder(Callback):
    """Writes what this rank trained and validated on, and its final validation metrics.

    ``<folder>/batches_rank<R>.jsonl``: one line per batch (stage, epoch, step, items);
    ``<folder>/metrics_rank<R>.json``: ``val/...`` callback metrics after the last
    validation, and the world size, rank and precision the trainer ran with.

    Args:
        folder: where to write.
    """

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def _write(self, trainer: L.Trainer, stage: str, batch: Batch) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        line = {
            "stage": stage,
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "items": fingerprints(batch),
        }
        with open(self.folder / f"batches_rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Record a training batch."""
        self._write(trainer, "train", batch)

    def on_validation_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Record a validation batch (not those of the sanity check)."""
        if not trainer.sanity_checking:
            self._write(trainer, "val", batch)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write the validation metrics as this rank sees them."""
        if trainer.sanity_checking:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith("val/") and isinstance(v, torch.Tensor)
        }
        record = {
            "metrics": metrics,
            "world_size": trainer.world_size,
            "global_rank": trainer.global_rank,
            "precision": str(trainer.precision),
        }
        path = self.folder / f"metrics_rank{trainer.global_rank}.json"
        path.write_text(json.dumps(record, indent=1))


class KillAtStep(Callback):
    """Kills its own process with SIGKILL when training reaches ``step`` (a crash, no cleanup).

    Args:
        step: global step at whose start the process dies.
    """

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Die at the chosen step."""
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
