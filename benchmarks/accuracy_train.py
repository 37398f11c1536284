"""Training and scoring helpers of the accuracy benchmarks: plain PyTorch loops.

Every model of :mod:`accuracy` is trained by :func:`fit` with the recipe of the demo
(AdamW, learning rate 2e-3 with linear warm-up and cosine decay to 1 %, weight decay
0.05 on matrices only, gradient clipping at 1.0) and scored by :func:`scores` from a
confusion matrix, with the project's own :func:`~stsun_lightning.tasks.metrics.class_scores`.

Shapes: B batch, T dates, C bands, H×W pixels, K classes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stsun_lightning.tasks.losses import IGNORE_INDEX
from stsun_lightning.tasks.metrics import class_scores
from stsun_lightning.tasks.schedule import warmup_cosine

__all__ = ["UnetBaseline", "confusion", "fit", "scores"]


def fit(
    parameters: Iterable[tuple[str, nn.Parameter]],
    loss_of_step: Callable[[int], Tensor],
    steps: int,
    learning_rate: float = 2e-3,
    weight_decay: float = 0.05,
    warmup_steps: int = 50,
) -> dict[str, float]:
    """Minimise ``loss_of_step(step)`` for ``steps`` steps.

    Args:
        parameters: named parameters to train (others stay as they are).
        loss_of_step: draws a batch for the step and returns its scalar loss.
        steps: optimiser steps.
        learning_rate: peak learning rate.
        weight_decay: decay of matrices (not of embedding tables, vectors or scalars).
        warmup_steps: linear warm-up, at most a tenth of ``steps``.

    Returns:
        ``{"seconds", "first_loss", "last_loss"}`` (last: mean of the last 10 % of steps).
    """
    decay, no_decay = [], []
    for name, p in parameters:
        if p.requires_grad:
            table = name.endswith("embedding.weight") or name.endswith("table.weight")
            (decay if p.dim() >= 2 and not table else no_decay).append(p)
    optimiser = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=learning_rate,
    )
    warmup = max(1, min(warmup_steps, steps // 10))
    schedule = warmup_cosine(steps, warmup, floor=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, schedule)
    trained = decay + no_decay
    losses = []
    start = time.perf_counter()
    for step in range(steps):
        loss = loss_of_step(step)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimiser.step()
        scheduler.step()
        losses.append(float(loss.detach()))
    tail = losses[-max(1, steps // 10) :]
    return {
        "seconds": time.perf_counter() - start,
        "first_loss": losses[0] if losses else math.nan,
        "last_loss": sum(tail) / len(tail) if tail else math.nan,
    }


def confusion(prediction: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Confusion matrix (rows: target, columns: prediction) of labelled pixels.

    Args:
        prediction: (...) long classes 0..K-1.
        target: (...) long classes 0..K-1, :data:`IGNORE_INDEX` where unlabelled.
        num_classes: K.

    Returns:
        (K, K) int64 counts.
    """
    labelled = target != IGNORE_INDEX
    index = target[labelled] * num_classes + prediction[labelled]
    return torch.bincount(index, minlength=num_classes**2).view(num_classes, num_classes)


def scores(matrix: Tensor, classes: tuple[str, ...]) -> dict[str, float]:
    """mIoU, macro F1, accuracy and per-class IoU from a (K, K) confusion matrix."""
    return {
        k: round(float(v), 4)
        for k, v in class_scores(matrix, classes).items()
        if not k.startswith("f1_")
    }


class UnetBaseline(nn.Module):
    """smp's U-Net with a ResNet-18 encoder (random init) on stacked dates and bands.

    Input of any size: padded (reflect) to a multiple of 32, output cropped back.

    Args:
        in_channels: T × C of the stacked input.
        outputs: K classes (or 1 value).
    """

    def __init__(self, in_channels: int, outputs: int) -> None:
        super().__init__()
        self.net = smp.Unet(
            encoder_name="resnet18", encoder_weights=None, in_channels=in_channels, classes=outputs
        )

    def forward(self, image: Tensor) -> Tensor:
        """(B, T, C, H, W), NaN for missing -> (B, K, H, W)."""
        b, t, c, height, width = image.shape
        x = torch.nan_to_num(image.reshape(b, t * c, height, width).float(), nan=0.0)
        pad_h, pad_w = (-height) % 32, (-width) % 32
        if pad_h or pad_w:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        return self.net(x)[..., :height, :width]
