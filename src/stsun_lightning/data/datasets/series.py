"""Every input of a configuration read together onto one grid, normalised."""

from __future__ import annotations

from typing import Any

import numpy as np

from stsun_lightning.data.datasets.geotiff import GeoTiffRasterDataset
from stsun_lightning.data.io.files import days_since_epoch
from stsun_lightning.data.io.grid import Grid
from stsun_lightning.data.io.statistics import (
    BandStatistics,
)
from stsun_lightning.data.spec import InputSpec

__all__ = ["GeoTiffSeries"]


class GeoTiffSeries:
    """Every input and the labels of a configuration, read together onto one grid.

    Args:
        inputs: input specs with their TorchGeo datasets.
        labels: the labels' dataset, or None.
        days: the frames' dates (None for one static frame).
        grid: the common grid.
        statistics: band normalisation of each input.
    """

    def __init__(
        self,
        inputs: dict[str, tuple[InputSpec, GeoTiffRasterDataset]],
        labels: GeoTiffRasterDataset | None,
        days: list[Any],
        grid: Grid,
        statistics: BandStatistics,
    ) -> None:
        self.inputs, self.labels, self.days, self.grid = inputs, labels, days, grid
        self.metadata = [spec.sensor.metadata(spec.bands) for spec, _ in inputs.values()]
        self.dates = [days_since_epoch(d) for d in days]
        # Per input: (C, 1, 1) factor and offset of ``value * factor + offset``, the
        # normalisation ``(value * scale - mean) / std`` folded into one multiply-add.
        self._normalisation = {
            name: (
                (spec.scale / np.asarray(statistics.std[name], np.float32))[:, None, None],
                (
                    -np.asarray(statistics.mean[name], np.float32)
                    / np.asarray(statistics.std[name], np.float32)
                )[:, None, None],
            )
            for name, (spec, _) in inputs.items()
        }

    def read(
        self, bounds: tuple[float, float, float, float]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Read every input's frames in ``bounds``, normalised.

        Returns:
            image (T, C, h, w) float32 (NaN where there is no data), valid (h, w) bool
            (some value in some frame), time_mask (T,) bool (frames with some value).
        """
        parts = []
        for name, (_, dataset) in self.inputs.items():
            factor, offset = self._normalisation[name]
            frames = dataset.read(bounds, self.days)
            np.multiply(frames, factor, out=frames)
            np.add(frames, offset, out=frames)
            parts.append(frames)
        image = parts[0] if len(parts) == 1 else np.concatenate(parts, 1)
        missing = np.isnan(image)  # inf stays finite-masked by the model; NaN marks no data
        t, c = image.shape[:2]
        per_pixel = missing.reshape(t * c, -1).all(0).reshape(image.shape[2:])
        valid = ~per_pixel
        time_mask = ~missing.reshape(t, -1).all(1)
        if not time_mask.any():
            time_mask[:] = True  # nothing here at all: every pixel is masked instead
        return image, valid, time_mask
