"""Metrics per source: classes (mIoU, per-class IoU, F1, accuracy) and values (MAE, RMSE)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassJaccardIndex,
)

from stsun_lightning.data.sources import SourceInfo
from stsun_lightning.tasks.losses import IGNORE_INDEX

__all__ = ["SourceMetrics"]


class SourceMetrics(nn.Module):
    """The metrics of one source, updated from predictions and targets of its batches.

    Args:
        source: the source's description (its classes or variables).
    """

    def __init__(self, source: SourceInfo) -> None:
        super().__init__()
        self.source = source
        self.updated = False
        if source.is_classification:
            k = len(source.categories)
            common = dict(num_classes=k, ignore_index=IGNORE_INDEX, validate_args=False)
            self.metrics = MetricCollection(
                {
                    "miou": MulticlassJaccardIndex(average="macro", **common),
                    "iou": MulticlassJaccardIndex(average="none", **common),
                    "f1": MulticlassF1Score(average="macro", **common),
                    "f1_class": MulticlassF1Score(average="none", **common),
                    "accuracy": MulticlassAccuracy(average="micro", **common),
                }
            )
        else:
            self.metrics = MetricCollection(
                {"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False)}
            )

    def update(self, prediction: Tensor, target: Tensor) -> None:
        """Add a batch.

        Args:
            prediction: classes (B, To, K, H, W) logits, or values (B, To, V, H, W).
            target: (B, To, H, W) long with -1 ignored, or (B, To, V, H, W) with NaN ignored.
        """
        self.updated = True
        if self.source.is_classification:
            self.metrics.update(prediction.argmax(2).flatten(), target.flatten())
        else:
            labelled = torch.isfinite(target)
            if bool(labelled.any()):
                self.metrics.update(prediction.float()[labelled], target.float()[labelled])

    def compute(self) -> dict[str, Tensor]:
        """Scalar metrics by name: per-class ones become ``iou_<class>``, ``f1_<class>``."""
        values = self.metrics.compute()
        out: dict[str, Tensor] = {}
        for name, value in values.items():
            if value.dim() == 0:
                out[name] = value
                continue
            prefix = "f1" if name == "f1_class" else name
            for category, v in zip(self.source.categories, value, strict=True):
                out[f"{prefix}_{category}"] = v
        return out

    def reset(self) -> None:
        """Forget the batches seen so far."""
        self.metrics.reset()
        self.updated = False
