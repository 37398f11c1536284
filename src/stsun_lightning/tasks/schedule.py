"""The learning-rate schedule of every training loop of the project."""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["warmup_cosine"]


def warmup_cosine(total_steps: int, warmup_steps: int, floor: float) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to ``floor`` × the peak (a ``LambdaLR`` factor).

    Args:
        total_steps: optimiser steps in all.
        warmup_steps: steps of the linear warm-up (at least 1).
        floor: the final factor.

    Returns:
        step -> factor of the peak learning rate.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
