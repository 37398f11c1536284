"""The pixel grid every input is read onto, and windowed reads on it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from stsun_lightning.data.io.files import RasterFile, gsd_metres
from stsun_lightning.errors import ConfigError, RasterMismatchError, unreadable_file_error

__all__ = ["Extent", "Grid", "RasterLayout", "grid_of", "has_mask", "read_on_grid"]


@dataclass(frozen=True)
class Grid:
    """The pixel grid everything is read onto.

    Attributes:
        crs: its CRS.
        res: (x, y) pixel size in CRS units, both positive.
        origin: (x, y) of a pixel corner; pixel edges lie at ``origin + k * res``.
    """

    crs: CRS
    res: tuple[float, float]
    origin: tuple[float, float]

    def snap(self, bounds: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` grown outwards to pixel edges."""
        (ox, oy), (rx, ry) = self.origin, self.res
        left = ox + math.floor((bounds[0] - ox) / rx + 1e-6) * rx
        bottom = oy + math.floor((bounds[1] - oy) / ry + 1e-6) * ry
        right = ox + math.ceil((bounds[2] - ox) / rx - 1e-6) * rx
        top = oy + math.ceil((bounds[3] - oy) / ry - 1e-6) * ry
        return left, bottom, right, top

    def holds(self, crs: CRS, transform: Affine) -> bool:
        """Whether a raster with ``crs`` and ``transform`` lies on this grid's pixels."""
        if crs != self.crs or transform.b != 0 or transform.d != 0:
            return False
        (ox, oy), (rx, ry) = self.origin, self.res
        same_res = math.isclose(transform.a, rx, rel_tol=1e-9) and math.isclose(
            -transform.e, ry, rel_tol=1e-9
        )
        offset_x, offset_y = (transform.c - ox) / rx, (transform.f - oy) / ry
        return (
            same_res
            and abs(offset_x - round(offset_x)) < 1e-6
            and abs(offset_y - round(offset_y)) < 1e-6
        )


class _GridOpener:
    """Opens a file on the grid (picklable: it holds no open handle).

    A file on the grid's pixels is opened as it is, any other through a ``WarpedVRT``
    aligned to them.
    """

    def __init__(self, grid: Grid, resampling: Resampling, nodata: float | None) -> None:
        self.grid, self.resampling, self.nodata = grid, resampling, nodata

    def __call__(self, path: str) -> rasterio.io.DatasetReader | WarpedVRT:
        try:
            src = rasterio.open(path)
        except rasterio.errors.RasterioIOError as error:
            raise unreadable_file_error(path, error, action="open") from None
        if self.grid.holds(src.crs, src.transform) and self.nodata is None:
            return src
        left, bottom, right, top = self.grid.snap(
            transform_bounds(src.crs, self.grid.crs, *src.bounds)
        )
        rx, ry = self.grid.res
        extra = {} if self.nodata is None else {"src_nodata": self.nodata, "nodata": self.nodata}
        return WarpedVRT(
            src,
            crs=self.grid.crs,
            transform=Affine(rx, 0.0, left, 0.0, -ry, top),
            width=max(1, round((right - left) / rx)),
            height=max(1, round((top - bottom) / ry)),
            resampling=self.resampling,
            **extra,
        )


@dataclass(frozen=True)
class RasterLayout:
    """What a read needs to know of an open raster, looked up once per file.

    Attributes:
        left: x of the raster's left edge.
        top: y of its top edge.
        res: (x, y) pixel size, both positive.
        height: rows.
        width: columns.
        count: bands.
        masked: whether any band has a mask other than "all valid" (nodata, a
            per-dataset mask or alpha; checking costs as much as a small read).
    """

    left: float
    top: float
    res: tuple[float, float]
    height: int
    width: int
    count: int
    masked: bool

    @classmethod
    def of(cls, handle: rasterio.io.DatasetReader | WarpedVRT) -> RasterLayout:
        """The layout of an open raster."""
        t = handle.transform
        return cls(
            t.c, t.f, (t.a, -t.e), handle.height, handle.width, handle.count, has_mask(handle)
        )


def read_on_grid(
    handle: rasterio.io.DatasetReader | WarpedVRT,
    layout: RasterLayout,
    bounds: tuple[float, float, float, float],
    shape: tuple[int, int],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Read every band in the window of ``bounds`` (on the raster's pixel grid) in one call.

    Args:
        handle: a file or VRT whose pixels are aligned with ``bounds``.
        layout: its layout.
        bounds: ``(left, bottom, right, top)`` in the raster's CRS.
        shape: (h, w) of the output.
        out: (c, h, w) float32 array to read into (default: a new one).

    Returns:
        (c, h, w) float32, NaN where the raster has no data (its nodata value, its
        mask) or does not reach.
    """
    col0 = round((bounds[0] - layout.left) / layout.res[0])
    row0 = round((layout.top - bounds[3]) / layout.res[1])
    h, w = shape
    if out is None:
        out = np.empty((layout.count, h, w), dtype=np.float32)
    r0, r1 = max(row0, 0), min(row0 + h, layout.height)
    c0, c1 = max(col0, 0), min(col0 + w, layout.width)
    if r0 >= r1 or c0 >= c1:
        out.fill(np.nan)
        return out
    window = Window(c0, r0, c1 - c0, r1 - r0)
    # Reading the stored type and casting in numpy was measured faster than asking GDAL
    # for float32 (0.17 against 0.25 ms for a 13-band 64² window).
    data = handle.read(window=window)
    if (r0, r1, c0, c1) == (row0, row0 + h, col0, col0 + w):
        np.copyto(out, data, casting="unsafe")
        part = out
    else:
        out.fill(np.nan)
        part = out[:, r0 - row0 : r1 - row0, c0 - col0 : c1 - col0]
        np.copyto(part, data, casting="unsafe")
    if layout.masked:  # a mask band (nodata value, per-dataset mask or alpha)
        part[handle.read_masks(window=window) == 0] = np.nan
    return out


def has_mask(handle: rasterio.io.DatasetReader | WarpedVRT) -> bool:
    """Whether any band of an open raster has a mask other than "all valid"."""
    return any(MaskFlags.all_valid not in flags for flags in handle.mask_flag_enums)


def grid_of(
    path: Path | RasterFile, crs: str | None = None, res: float | None = None, input_name: str = ""
) -> Grid:
    """The grid of a raster file, optionally in another CRS or resolution.

    A file whose catalog states its CRS and transform (STAC's ``proj`` extension) is not
    opened.

    Args:
        path: the reference raster (the labels, else the first input).
        crs: a CRS to use instead (any rasterio CRS string, e.g. ``"EPSG:32632"``).
        res: a pixel size (CRS units) to use instead.
        input_name: the config input the file belongs to (named in errors).

    Raises:
        InputFileError: the file cannot be opened as a raster.
        RasterMismatchError: the file has no CRS.
    """
    georef = path.georef if isinstance(path, RasterFile) else None
    if isinstance(path, RasterFile):
        path = path.path  # type: ignore[assignment]
    if georef is not None:
        src_crs, transform, bounds = georef.crs, georef.transform, georef.bounds
        longest = max(georef.shape)
    else:
        try:
            with rasterio.open(path) as src:
                src_crs, transform, bounds = src.crs, src.transform, src.bounds
                longest = max(src.width, src.height)
        except rasterio.errors.RasterioIOError as error:
            raise unreadable_file_error(path, error, input_name=input_name, action="open") from None
    if src_crs is None:
        where = f"Input {input_name!r}: " if input_name else ""
        raise RasterMismatchError(f"{where}{path} has no CRS; the grid cannot be defined from it.")
    if res is not None and not res > 0:
        raise ConfigError(f"res must be a positive pixel size in CRS units, got {res}.")
    try:
        target = None if crs is None else CRS.from_user_input(crs)
    except rasterio.errors.CRSError as error:
        raise ConfigError(f"crs {crs!r} is not a CRS rasterio knows: {error}") from None
    if target is None or target == src_crs:
        size = res or abs(transform.a), res or abs(transform.e)
        return Grid(src_crs, (float(size[0]), float(size[1])), (transform.c, transform.f))
    left, bottom, right, top = transform_bounds(src_crs, target, *bounds)
    if res is None:
        res = max(right - left, top - bottom) / longest
    return Grid(target, (float(res), float(res)), (left, top))


@dataclass(frozen=True)
class Extent:
    """A raster on a grid: where an output map lies, pixel for pixel.

    Attributes:
        grid: the grid.
        left: x of the left edge (on a pixel edge of the grid).
        top: y of the top edge.
        height: rows.
        width: columns.
    """

    grid: Grid
    left: float
    top: float
    height: int
    width: int

    @classmethod
    def of_bounds(cls, grid: Grid, bounds: tuple[float, float, float, float]) -> Extent:
        """The extent covering ``(left, bottom, right, top)`` (grid CRS), grown to pixel edges."""
        left, bottom, right, top = grid.snap(bounds)
        rx, ry = grid.res
        return cls(
            grid, left, top, max(1, round((top - bottom) / ry)), max(1, round((right - left) / rx))
        )

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in the grid's CRS."""
        rx, ry = self.grid.res
        return self.left, self.top - self.height * ry, self.left + self.width * rx, self.top

    def window_bounds(
        self, row: int, col: int, height: int, width: int
    ) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of the window at pixel (row, col) of this extent."""
        rx, ry = self.grid.res
        left, top = self.left + col * rx, self.top - row * ry
        return left, top - height * ry, left + width * rx, top

    def profile(self) -> dict[str, Any]:
        """``crs``, ``transform``, ``height`` and ``width``: a rasterio profile of the output."""
        rx, ry = self.grid.res
        return {
            "crs": self.grid.crs,
            "transform": Affine(rx, 0.0, self.left, 0.0, -ry, self.top),
            "height": self.height,
            "width": self.width,
        }

    def gsd_m(self) -> float:
        """Metres per pixel at the extent's centre."""
        _, bottom, _, top = self.bounds
        latitude = (bottom + top) / 2 if self.grid.crs.is_geographic else 0.0
        return gsd_metres(self.grid.crs, self.grid.res[0], latitude)
