"""Callbacks for tests that run ``stsun`` in subprocesses (importable by jsonargparse).

The subprocess is given this folder on ``PYTHONPATH``; every rank writes its own file.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from stsun_lightning.batch import Batch

__all__ = [
    "BatchRecorder",
    "KillAtStep",
    "KillWhileSaving",
    "PoisonBatches",
    "StepStates",
    "fingerprints",
]


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


class PoisonBatches(Callback):
    """Makes chosen ranks' batches overflow (every value 3e38: NaN after the first layer).

    Args:
        ranks: the rank of each poisoned batch.
        steps: the global step of each, paired with ``ranks``.
    """

    def __init__(self, ranks: list[int], steps: list[int]) -> None:
        self.poisoned = set(zip(ranks, steps, strict=True))

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Poison the batch of a chosen rank and step."""
        if (trainer.global_rank, trainer.global_step) in self.poisoned:
            batch.image.fill_(3e38)


def _digest(tensors: list[torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


class StepStates(Callback):
    """Writes, before every training step, digests of what a step may change.

    ``<folder>/states_rank<R>.jsonl``: per step, digests of the parameters and of the
    optimiser's state, the learning rates, the skipped-step count and the loss balance.

    Args:
        folder: where to write.
    """

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Record the state the step starts from."""
        optimizer = trainer.optimizers[0]
        moments = [
            value
            for group in optimizer.param_groups
            for parameter in group["params"]
            for _, value in sorted(optimizer.state.get(parameter, {}).items())
        ]
        line = {
            "step": trainer.global_step,
            "params": _digest(list(pl_module.parameters())),
            "optimizer": _digest([torch.as_tensor(m) for m in moments]),
            "lr": [group["lr"] for group in optimizer.param_groups],
            "skipped": pl_module.nonfinite.skipped,
            "balance": pl_module.balance.state_dict(),
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"states_rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")


def _sizes(folder: Path) -> dict[str, int]:
    sizes = {}
    for path in folder.iterdir():
        try:
            sizes[path.name] = path.stat().st_size
        except FileNotFoundError:  # moved away between listing and looking
            continue
    return sizes


def _kill_when_written(folder: Path, before: dict[str, int]) -> None:
    while _sizes(folder) == before:
        time.sleep(0.0005)
    os.kill(os.getpid(), signal.SIGKILL)


class KillWhileSaving(Callback):
    """SIGKILLs its process as soon as the ``save``-th checkpoint reaches the disk.

    The checkpoint gets 32 MiB of ballast, so that its write takes long enough to be
    killed in; a thread watches the checkpoint folder and kills the process at the first
    change (a file created, truncated or growing), as a preemption would, mid-write.

    Args:
        save: which save (1 = the first) to die in.
    """

    def __init__(self, save: int) -> None:
        self.save = save
        self.saves = 0

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Arm the watcher for the chosen save, just before it is written."""
        self.saves += 1
        if self.saves != self.save:
            return
        checkpoint["ballast"] = torch.ones(32 * 2**20 // 4)
        callback = trainer.checkpoint_callback
        assert callback is not None and callback.dirpath is not None
        folder = Path(callback.dirpath)
        watcher = threading.Thread(target=_kill_when_written, args=(folder, _sizes(folder)))
        watcher.daemon = True
        watcher.start()
