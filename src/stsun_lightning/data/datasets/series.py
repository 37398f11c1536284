"""The one reader of a user's rasters: every input read together onto one grid, normalised.

Training patches, evaluation tiles and prediction windows all come from
:meth:`RasterSeries.read`, so the network sees the same numbers in every stage: the same
grid alignment, frame rule (:mod:`~stsun_lightning.data.datasets.frames`), nodata rule
and normalisation ``(stored × scale − mean) / std`` with statistics in physical units.

What a window holds (and means, in every reader):

- ``image`` (T, C, h, w): normalised values, NaN where there is no data;
- ``band_mask`` (T, C): band c has data somewhere in the window at frame t (an input
  without an acquisition at a frame, or a band missing on a date, is False there);
- ``time_mask`` (T,): the frame has some band with data;
- ``valid`` (h, w): the pixel has data in some band of some frame. Pixels without data
  in one band of a real band-frame (a cloud mask, a swath edge on one date) stay NaN,
  which the network reads as the band's mean (0 after normalisation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from stsun_lightning.data.datasets.frames import Frame
from stsun_lightning.data.datasets.geotiff import GeoTiffRasterDataset
from stsun_lightning.data.io.files import days_since_epoch
from stsun_lightning.data.io.grid import Grid
from stsun_lightning.data.io.statistics import InputStatistics, Statistics
from stsun_lightning.data.spec import InputSpec
from stsun_lightning.errors import ConfigError

__all__ = ["RasterSeries", "SeriesWindow", "fold_normalisation", "normalise_window"]

Bounds = tuple[float, float, float, float]


@dataclass
class SeriesWindow:
    """One window of a series (see the module docstring for what each field means).

    Attributes:
        image: (T, C, h, w) float32 normalised, NaN where there is no data.
        band_mask: (T, C) bool.
        time_mask: (T,) bool.
        valid: (h, w) bool.
    """

    image: np.ndarray
    band_mask: np.ndarray
    time_mask: np.ndarray
    valid: np.ndarray


def fold_normalisation(statistics: InputStatistics, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``(stored × scale − mean) / std`` as one multiply-add: (C, 1, 1) factor and offset."""
    std = np.asarray(statistics.std, np.float32)[:, None, None]
    mean = np.asarray(statistics.mean, np.float32)[:, None, None]
    return np.float32(scale) / std, -mean / std


def normalise_window(
    image: np.ndarray,
    normalisation: Mapping[str, tuple[np.ndarray, np.ndarray]],
    channels: Mapping[str, slice],
) -> SeriesWindow:
    """Normalise stored values in place and derive the window's masks.

    Args:
        image: (T, C, h, w) float32 stored values, NaN where there is no data.
        normalisation: per input, its :func:`fold_normalisation`.
        channels: per input, its channels of ``image``.
    """
    for name, (factor, offset) in normalisation.items():
        part = image[:, channels[name]]
        np.multiply(part, factor, out=part)
        np.add(part, offset, out=part)
    present = np.isfinite(image)
    if not present.all():  # inf is no data, like NaN (the network never sees either)
        image[~present] = np.nan
    band_mask = present.any(axis=(2, 3))
    valid = present.any(axis=(0, 1))
    time_mask = band_mask.any(1)
    if not time_mask.any():  # no data here at all: every pixel is masked instead
        band_mask[:] = True
        time_mask[:] = True
    return SeriesWindow(image, band_mask, time_mask, valid)


class RasterSeries:
    """Every input of a configuration on one grid, with its frames and normalisation.

    Args:
        inputs: per input name, its spec and its TorchGeo dataset on ``grid``.
        frames: the frames (see :class:`~stsun_lightning.data.datasets.frames.FrameRule`).
        grid: the grid every input is read onto.
        statistics: per input, band statistics in physical units (settable later with
            :meth:`set_statistics`, e.g. from a checkpoint, before the first read).
    """

    def __init__(
        self,
        inputs: Mapping[str, tuple[InputSpec, GeoTiffRasterDataset]],
        frames: Sequence[Frame],
        grid: Grid,
        statistics: Statistics | None = None,
    ) -> None:
        if not inputs:
            raise ConfigError("A series needs at least one input.")
        self.specs = {name: spec for name, (spec, _) in inputs.items()}
        self.datasets = {name: dataset for name, (_, dataset) in inputs.items()}
        self.frames = list(frames)
        self.grid = grid
        offsets = np.cumsum([0] + [len(s.bands) for s in self.specs.values()])
        self.channels = {
            name: slice(int(a), int(b))
            for name, a, b in zip(self.specs, offsets[:-1], offsets[1:], strict=True)
        }
        self.num_bands = int(offsets[-1])
        metadata = [spec.sensor.metadata(spec.bands) for spec in self.specs.values()]
        self.band_metadata = {
            key: torch.cat([m[key] for m in metadata])
            for key in ("wavelength_nm", "bandwidth_nm", "modality")
        }
        self.dates = [days_since_epoch(f.day) for f in self.frames]
        self._members = {name: [f.dates_of(name) for f in self.frames] for name in self.specs}
        self.statistics: Statistics | None = None
        self._normalisation: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if statistics is not None:
            self.set_statistics(statistics)

    @property
    def bands(self) -> dict[str, tuple[str, ...]]:
        """Per input, its band names in channel order."""
        return {name: spec.bands for name, spec in self.specs.items()}

    def set_statistics(self, statistics: Statistics) -> None:
        """Normalise with ``statistics`` (physical units) from now on.

        Raises:
            ConfigError: an input without statistics, or statistics of other bands.
        """
        folded = {}
        for name, spec in self.specs.items():
            if name not in statistics:
                raise ConfigError(
                    f"No band statistics for input {name!r} (given for {sorted(statistics)})."
                )
            stats: InputStatistics = statistics[name].select(spec.bands, f"Input {name!r}")
            folded[name] = fold_normalisation(stats, spec.scale)
        self.statistics = {n: statistics[n].select(s.bands, n) for n, s in self.specs.items()}
        self._normalisation = folded

    def read_physical(self, bounds: Bounds) -> np.ndarray:
        """(T, C, h, w) float32 physical values (stored × scale) in ``bounds``, NaN = no data.

        Args:
            bounds: ``(left, bottom, right, top)`` in the grid's CRS, on pixel edges.
        """
        image = self._read_stored(bounds)
        for name, spec in self.specs.items():
            if spec.scale != 1.0:
                image[:, self.channels[name]] *= np.float32(spec.scale)
        return image

    def read(self, bounds: Bounds) -> SeriesWindow:
        """The normalised window at ``bounds`` with its masks.

        Args:
            bounds: ``(left, bottom, right, top)`` in the grid's CRS, on pixel edges.

        Raises:
            RuntimeError: statistics were never set.
        """
        if not self._normalisation:
            raise RuntimeError(
                "RasterSeries.read() before its statistics were set (set_statistics)."
            )
        return normalise_window(self._read_stored(bounds), self._normalisation, self.channels)

    def _read_stored(self, bounds: Bounds) -> np.ndarray:
        rx, ry = self.grid.res
        h, w = round((bounds[3] - bounds[1]) / ry), round((bounds[2] - bounds[0]) / rx)
        image = np.empty((len(self.frames), self.num_bands, h, w), dtype=np.float32)
        for name, dataset in self.datasets.items():
            dataset.read(bounds, self._members[name], out=image[:, self.channels[name]])
        return image
