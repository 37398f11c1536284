"""The optimiser of every training loop of the project: AdamW, decay on layer weights only.

Weight decay pulls a parameter towards 0, which suits the weights of linear and
convolutional layers (whose scale the following norms absorb) and nothing else: not
biases, not norms, not learnt scales, and not tables (vocabulary rows, the modality and
slot-kind embeddings, null keys, the unknown-date vector), whose rows a batch that does not
use them would still shrink. The rule is by module type, so a new table is excluded
without its name having to follow a pattern.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from stsun_lightning.tasks.schedule import warmup_cosine

__all__ = ["adamw_with_schedule", "decayed_parameters", "parameter_groups"]

_LAYERS_WITH_DECAY = (nn.Linear, nn.modules.conv._ConvNd)


def decayed_parameters(module: nn.Module) -> list[str]:
    """Names of the trainable parameters that get weight decay: layer weights only.

    Args:
        module: any module.

    Returns:
        The ``weight`` of every ``nn.Linear`` and ``nn.Conv*`` of ``module`` (trainable
        ones), in ``named_parameters`` order.
    """
    decayed = {
        id(layer.weight)
        for layer in module.modules()
        if isinstance(layer, _LAYERS_WITH_DECAY) and layer.weight is not None
    }
    return [n for n, p in module.named_parameters() if p.requires_grad and id(p) in decayed]


def parameter_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two optimiser groups of the trainable parameters: with and without weight decay."""
    decayed = set(decayed_parameters(module))
    groups: dict[bool, list[nn.Parameter]] = {True: [], False: []}
    for name, parameter in module.named_parameters():
        if parameter.requires_grad:
            groups[name in decayed].append(parameter)
    return [
        {"params": groups[True], "weight_decay": weight_decay},
        {"params": groups[False], "weight_decay": 0.0},
    ]


def adamw_with_schedule(
    module: nn.Module,
    learning_rate: float,
    weight_decay: float,
    total_steps: int,
    warmup_steps: int,
    min_lr_ratio: float,
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over :func:`parameter_groups` with linear warm-up and cosine decay.

    Args:
        module: the module to train (its trainable parameters).
        learning_rate: peak learning rate.
        weight_decay: decay of the layer weights.
        total_steps: optimiser steps in all.
        warmup_steps: linear warm-up steps (at least 1).
        min_lr_ratio: final learning rate over the peak.

    Returns:
        The optimiser and its per-step scheduler.
    """
    optimizer = torch.optim.AdamW(parameter_groups(module, weight_decay), lr=learning_rate)
    schedule = warmup_cosine(total_steps, max(warmup_steps, 1), min_lr_ratio)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
