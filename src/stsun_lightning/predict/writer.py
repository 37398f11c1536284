"""Georeferenced outputs written row band by row band, then moved into place as a COG."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from stsun_lightning.io import atomic_path
from stsun_lightning.tasks.panels import class_colours

__all__ = ["CLASS_NODATA", "OutputRaster", "class_dtype"]

CLASS_NODATA = {"uint8": 255, "uint16": 65535}


def class_dtype(num_classes: int) -> str:
    """The smallest integer type holding ``num_classes`` classes and a nodata value."""
    return "uint8" if num_classes < 255 else "uint16"


class OutputRaster:
    """A GeoTIFF written in row bands, published atomically as a Cloud-Optimized GeoTIFF.

    Rows go to a tiled temporary GeoTIFF beside the target; :meth:`close` converts it to a
    COG (with overviews) in another temporary file and moves that onto the target. An
    interrupted run leaves no file at the target path.

    Args:
        target: final path.
        profile: rasterio profile of the grid (``crs``, ``transform``, ``width``, ``height``).
        count: bands.
        dtype: numpy dtype name.
        nodata: nodata value.
        band_names: description of each band.
        tags: dataset tags (e.g. category names).
        colormap: class value -> RGB, for class maps.
        resampling: overview resampling ("nearest" for classes, "average" for values).
        scale: physical value per stored unit, saved as every band's scale (GDAL metadata).
    """

    def __init__(
        self,
        target: str | Path,
        profile: dict[str, Any],
        count: int,
        dtype: str,
        nodata: float,
        band_names: list[str],
        tags: dict[str, str] | None = None,
        colormap: dict[int, tuple[int, int, int]] | None = None,
        resampling: str = "nearest",
        scale: float | None = None,
    ) -> None:
        self.target = Path(target)
        self.resampling = resampling
        self.colormap = colormap
        self.dtype, self.nodata = dtype, nodata
        self.target.parent.mkdir(parents=True, exist_ok=True)
        # Leftovers of an interrupted run for this target are superseded by this one.
        for stale in self.target.parent.glob(f".{self.target.name}.*"):
            stale.unlink(missing_ok=True)
        self._rows = self.target.with_name(f".{self.target.name}.{os.getpid()}.rows.tif")
        self._dataset = rasterio.open(
            self._rows, "w", driver="GTiff", tiled=True, blockxsize=256, blockysize=256, compress="zstd", zstd_level=1,
            count=count, dtype=dtype, nodata=nodata, crs=profile["crs"], transform=profile["transform"],
            width=profile["width"], height=profile["height"], BIGTIFF="IF_SAFER",
        )  # fmt: skip
        for i, name in enumerate(band_names, 1):
            self._dataset.set_band_description(i, name)
        if tags:
            self._dataset.update_tags(**tags)
        if scale is not None:
            self._dataset.scales = (scale,) * count

    def write_rows(self, top: int, data: np.ndarray, col: int = 0) -> None:
        """Write (count, n, w) values at rows ``top:top + n``, columns ``col:col + w``."""
        _, n, width = data.shape
        self._dataset.write(data, window=Window(col, top, width, n))

    def close(self) -> Path:
        """Publish the COG at the target path and remove the temporary rows file."""
        try:
            if self.colormap:
                self._dataset.write_colormap(1, self.colormap)
            self._dataset.close()
            with atomic_path(self.target) as tmp:
                rasterio.shutil.copy(
                    self._rows, tmp, driver="COG", compress="deflate", overview_resampling=self.resampling,
                    BIGTIFF="IF_SAFER",
                )  # fmt: skip
        finally:
            self.abort()
        return self.target

    def abort(self) -> None:
        """Drop the temporary rows file (the target is left untouched)."""
        if not self._dataset.closed:
            self._dataset.close()
        self._rows.unlink(missing_ok=True)

    def __enter__(self) -> OutputRaster:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def category_colormap(num_classes: int) -> dict[int, tuple[int, int, int]]:
    """Class value -> RGB (0-255) of :func:`~stsun_lightning.tasks.panels.class_colours`."""
    colours = (class_colours(num_classes).numpy() * 255).round().astype(int)
    return {i: tuple(int(v) for v in colours[i]) for i in range(num_classes)}
