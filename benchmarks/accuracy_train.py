"""Training and scoring helpers of the accuracy benchmarks: plain PyTorch loops.

Every model of :mod:`accuracy` is trained by :func:`fit` with the recipe of the demo
(AdamW, learning rate 2e-3 with linear warm-up and cosine decay to 1 %, weight decay
0.05 on layer weights only, gradient clipping at 1.0: the project's own
:func:`~stsun_lightning.tasks.optimizer.adamw_with_schedule`) and scored by :func:`scores`
with the project's own :class:`~stsun_lightning.tasks.metrics.ClassMetrics`.

Shapes: B batch, T dates, C bands, H×W pixels, K classes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stsun_lightning.tasks.metrics import ClassMetrics
from stsun_lightning.tasks.optimizer import adamw_with_schedule

__all__ = ["UnetBaseline", "fit", "scores"]


def fit(
    model: nn.Module,
    loss_of_step: Callable[[int], Tensor],
    steps: int,
    learning_rate: float = 2e-3,
    weight_decay: float = 0.05,
    warmup_steps: int = 50,
    on_optimiser: Callable[[torch.optim.Optimizer], None] | None = None,
) -> dict[str, float]:
    """Minimise ``loss_of_step(step)`` for ``steps`` steps.

    Args:
        model: what to train: its trainable parameters (frozen ones stay as they are).
        loss_of_step: draws a batch for the step and returns its scalar loss.
        steps: optimiser steps.
        learning_rate: peak learning rate.
        weight_decay: decay of layer weights (not of tables, norms, biases or scales).
        warmup_steps: linear warm-up, at most a tenth of ``steps``.
        on_optimiser: called with the optimiser before the first step (e.g. to set a
            parameter group's rate).

    Returns:
        ``{"seconds", "first_loss", "last_loss"}`` (last: mean of the last 10 % of steps).
    """
    warmup = max(1, min(warmup_steps, steps // 10))
    optimiser, scheduler = adamw_with_schedule(
        model, learning_rate, weight_decay, steps, warmup, min_lr_ratio=0.01
    )
    if on_optimiser is not None:
        on_optimiser(optimiser)
    trained = [p for group in optimiser.param_groups for p in group["params"]]
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


def scores(metrics: ClassMetrics) -> dict[str, float]:
    """mIoU, macro F1, accuracy and per-class IoU of what ``metrics`` was updated with."""
    return {k: round(float(v), 4) for k, v in metrics.compute().items() if not k.startswith("f1_")}


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
