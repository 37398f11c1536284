"""Coarsening: an item or batch as a coarser sensor would see the same ground.

A network trained at one ground sample distance reads another poorly: at 30 m the
textures it learnt at 10 m are a third of their size in pixels, and its tokens cover
nine times the ground. Averaging blocks of ``f × f`` pixels is what a sensor with ``f``
times the GSD and a box-shaped point spread function records of the same ground. The
datamodules' ``coarsen`` option draws a share of training crops ``f`` times larger and
averages them down to the patch (:class:`~stsun_lightning.data.samplers.crops.RandomCrops`,
``PatchRef.factor``), so a coarse item has the patch's pixels and ``f²`` times its ground:

- the image is averaged over the valid pixels of each block (padding stays exact: an
  invalid pixel's value never enters a mean), a block with no valid pixel is invalid;
- class targets take the majority class of the labelled pixels of each block (-1 where
  none is labelled), value targets the mean of their finite values (NaN where none);
- ``gsd_m`` is multiplied by ``f``; bands, dates and masks of bands and frames are kept.

Sides that ``f`` does not divide are cropped to the largest multiple first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from stsun_lightning.batch import Batch
from stsun_lightning.errors import ConfigError

__all__ = [
    "DEFAULT_FACTORS",
    "block_majority",
    "coarsen_batch",
    "coarsening_factors",
    "draw_factor",
]

DEFAULT_FACTORS = (2, 3)
"""The coarsening factors drawn from unless told otherwise (10 m data seen at 20 and 30 m)."""


def _block_sum(values: Tensor, factor: int) -> Tensor:
    """(..., H/f, W/f) sums of ``f × f`` blocks of (..., H, W) values."""
    shape = values.shape
    flat = values.reshape(-1, 1, shape[-2], shape[-1])
    pooled = F.avg_pool2d(flat, factor) * (factor * factor)
    return pooled.reshape(*shape[:-2], *pooled.shape[-2:])


def _crop(values: Tensor, factor: int) -> Tensor:
    h, w = values.shape[-2:]
    return values[..., : h - h % factor, : w - w % factor]


def block_majority(target: Tensor, factor: int, num_classes: int) -> Tensor:
    """(..., H/f, W/f) most frequent labelled class of each ``f × f`` block, -1 where none.

    Args:
        target: (..., H, W) classes in [0, num_classes), negative where unlabelled; H and
            W multiples of ``factor``.
        factor: pixels per block along each axis.
        num_classes: K.
    """
    labelled = target >= 0
    counts = torch.stack(
        [_block_sum((labelled & (target == k)).float(), factor) for k in range(num_classes)]
    )  # (K, ..., H/f, W/f); ties go to the lower class
    best = counts.argmax(0)
    return torch.where(counts.sum(0) > 0, best, torch.full_like(best, -1))


def _finite_mean(values: Tensor, factor: int) -> Tensor:
    """(..., H/f, W/f) mean of the finite values of each block, NaN where none."""
    finite = torch.isfinite(values)
    total = _block_sum(torch.where(finite, values, 0.0), factor)
    count = _block_sum(finite.to(values.dtype), factor)
    return torch.where(count > 0, total / count.clamp(min=1), torch.nan)


def coarsen_batch(batch: Batch, factor: int) -> Batch:
    """``batch`` as seen at ``factor`` times its GSD (see the module's docstring).

    Args:
        batch: image (B, T, C, H, W), valid_mask (B, H, W), gsd_m (B,), target
            (B, To, H', W') classes (-1 = ignore) or (B, To, V, H', W') values
            (NaN = ignore), or None.
        factor: pixels of ``batch`` per pixel of the result along each axis (>= 1).

    Returns:
        The batch with image (B, T, C, H // f, W // f), valid_mask (B, H // f, W // f),
        gsd_m × f and target (…, H' // f, W' // f); the same batch for a factor of 1.

    Raises:
        ValueError: a factor below 1, or one that leaves fewer than one pixel.
    """
    if factor < 1:
        raise ValueError(f"coarsening factor must be at least 1, got {factor}.")
    if factor == 1:
        return batch
    h, w = batch.image.shape[-2:]
    if h < factor or w < factor:
        raise ValueError(
            f"coarsening factor {factor} leaves no pixel of a {h} × {w} batch; "
            f"use a factor of at most {min(h, w)}."
        )
    valid = _crop(batch.valid_mask, factor)  # (B, H, W)
    image = _crop(batch.image, factor)
    weighted = torch.where(valid[:, None, None], image, 0.0).nan_to_num(0.0)
    weight = _block_sum(valid.float(), factor)  # (B, H/f, W/f)
    pooled = _block_sum(weighted, factor) / weight.clamp(min=1)[:, None, None]
    target = batch.target
    if target is not None:
        target = _crop(target, factor)
        if target.is_floating_point():
            target = _finite_mean(target, factor)
        else:  # a position past the requested rows survives, for the loss to reject
            classes = int(target.max().clamp(min=0)) + 1
            if batch.categories is not None:
                classes = max(classes, batch.categories.shape[-1])
            target = block_majority(target, factor, classes)
    return dataclasses.replace(
        batch,
        image=pooled.to(batch.image.dtype),
        valid_mask=weight > 0,
        gsd_m=batch.gsd_m * factor,
        target=target,
    )


def coarsening_factors(
    share: float, factors: Sequence[int] | None, owner: str = ""
) -> tuple[int, ...]:
    """The coarsening factors an option asks for, checked (default :data:`DEFAULT_FACTORS`).

    Args:
        share: the ``coarsen`` option, in [0, 1].
        factors: the ``coarsen_factors`` option (None: the default).
        owner: what the options belong to, for the message (``"data"``; "" for none).

    Raises:
        ConfigError: a share outside [0, 1], or factors empty or below 2, naming them.
    """
    prefix = f"{owner}." if owner else ""
    chosen = tuple(DEFAULT_FACTORS if factors is None else factors)
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"{prefix}coarsen must be in [0, 1], got {share}.")
    if not chosen or min(chosen) < 2 or any(int(f) != f for f in chosen):
        raise ConfigError(
            f"{prefix}coarsen_factors must be integers of at least 2, got {list(chosen)}."
        )
    return tuple(int(f) for f in chosen)


def draw_factor(
    probability: float,
    factors: Sequence[int] = DEFAULT_FACTORS,
    generator: torch.Generator | None = None,
) -> int:
    """With ``probability``, a factor drawn uniformly from ``factors``; else 1.

    Args:
        probability: share of draws that coarsen, in [0, 1].
        factors: the factors drawn from (each >= 2).
        generator: random source (default: torch's global one, which checkpoints save).

    Raises:
        ConfigError: a probability outside [0, 1], no factors, or a factor below 2
            (:func:`coarsening_factors`).
    """
    factors = coarsening_factors(probability, factors)
    if probability == 0.0:
        return 1
    draw = torch.rand(2, generator=generator)
    if float(draw[0]) >= probability:
        return 1
    return factors[min(int(float(draw[1]) * len(factors)), len(factors) - 1)]
