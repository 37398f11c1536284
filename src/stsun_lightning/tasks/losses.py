"""Losses of the dense tasks, all ignoring what is not labelled."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from stsun_lightning.batch import Batch
from stsun_lightning.models import StsunOutput

__all__ = ["IGNORE_INDEX", "BatchLoss", "batch_loss", "category_loss", "value_loss"]

IGNORE_INDEX = -1
"""Class target of a pixel without a label."""


def category_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy over the requested categories, ignoring unlabelled pixels.

    Args:
        logits: (B, To, K, H, W).
        target: (B, To, H, W) long: a position in the batch's ``categories`` (0..K-1),
            or :data:`IGNORE_INDEX`.

    Returns:
        Scalar mean over labelled pixels (0 with a gradient when none is labelled).
    """
    flat_logits = logits.flatten(0, 1).float()
    flat_target = target.flatten(0, 1).long()
    if not bool((flat_target != IGNORE_INDEX).any()):
        return flat_logits.sum() * 0.0
    return F.cross_entropy(flat_logits, flat_target, ignore_index=IGNORE_INDEX)


def value_loss(values: Tensor, target: Tensor) -> Tensor:
    """L1 over labelled values; NaN targets are ignored.

    Args:
        values: (B, To, V, H, W).
        target: (B, To, V, H, W) float, NaN where unlabelled.

    Returns:
        Scalar mean absolute error over labelled values (0 with a gradient when none).
    """
    labelled = torch.isfinite(target)
    if not bool(labelled.any()):
        return values.sum() * 0.0
    return (values.float() - torch.where(labelled, target, 0.0).float()).abs()[labelled].mean()


@dataclass(frozen=True)
class BatchLoss:
    """The loss of one batch, and whether it measured anything.

    Attributes:
        value: scalar loss (0 with a gradient when nothing is labelled).
        labelled: whether any target pixel of the batch is labelled; a batch with none
            says nothing about how well its task is learnt (the loss balance skips it).
    """

    value: Tensor
    labelled: bool


def batch_loss(output: StsunOutput, batch: Batch) -> BatchLoss:
    """Cross-entropy for category outputs, L1 for values, in float32.

    Args:
        output: the network's output for ``batch``.
        batch: a batch with a target.

    Raises:
        ValueError: the batch has no target (naming its source).
    """
    if batch.target is None:
        raise ValueError(f"Batch from source {batch.source[0]!r} has no target to train on.")
    target = batch.target
    prediction = output.logits if output.logits is not None else output.values
    assert prediction is not None
    labelled = bool(
        (target != IGNORE_INDEX).any()
        if output.logits is not None
        else torch.isfinite(target).any()
    )
    # In float32 under mixed precision: autocast would run some reductions in half.
    with torch.autocast(prediction.device.type, enabled=False):
        if output.logits is not None:
            value = category_loss(output.logits, target)
        else:
            value = value_loss(prediction, target)
    return BatchLoss(value, labelled)
