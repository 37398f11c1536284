"""Metrics per source: classes (mIoU, per-class IoU and F1, accuracy) and values (MAE, RMSE).

Class metrics come from one confusion matrix. Macro averages run over the classes that
occur in the targets or the predictions: a class absent from a validation set is not
counted as a failure (IoU 0/0), as in the usual segmentation benchmarks.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection
from torchmetrics.classification import MulticlassConfusionMatrix

from stsun_lightning.data.sources import SourceInfo
from stsun_lightning.tasks.losses import IGNORE_INDEX

__all__ = ["SourceMetrics", "class_scores"]


def class_scores(confusion: Tensor, names: tuple[str, ...]) -> dict[str, Tensor]:
    """Scores from a confusion matrix (rows: target, columns: prediction).

    Returns:
        ``miou``, ``f1`` (macro over occurring classes), ``accuracy`` (overall), and
        ``iou_<class>``, ``f1_<class>`` for every occurring class.
    """
    confusion = confusion.double()
    true_positive = confusion.diag()
    in_target = confusion.sum(1)
    in_prediction = confusion.sum(0)
    union = in_target + in_prediction - true_positive
    occurring = union > 0
    iou = true_positive / union.clamp(min=1)
    f1 = 2 * true_positive / (in_target + in_prediction).clamp(min=1)
    scores = {
        "miou": iou[occurring].mean()
        if occurring.any()
        else torch.tensor(0.0, dtype=torch.float64),
        "f1": f1[occurring].mean() if occurring.any() else torch.tensor(0.0, dtype=torch.float64),
        "accuracy": true_positive.sum() / confusion.sum().clamp(min=1),
    }
    for i, name in enumerate(names):
        if occurring[i]:
            scores[f"iou_{name}"] = iou[i]
            scores[f"f1_{name}"] = f1[i]
    return {k: v.float() for k, v in scores.items()}


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
            self.metrics = MulticlassConfusionMatrix(
                len(source.categories), ignore_index=IGNORE_INDEX, validate_args=False
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
        """Scalar metrics by name."""
        if self.source.is_classification:
            return class_scores(self.metrics.compute(), self.source.categories)
        return dict(self.metrics.compute())

    def reset(self) -> None:
        """Forget the batches seen so far."""
        self.metrics.reset()
        self.updated = False
