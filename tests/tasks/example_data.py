"""A small datamodule of fixed example batches for Trainer-driven tests of ``StsunTask``.

It records the order in which Lightning calls its hooks, and implements the data-record
contract (``data_record`` / ``load_data_record``) the way a reader's datamodule does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from conftest import make_batch
from stsun_lightning.batch import Batch

__all__ = ["SOURCES", "ExampleDataModule", "example_batches", "overflowing", "quiet_trainer"]

SOURCES = {
    "landcover": {
        "task": "semantic_segmentation",
        "categories": ["water", "tree_cover", "cropland"],
    },
    "height": {"task": "regression", "variables": ["canopy_height"]},
}
"""Rows follow ``build_vocabularies(SOURCES)``: ``semantic_segmentation`` is task 0,
``regression`` task 5, categories 0-2, variable 0."""


def example_batches(count: int, seed: int = 0) -> list[Batch]:
    """``count`` batches alternating land cover and canopy height, 2 items of 32²."""
    batches = []
    for i in range(count):
        if i % 2 == 0:
            batch = make_batch(task=0, categories=[0, 1, 2], seed=seed + i, source="landcover")
        else:
            batch = make_batch(
                task=5, categories=None, variables=[0], seed=seed + i, source="height"
            )
        batches.append(batch)
    return batches


def overflowing(batch: Batch) -> Batch:
    """The batch with every value at 3e38: finite, but the first layer overflows to NaN."""
    batch.image.fill_(3e38)
    return batch


def _as_is(items: list[Batch]) -> Batch:
    (batch,) = items
    return batch


class ExampleDataModule(L.LightningDataModule):
    """Serves the given batches for training, validation and prediction.

    Args:
        batches: the batches, in order.
        record: what ``data_record()`` returns (the reader's statistics, say).
    """

    def __init__(self, batches: Sequence[Batch], record: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.batches = list(batches)
        self.record = record
        self.calls: list[str] = []
        self.loaded: Any = None

    def setup(self, stage: str) -> None:
        self.calls.append(f"setup:{stage}")

    def data_record(self) -> dict[str, Any] | None:
        return self.record

    def load_data_record(self, record: Any) -> None:
        self.calls.append("load_data_record")
        self.loaded = record

    def _loader(self, name: str) -> DataLoader:
        self.calls.append(name)
        return DataLoader(self.batches, batch_size=1, collate_fn=_as_is)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train_dataloader")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val_dataloader")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict_dataloader")


def quiet_trainer(**kwargs: Any) -> L.Trainer:
    """A CPU trainer without logger, progress bar, summary or checkpoints (unless given)."""
    settings: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "gradient_clip_val": 1.0,
    }
    settings.update(kwargs)
    return L.Trainer(**settings)
