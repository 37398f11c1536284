"""Label rasters read on the grid of a series, as the targets of one source."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stsun_lightning.data.datasets.frames import Frame
from stsun_lightning.data.datasets.geotiff import GeoTiffRasterDataset
from stsun_lightning.data.datasets.items import class_target, label_lookup, value_target
from stsun_lightning.data.sources import SourceInfo
from stsun_lightning.data.spec import LabelSpec
from stsun_lightning.errors import RasterMismatchError

__all__ = ["LabelRaster"]

Bounds = tuple[float, float, float, float]


class LabelRaster:
    """The labels of one source on a series' grid.

    Args:
        dataset: the label files (a :class:`GeoTiffRasterDataset` with ``is_image=False``,
            on the series' grid).
        spec: the labels' spec (classes or variables, ignored values, outputs).
        source: the source (its categories give the class order).
        frames: the series' frames (for ``per_date`` labels: one label date each).
    """

    def __init__(
        self,
        dataset: GeoTiffRasterDataset,
        spec: LabelSpec,
        source: SourceInfo,
        frames: Sequence[Frame],
    ) -> None:
        self.dataset, self.spec, self.source = dataset, spec, source
        self.frames = list(frames)
        self.lut = (
            label_lookup(spec.classes or {}, spec.ignore_values, source.categories)
            if source.is_classification
            else None
        )

    def read(self, bounds: Bounds) -> np.ndarray:
        """The target in ``bounds``.

        Returns:
            (To, h, w) int64 classes (-1 = ignore) or (To, V, h, w) float32 values (NaN
            = ignore); To = 1, or T for ``per_date`` labels.

        Raises:
            RasterMismatchError: a class value that is neither declared nor ignored, naming the
                value and the label file that holds it.
        """
        if self.spec.outputs == "per_date":
            raw = self.dataset.read(bounds, [(f.day,) if f.day else () for f in self.frames])
        else:
            raw = self.dataset.read_latest(bounds)[None]  # (1, V, h, w)
        if self.lut is None:
            return value_target(raw, self.spec.ignore_values)
        target = np.full(raw.shape, -1, dtype=np.int64)
        known = np.isfinite(raw)
        target[known], undeclared = class_target(raw[known], self.lut)
        if undeclared is not None:
            raise self._undeclared(undeclared, bounds)
        return target[:, 0]

    def _undeclared(self, value: int, bounds: Bounds) -> RasterMismatchError:
        """The error for ``value``, naming the file under ``bounds`` that holds it."""
        holder = "the label files"
        for path in self.dataset.files_under(bounds):
            if bool((self.dataset.read_file(path, bounds) == value).any()):
                holder = path
                break
        return RasterMismatchError(
            f"Label value {value} in {holder} is not a declared class of source "
            f"{self.source.name!r} (declared values: {sorted(self.lut or {})}); declare it "
            "under labels.classes or add it to labels.ignore_values."
        )
