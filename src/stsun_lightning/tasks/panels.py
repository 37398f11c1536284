"""Image panels for TensorBoard: an RGB composite of any band set, targets and predictions."""

from __future__ import annotations

import torch
from torch import Tensor

from stsun_lightning.batch import Batch
from stsun_lightning.models import StsunOutput
from stsun_lightning.palette import class_colours

__all__ = ["batch_panel", "class_colours", "panel", "rgb_composite"]

_RGB_NM = (665.0, 560.0, 490.0)
_MAX_DISTANCE_NM = 60.0


def rgb_composite(image: Tensor, wavelength_nm: Tensor, band_mask: Tensor) -> Tensor:
    """A displayable composite of one frame.

    The bands nearest red, green and blue (within 60 nm) make a true-colour picture;
    where a sensor has none (SAR, elevation) the first three real bands make a false
    colour. Each channel is stretched between its 2nd and 98th percentile.

    Args:
        image: (C, H, W) band values.
        wavelength_nm: (C,) centre wavelengths.
        band_mask: (C,) bool, real bands.

    Returns:
        (3, H, W) float in [0, 1].
    """
    real = torch.nonzero(band_mask).flatten()
    chosen = []
    for target in _RGB_NM:
        distance = (wavelength_nm[real] - target).abs()
        best = int(distance.argmin())
        if distance[best] > _MAX_DISTANCE_NM:
            chosen = []
            break
        chosen.append(int(real[best]))
    if not chosen:
        chosen = [int(real[i % len(real)]) for i in range(3)]
    rgb = torch.nan_to_num(image[chosen].float())
    flat = rgb.flatten(1)
    low = flat.quantile(0.02, dim=1)[:, None, None]
    high = flat.quantile(0.98, dim=1)[:, None, None]
    return ((rgb - low) / (high - low).clamp(min=1e-6)).clamp(0, 1)


def _map_to_rgb(classes: Tensor, colours: Tensor) -> Tensor:
    """(H, W) long (-1 = none) -> (3, H, W)."""
    rgb = colours[classes.clamp(min=0)].permute(2, 0, 1)
    return torch.where(classes[None] < 0, torch.zeros_like(rgb), rgb)


def _values_to_rgb(values: Tensor, low: float, high: float) -> Tensor:
    """(H, W) float -> (3, H, W) grey, NaN black."""
    grey = ((torch.nan_to_num(values, nan=low) - low) / max(high - low, 1e-6)).clamp(0, 1)
    return grey[None].expand(3, -1, -1)


def panel(
    image: Tensor, wavelength_nm: Tensor, band_mask: Tensor, target: Tensor, prediction: Tensor
) -> Tensor:
    """Input, target and prediction of one item side by side.

    Args:
        image: (C, H, W) the last real frame.
        wavelength_nm: (C,).
        band_mask: (C,) bool.
        target: (H', W') long classes or float values.
        prediction: same shape and kind as ``target``.

    Returns:
        (3, H', 3 W') float in [0, 1].
    """
    size = tuple(target.shape[-2:])
    rgb = torch.nn.functional.interpolate(
        rgb_composite(image, wavelength_nm, band_mask)[None], size=size
    )[0]
    if target.dtype.is_floating_point:
        finite = target[torch.isfinite(target)]
        low, high = (float(finite.min()), float(finite.max())) if finite.numel() else (0.0, 1.0)
        maps = [_values_to_rgb(target, low, high), _values_to_rgb(prediction, low, high)]
    else:
        colours = class_colours(int(max(target.max(), prediction.max(), 0)) + 1)
        maps = [_map_to_rgb(target, colours), _map_to_rgb(prediction, colours)]
    return torch.cat([rgb, *maps], -1)


def batch_panel(batch: Batch, output: StsunOutput) -> Tensor | None:
    """The panel of a batch's first item: its last real frame, and its last output slot.

    Args:
        batch: an evaluated batch.
        output: the network's output for it.

    Returns:
        (3, H', 3 W') float in [0, 1], or None for a batch without a target.
    """
    if batch.target is None:
        return None
    frame = int(batch.time_mask[0].nonzero().max())
    if output.logits is not None:
        target, prediction = batch.target[0, -1], output.logits[0, -1].argmax(0)
    else:
        assert output.values is not None
        target, prediction = batch.target[0, -1, 0], output.values[0, -1, 0]
    band_mask = batch.band_mask[0, frame] if batch.band_mask.dim() == 3 else batch.band_mask[0]
    return panel(
        batch.image[0, frame].cpu(),
        batch.wavelength_nm[0].cpu(),
        band_mask.cpu(),
        target.cpu(),
        prediction.detach().cpu(),
    )
