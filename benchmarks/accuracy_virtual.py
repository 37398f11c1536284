"""Virtual-sensor training for the accuracy benchmark's unseen-sensor experiment.

The in-memory counterpart of ``SpectralWorldDataModule(virtual_sensors=...)``: the same
draws (:func:`~stsun_lightning.data.datasets.world.virtual.draw_virtual_sensor`, per item
from (seed, step, index)), the same rendering from surfaces
(:func:`~stsun_lightning.data.datasets.world.surfaces.render_surface`), the same label
resampling, padding and fixed reflectance normalisation, over the landscapes the
benchmark draws in memory.

Shapes: N scenes, T dates, S surface channels, C bands, H×W pixels, p patch side.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from accuracy_data import FINE_RES_M, Stack, make_batch
from stsun_lightning.batch import Batch, collate_batches
from stsun_lightning.data.datasets.virtual_patches import pad_item
from stsun_lightning.data.datasets.world.layout import Layout
from stsun_lightning.data.datasets.world.render import Sky, surface_state
from stsun_lightning.data.datasets.world.surfaces import (
    render_surface,
    resample_classes,
    surface_array,
)
from stsun_lightning.data.datasets.world.virtual import (
    VirtualSensors,
    draw_virtual_sensor,
    jitter_bands,
    reflectance_statistics,
)
from stsun_lightning.data.samplers.epochs import item_rng
from stsun_lightning.data.sensors import Band

__all__ = ["fixed_statistics", "render_surfaces", "virtual_batch"]

_VIRTUAL_STREAM = 17
_CROP_STREAM = 13


def fixed_statistics(bands: Sequence[Band]) -> tuple[Tensor, Tensor]:
    """(C,) means and stds of the fixed reflectance normalisation, for ``standardise``."""
    stats = reflectance_statistics(bands)
    return torch.tensor(stats.mean), torch.tensor(stats.std)


def render_surfaces(layouts: Sequence[Layout], gsd_m: float, date: dt.date) -> np.ndarray:
    """(N, 1, S, H, W) clear-sky surfaces of the landscapes at ``gsd_m`` on ``date``."""
    factor = round(gsd_m / FINE_RES_M)
    out = []
    for layout in layouts:
        state = surface_state(layout, date.timetuple().tm_yday, factor)
        h, w = state.shape
        clear = np.zeros((h, w), np.float32)
        sky = Sky(cloud=clear, shadow=clear, cirrus=clear)
        out.append(surface_array(state, sky, np.zeros((h, w), bool))[None])
    return np.stack(out)


def virtual_batch(
    surfaces: np.ndarray,
    real: Stack,
    config: VirtualSensors,
    patch: int,
    count: int,
    seed: int,
    step: int,
    task_row: int,
    rows: Sequence[int],
) -> Batch:
    """``count`` random windows, each through a virtual sensor or the real one.

    Args:
        surfaces: (N, 1, S, H, W) surfaces of the training landscapes.
        real: the same landscapes through the real sensor, standardised with
            :func:`fixed_statistics`.
        config: the virtual sensors.
        patch: window side in pixels.
        count: windows.
        seed: the run's seed.
        step: the training step (the "epoch" of the draws).
        task_row: the task's row.
        rows: the category rows of the classes.

    Returns:
        The batch, every item padded to ``config.max_bands`` bands and ``patch`` pixels.
    """
    n, _, _, height, width = real.image.shape
    items = []
    for index in range(count):
        crop = item_rng(seed, _CROP_STREAM, step, index)
        scene = int(crop.integers(n))
        top, left = int(crop.integers(height - patch + 1)), int(crop.integers(width - patch + 1))
        window = (slice(top, top + patch), slice(left, left + patch))
        label = real.label[scene][window].numpy()
        rng = item_rng(seed, _VIRTUAL_STREAM, step, index)
        if rng.random() >= config.probability:
            bands = jitter_bands(real.bands, rng, config.jitter_nm, config.jitter_fwhm)
            image = real.image[scene : scene + 1, :, :, window[0], window[1]]
            target = torch.from_numpy(label)[None]
            gsd = real.gsd_m
        else:
            sensor = draw_virtual_sensor(rng, config, real.gsd_m, patch)
            moved = jitter_bands(sensor.bands, rng, config.jitter_nm, config.jitter_fwhm)
            rendered, bands = (
                (sensor.bands, moved) if config.jitter == "metadata" else (moved, sensor.bands)
            )
            stored = render_surface(surfaces[scene][..., window[0], window[1]], rendered, rng,
                                    sensor.size)  # fmt: skip
            mean, std = fixed_statistics(bands)
            values = torch.from_numpy(stored) * 1e-4
            image = ((values - mean[:, None, None]) / std[:, None, None])[None]
            target = torch.from_numpy(resample_classes(label, sensor.size, len(real.classes)))
            target = target[None]
            gsd = sensor.gsd_m
        item = make_batch(image, real.dates[scene : scene + 1], bands, gsd, task_row,
                          len(rows), target, category_rows=rows)  # fmt: skip
        items.append(pad_item(item, config.max_bands, patch))
    return collate_batches(items)
