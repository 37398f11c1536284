"""Band statistics of scenes, read through the same series reader the network reads.

The statistics of an input are those of the values its series gives (the grid, the
``nodata`` override, the ``scale``), over windows drawn from the training area only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stsun_lightning.data.datasets.scenes import Scene
from stsun_lightning.data.io.statistics import MomentAccumulator, Statistics

__all__ = ["STATISTICS_PIXELS", "scene_statistics", "tile_windows"]

STATISTICS_PIXELS = 1 << 20
"""Pixels per input read for statistics (a sample of windows when the area is larger)."""

Bounds = tuple[float, float, float, float]


def tile_windows(scene: Scene, size: int) -> list[Bounds]:
    """Windows of ``size`` pixels tiling a scene's extent (the last ones clipped)."""
    extent = scene.extent
    windows = []
    for row in range(0, extent.height, size):
        for col in range(0, extent.width, size):
            h, w = min(size, extent.height - row), min(size, extent.width - col)
            windows.append(extent.window_bounds(row, col, h, w))
    return windows


def scene_statistics(
    windows: Sequence[tuple[Scene, Bounds]],
    pixels: int = STATISTICS_PIXELS,
    seed: int = 0,
) -> Statistics:
    """Mean and std of every input's bands (physical units) over ``windows``.

    Args:
        windows: (scene, bounds) to read; all scenes have the same inputs and bands.
        pixels: read windows until about this many pixels (a random subset, by
            ``seed``, when they hold more).
        seed: seed of the subset.

    Returns:
        Per input, its statistics; a band without any value gets mean 0 and std 1.
    """
    if not windows:
        raise ValueError("Band statistics need at least one window to read.")
    series = windows[0][0].series
    accumulators = {n: MomentAccumulator(len(b)) for n, b in series.bands.items()}
    order = np.random.default_rng((seed, 17)).permutation(len(windows))
    read = 0
    for i in order:
        scene, bounds = windows[int(i)]
        values = scene.series.read_physical(bounds)
        for name, accumulator in accumulators.items():
            accumulator.add(values[:, scene.series.channels[name]])
        read += values.shape[-2] * values.shape[-1]
        if read >= pixels:
            break
    return {n: a.result(series.bands[n]) for n, a in accumulators.items()}
