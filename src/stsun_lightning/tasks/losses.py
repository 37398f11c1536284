"""Losses of the dense tasks, all ignoring what is not labelled."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["IGNORE_INDEX", "category_loss", "value_loss"]

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
