"""Metrics per source, from torchmetrics: classes, values and semantic change.

- classes: mIoU, per-class IoU and F1, macro F1, overall accuracy. Macro averages run over
  the classes that occur in the targets or the predictions (torchmetrics leaves out a
  class with no true positive, false positive or false negative), so a class absent from
  a validation set is not counted as a failure, as in the usual segmentation benchmarks;
  per-class scores are reported for those classes only.
- values: MAE and RMSE over labelled values.
- semantic change detection: the land-cover slots and the change slot are scored apart
  (land-cover mIoU over the date slots, change F1 over the change slot) and together by
  the separated kappa (SeK) of SECOND (Yang et al., 2021), instead of pooling both kinds
  of slot into one confusion matrix.

Targets are positions in the source's categories, :data:`IGNORE_INDEX` where unlabelled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection
from torchmetrics.classification import (
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassJaccardIndex,
)

from stsun_lightning.data.sources import SourceInfo
from stsun_lightning.tasks.losses import IGNORE_INDEX

__all__ = [
    "CHANGE_CATEGORY",
    "ClassMetrics",
    "SemanticChangeMetrics",
    "SourceMetrics",
    "ValueMetrics",
    "separated_kappa",
]

CHANGE_CATEGORY = "change"
"""The category of changed pixels; a semantic change source's change slot predicts it."""


class ClassMetrics(nn.Module):
    """Scores of K classes over the labelled pixels of every update.

    Args:
        classes: class names, in target order.
    """

    def __init__(self, classes: Sequence[str]) -> None:
        super().__init__()
        self.classes = tuple(classes)
        common = {
            "num_classes": len(self.classes),
            "ignore_index": IGNORE_INDEX,
            "validate_args": False,
        }
        self.scores = MetricCollection(
            {
                "miou": MulticlassJaccardIndex(average="macro", **common),
                # NaN marks a class that occurs nowhere: it gets no per-class score.
                "iou": MulticlassJaccardIndex(average="none", zero_division=math.nan, **common),
                "f1": MulticlassF1Score(average="macro", **common),
                "f1_per_class": MulticlassF1Score(average="none", **common),
                "accuracy": MulticlassAccuracy(average="micro", **common),
            },
            compute_groups=True,
        )

    def update(self, prediction: Tensor, target: Tensor) -> None:
        """Add predicted and target classes of any (equal) shape, long."""
        self.scores.update(prediction.flatten(), target.flatten())

    def compute(self) -> dict[str, Tensor]:
        """``miou``, ``f1``, ``accuracy``, and ``iou_<class>``, ``f1_<class>`` per occurring class."""
        values = self.scores.compute()
        scores = {name: values[name].float() for name in ("miou", "f1", "accuracy")}
        for i, name in enumerate(self.classes):
            iou = values["iou"][i]
            if not bool(torch.isnan(iou)):
                scores[f"iou_{name}"] = iou.float()
                scores[f"f1_{name}"] = values["f1_per_class"][i].float()
        return scores

    def reset(self) -> None:
        """Forget the updates so far."""
        self.scores.reset()


class ValueMetrics(nn.Module):
    """MAE and RMSE over labelled (finite) target values."""

    def __init__(self) -> None:
        super().__init__()
        self.scores = MetricCollection(
            {"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False)}
        )

    def update(self, prediction: Tensor, target: Tensor) -> None:
        """Add values (B, To, V, H, W) against targets of the same shape, NaN ignored."""
        labelled = torch.isfinite(target)
        if bool(labelled.any()):
            self.scores.update(prediction.float()[labelled], target.float()[labelled])

    def compute(self) -> dict[str, Tensor]:
        """``mae`` and ``rmse``."""
        return dict(self.scores.compute())

    def reset(self) -> None:
        """Forget the updates so far."""
        self.scores.reset()


def separated_kappa(confusion: Tensor) -> Tensor:
    """SeK of SECOND (Yang et al., 2021) from a semantic change confusion matrix.

    Class 0 is "no change", class c > 0 "changed, land cover c at that date"; both dates'
    maps go into the one matrix. The kappa is computed without the true "no change"
    pixels, and weighted by the IoU of changed pixels: SeK = kappa · e^(IoU - 1).

    Args:
        confusion: (C + 1, C + 1) counts, rows targets, columns predictions.

    Returns:
        Scalar float64 in [-1, 1] (0 when nothing but true "no change" was counted).
    """
    counts = confusion.double()
    without_no_change = counts.clone()
    without_no_change[0, 0] = 0
    total = without_no_change.sum()
    if total == 0:
        return torch.zeros((), dtype=torch.float64)
    observed = without_no_change.diag().sum() / total
    expected = (without_no_change.sum(0) * without_no_change.sum(1)).sum() / total**2
    kappa = (observed - expected) / (1 - expected) if expected < 1 else torch.zeros_like(total)
    changed_as_changed = counts[1:, 1:].sum()
    iou_change = changed_as_changed / total  # total = everything but true "no change"
    return kappa * torch.exp(iou_change - 1)


class SemanticChangeMetrics(nn.Module):
    """Land cover, change and SeK of a semantic change source.

    The slot whose categories include :data:`CHANGE_CATEGORY` is the change slot; the
    other slots are land-cover states, each paired with the change slot for SeK.

    Args:
        source: a source with ``slot_categories``.

    Raises:
        ValueError: a source without exactly one change slot.
    """

    def __init__(self, source: SourceInfo) -> None:
        super().__init__()
        slots = source.slot_categories
        change = [i for i, names in enumerate(slots) if CHANGE_CATEGORY in names]
        if len(change) != 1:
            raise ValueError(
                f"Semantic change source {source.name!r} needs exactly one output slot whose "
                f"slot_categories include {CHANGE_CATEGORY!r}, got {[list(s) for s in slots]}."
            )
        self.change_slot = change[0]
        self.state_slots = [i for i in range(len(slots)) if i != self.change_slot]
        land_cover = list(dict.fromkeys(n for i in self.state_slots for n in slots[i]))
        # Position in the source's categories -> land-cover class (-1: not a land cover).
        lookup = [
            land_cover.index(n) if n in land_cover else IGNORE_INDEX for n in source.categories
        ]
        self.register_buffer("land_cover_of", torch.tensor(lookup), persistent=False)
        # Per slot, the positions it may predict (To, K): the argmax runs over those only.
        allowed = [[n in slot for n in source.categories] for slot in slots]
        self.register_buffer("allowed", torch.tensor(allowed)[:, :, None, None], persistent=False)
        self.changed = source.categories.index(CHANGE_CATEGORY)
        self.land_cover = ClassMetrics(land_cover)
        self.change = BinaryF1Score(ignore_index=IGNORE_INDEX, validate_args=False)
        self.semantic_change = MulticlassConfusionMatrix(
            len(land_cover) + 1, ignore_index=IGNORE_INDEX, validate_args=False
        )

    def update(self, logits: Tensor, target: Tensor) -> None:
        """Add logits (B, To, K, H, W) against target positions (B, To, H, W) long."""
        allowed = self.allowed.to(logits.device)
        prediction = logits.masked_fill(~allowed, -torch.inf).argmax(2)
        lookup = self.land_cover_of.to(target.device)
        states = self.state_slots
        cover_pred = lookup[prediction[:, states]]
        cover_target = torch.where(
            target[:, states] >= 0, lookup[target[:, states].clamp(min=0)], -1
        )
        self.land_cover.update(cover_pred, cover_target)

        change_target = target[:, self.change_slot]
        changed_pred = prediction[:, self.change_slot] == self.changed
        changed_target = torch.where(change_target >= 0, (change_target == self.changed).long(), -1)
        self.change.update(changed_pred.long(), changed_target)

        # Both dates' semantic change maps: 0 where unchanged, 1 + land cover where changed.
        changed_pred, changed_target = changed_pred[:, None], changed_target[:, None]
        semantic_pred = torch.where(changed_pred, cover_pred.clamp(min=0) + 1, 0)
        semantic_target = torch.where(changed_target == 1, cover_target + 1, 0)
        unknown = (changed_target < 0) | ((changed_target == 1) & (cover_target < 0))
        semantic_target = torch.where(unknown, IGNORE_INDEX, semantic_target)
        self.semantic_change.update(semantic_pred.flatten(), semantic_target.flatten())

    def compute(self) -> dict[str, Tensor]:
        """Land-cover scores (as :class:`ClassMetrics`), ``f1_change`` and ``sek``."""
        scores = self.land_cover.compute()
        scores["f1_change"] = self.change.compute().float()
        scores["sek"] = separated_kappa(self.semantic_change.compute()).float()
        return scores

    def reset(self) -> None:
        """Forget the updates so far."""
        self.land_cover.reset()
        self.change.reset()
        self.semantic_change.reset()


class SourceMetrics(nn.Module):
    """The metrics of one source, updated from predictions and targets of its batches.

    Args:
        source: the source's description (its classes, slots or variables).
    """

    def __init__(self, source: SourceInfo) -> None:
        super().__init__()
        self.source = source
        self.updated = False
        self.metrics: ClassMetrics | SemanticChangeMetrics | ValueMetrics
        if source.slot_categories:
            self.metrics = SemanticChangeMetrics(source)
        elif source.is_classification:
            self.metrics = ClassMetrics(source.categories)
        else:
            self.metrics = ValueMetrics()

    def update(self, prediction: Tensor, target: Tensor) -> None:
        """Add a batch.

        Args:
            prediction: classes (B, To, K, H, W) logits, or values (B, To, V, H, W).
            target: (B, To, H, W) long with -1 ignored, or (B, To, V, H, W) with NaN ignored.
        """
        self.updated = True
        if isinstance(self.metrics, ClassMetrics):
            self.metrics.update(prediction.argmax(2), target)
        else:
            self.metrics.update(prediction, target)

    def compute(self) -> dict[str, Tensor]:
        """Scalar metrics by name."""
        return self.metrics.compute()

    def reset(self) -> None:
        """Forget the batches seen so far."""
        self.metrics.reset()
        self.updated = False
