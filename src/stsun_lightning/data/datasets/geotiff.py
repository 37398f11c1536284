"""TorchGeo datasets of a user's GeoTIFFs, read onto one pixel grid.

One :class:`GeoTiffRasterDataset` per input (a sensor's files, one multi-band file per
date or one file per band and date) and one for the labels. They are TorchGeo
``RasterDataset`` objects with ``time_series=True``: TorchGeo indexes the files (footprints
in one CRS, date intervals), their ``&`` is an ``IntersectionDataset``, and TorchGeo's
samplers index them. Reading is our own, because two measured facts of TorchGeo 0.10's
reader matter here:

- its time series carry no per-frame dates (only float32 query bounds); every sample
  of ours carries ``dates``, one per frame (days since 1970-01-01, NaN when unknown);
- file handles opened before a DataLoader forks its workers are shared by them and
  return wrong pixels or crash; ours are opened lazily in each process
  (a handle cache keyed by process id).

Files on the grid are read with one windowed read of all their bands; a file in
another CRS or resolution is read through a ``WarpedVRT`` aligned to the grid's pixels,
so every input lands pixel for pixel on the labels.

A file is found by path (its date from its name or tags, its band from its name) or
named by a STAC catalog (a :class:`~stsun_lightning.data.io.files.RasterFile`: its date
and bands as the catalog states them); the two are read alike.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyproj
import rasterio
import rasterio.errors
import torch
from rasterio.enums import Resampling
from torchgeo.datasets import RasterDataset
from torchgeo.datasets.utils import GeoSlice

from stsun_lightning.data.io.files import (
    DEFAULT_DATE_PATTERN,
    RasterFile,
    days_since_epoch,
    find_raster_files,
    name_date,
    tag_date,
)
from stsun_lightning.data.io.grid import Grid, RasterLayout, _GridOpener, read_on_grid
from stsun_lightning.data.io.handles import Handles
from stsun_lightning.data.io.stac import stac_files
from stsun_lightning.data.spec import InputSpec
from stsun_lightning.errors import RasterMismatchError, unreadable_file_error

__all__ = ["GeoTiffRasterDataset", "band_token", "files_of", "input_files"]

# Per file band, the input channel it fills (None: not read); None for a file whose
# bands are the input's, in order.
Channels = tuple[int | None, ...] | None


class GeoTiffRasterDataset(RasterDataset):
    """A TorchGeo ``RasterDataset`` (``time_series=True``) of one input or of the labels.

    Samples are TorchGeo mappings: ``image`` (T, C, h, w) float32 (NaN where there is
    no data: nodata, NaN, outside the files, a band missing on a date) for inputs, or
    ``mask`` (T, h, w) for labels (the raw values; NaN where there is none), with
    ``dates`` (T,) days since 1970-01-01 (NaN for static files), ``bounds`` and
    ``transform``. Frames are the distinct dates of the files under the query, in
    date order; files of one date (tiles) are mosaicked; static (undated) files form
    one frame.

    Args:
        files: the raster files (paths, or files a STAC catalog names).
        bands: the bands (inputs) or ``("label",)``.
        grid: the grid to read onto (its CRS and resolution become the dataset's).
        separate_files: one file per band (the band's name a token of the file name).
        date_pattern: regex with a group ``date`` in file names.
        is_image: inputs (True) or labels (False).
        resampling: onto the grid, where a file is not on it.
        nodata: overrides the files' nodata.
        name: the input's name, for messages.
    """

    filename_regex = ".*"

    def __init__(
        self,
        files: Sequence[Path | RasterFile],
        bands: Sequence[str],
        grid: Grid,
        separate_files: bool = False,
        date_pattern: str = DEFAULT_DATE_PATTERN,
        is_image: bool = True,
        resampling: str = "bilinear",
        nodata: float | None = None,
        name: str = "input",
    ) -> None:
        self.input_name = name
        self.date_pattern = date_pattern
        self.is_image = is_image
        self.separate_files = separate_files
        self.file_bands = tuple(bands)
        self.grid = grid
        self._resampling = Resampling[resampling] if is_image else Resampling.nearest
        self.handles = Handles(_GridOpener(grid, self._resampling, nodata))
        self._checked: dict[str, int] = {}
        self._layouts: dict[str, RasterLayout] = {}  # per file, looked up on first read
        self.catalogued = {f.path: f for f in files if isinstance(f, RasterFile)}
        super().__init__(
            paths=[f.path if isinstance(f, RasterFile) else str(f) for f in files],
            crs=pyproj.CRS.from_user_input(grid.crs.to_wkt()),
            res=grid.res,
            cache=False,
            time_series=True,
        )
        self._annotate()

    @property
    def files(self) -> list[str]:
        """The files given, each once, in order (already found: never searched again)."""
        return sorted(set(self.paths))

    def _where(self, path: str | Path) -> str:
        """A file for messages: its path, and where its catalog names it."""
        known = self.catalogued.get(str(path))
        return f"{path} ({known.origin})" if known else str(path)

    @property
    def resampling(self) -> Resampling:
        """How files off the grid are resampled (nearest for labels)."""
        return self._resampling

    def _load_warp_file(self, filepath: Path, crs: Any = None) -> Any:
        """Open a file for TorchGeo's index, with errors that name it."""
        try:
            with rasterio.open(filepath) as src:
                has_crs, count = src.crs is not None, src.count
        except rasterio.errors.RasterioIOError as error:
            raise unreadable_file_error(
                self._where(filepath), error, input_name=self.input_name, action="open"
            ) from None
        if not has_crs:
            raise RasterMismatchError(
                f"Input {self.input_name!r}: {self._where(filepath)} has no CRS; inputs and labels are "
                "aligned by their coordinates, so every file needs one."
            )
        self._checked[str(filepath)] = count
        return super()._load_warp_file(filepath, crs)

    def _filepath_to_timestamp(self, filepath: Path) -> tuple[datetime, datetime]:
        """The file's day from its catalog, name or tags; unbounded for a static file."""
        known = self.catalogued.get(str(filepath))
        day = known.day if known else name_date(Path(filepath), self.date_pattern)
        if day is None:
            try:
                with rasterio.open(filepath) as src:
                    day = tag_date(src.tags())
            except rasterio.errors.RasterioIOError as error:
                raise unreadable_file_error(
                    filepath, error, input_name=self.input_name, action="open"
                ) from None
        if day is None:
            return pd.Timestamp.min, pd.Timestamp.max
        start = pd.Timestamp(day)
        return start, start + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)

    def _annotate(self) -> None:
        """Note each file's band (separate files) and date, checking band counts.

        Kept beside the index, not in it: TorchGeo's ``IntersectionDataset`` merges
        the indexes' columns and would clash on them.
        """
        self.band_of: dict[str, Channels] = {}
        self.day_of: dict[str, date | None] = {}
        unnamed = set()
        for path, interval in zip(self.index.filepath, self.index.index, strict=True):
            path = str(path)
            static = interval.left == pd.Timestamp.min
            self.day_of[path] = None if static else interval.left.date()
            count = self._checked.get(path)
            if path in self.catalogued:
                self.band_of[path] = self._catalogued_channels(self.catalogued[path], count)
            elif self.separate_files:
                band = band_token(Path(path), self.file_bands)
                if self.is_image and band is not None and count not in (None, 1):
                    raise RasterMismatchError(
                        f"Input {self.input_name!r}: {path} has {count} bands, expected 1 "
                        f"(separate_files: one file per band, here {band})."
                    )
                self.band_of[path] = None if band is None else (self.file_bands.index(band),)
                if band is None:
                    unnamed.add(path)
            elif self.is_image and count is not None and count != len(self.file_bands):
                raise RasterMismatchError(
                    f"Input {self.input_name!r}: {path} has {count} band(s), expected "
                    f"{len(self.file_bands)} ({', '.join(self.file_bands)}): list the bands "
                    "stored in each file, in order, under 'bands', or set "
                    "separate_files: true for one file per band."
                )
            else:
                self.band_of[path] = None
        if unnamed:
            self.index = self.index[[str(p) not in unnamed for p in self.index.filepath]]
            self.band_of = {p: b for p, b in self.band_of.items() if p not in unnamed}
            self.day_of = {p: self.day_of[p] for p in self.band_of}
            if self.index.empty:
                raise RasterMismatchError(
                    f"Input {self.input_name!r}: no file name holds a band name of "
                    f"{list(self.file_bands)} as a token (e.g. scene_20200101_B04.tif)."
                )

    def _catalogued_channels(self, file: RasterFile, count: int | None) -> Channels:
        """The channels a catalogued file fills, its band count checked against its catalog."""
        if count is not None and count != len(file.bands):
            raise RasterMismatchError(
                f"Input {self.input_name!r}: {file.path} ({file.origin}) has {count} band(s), "
                f"but the catalog gives it {len(file.bands)}: list the bands it stores, in "
                "order, under 'assets' ({asset key: [bands]})."
            )
        channels = tuple(
            self.file_bands.index(b) if b in self.file_bands else None for b in file.bands
        )
        return None if channels == tuple(range(len(self.file_bands))) else channels

    @property
    def dated(self) -> bool:
        """Whether any file has a date."""
        return any(self.day_of[str(p)] is not None for p in self.index.filepath)

    def days(self) -> list[date]:
        """The distinct dates of the files, in order."""
        return sorted({d for p in self.index.filepath if (d := self.day_of[str(p)]) is not None})

    def _shape(self, bounds: tuple[float, float, float, float]) -> tuple[int, int]:
        rx, ry = self.grid.res
        return round((bounds[3] - bounds[1]) / ry), round((bounds[2] - bounds[0]) / rx)

    def _hits(self, bounds: tuple[float, float, float, float]) -> list[str]:
        """Files whose footprint's bounding box meets ``bounds`` (vectorised, per patch)."""
        if getattr(self, "_footprints", None) is None or len(self._footprints) != len(self.index):
            self._paths = [str(p) for p in self.index.filepath]
            self._footprints = np.asarray(self.index.geometry.bounds, dtype=np.float64)
        f = self._footprints
        meets = (
            (f[:, 0] < bounds[2])
            & (f[:, 2] > bounds[0])
            & (f[:, 1] < bounds[3])
            & (f[:, 3] > bounds[1])
        )
        return [self._paths[i] for i in np.flatnonzero(meets)]

    def read_latest(self, bounds: tuple[float, float, float, float]) -> np.ndarray:
        """(C, h, w): every file under ``bounds`` painted newest first (static last)."""
        hits = sorted(self._hits(bounds), key=lambda p: self.day_of[p] or date.min, reverse=True)
        if len(hits) == 1 and self.band_of[hits[0]] is None:
            return self._read(hits[0], bounds, self._shape(bounds))
        return self._mosaic(hits, bounds, self._shape(bounds))

    def read(
        self,
        bounds: tuple[float, float, float, float],
        frames: Sequence[Sequence[date]],
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Read ``bounds`` (on the grid) at each frame.

        Args:
            bounds: ``(left, bottom, right, top)`` in the grid's CRS, on pixel edges.
            frames: per frame, the dates of this input's files that make it up, the
                first painted first (an empty entry: no acquisition at that frame);
                static (undated) files fill every frame where it has no data.
            out: (T, C, h, w) float32 array to read into (default: a new one).

        Returns:
            (T, C, h, w) float32, NaN where there is no data (a frame without a file, a
            band missing on a date, nodata, outside the files).
        """
        shape = self._shape(bounds)
        if out is None:
            out = np.empty((len(frames), len(self.file_bands), *shape), dtype=np.float32)
        by_day: dict[date | None, list[str]] = {}
        for path in self._hits(bounds):
            by_day.setdefault(self.day_of[path], []).append(path)
        static = self._mosaic(by_day.pop(None), bounds, shape) if None in by_day else None
        for t, days in enumerate(frames):
            paths = [p for day in days for p in by_day.get(day, [])]
            if len(paths) == 1 and self.band_of[paths[0]] is None:
                self._read(paths[0], bounds, shape, out[t])  # straight into the frame
            else:
                out[t] = self._mosaic(paths, bounds, shape)
            if static is not None:
                np.copyto(out[t], static, where=np.isnan(out[t]))
        return out

    def files_under(self, bounds: tuple[float, float, float, float]) -> list[str]:
        """The files whose footprint meets ``bounds`` (grid CRS)."""
        return self._hits(bounds)

    def read_file(self, path: str, bounds: tuple[float, float, float, float]) -> np.ndarray:
        """(c, h, w): one file's values in ``bounds`` on the grid (NaN = no data)."""
        return self._read(path, bounds, self._shape(bounds))

    def _read(
        self,
        path: str,
        bounds: tuple[float, float, float, float],
        shape: tuple[int, int],
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """(c, h, w): one file's window (its layout looked up once per file)."""
        handle = self.handles.get(path)
        layout = self._layouts.get(path)
        if layout is None:
            layout = self._layouts[path] = RasterLayout.of(handle)
        try:
            return read_on_grid(handle, layout, bounds, shape, out)
        except rasterio.errors.RasterioIOError as error:
            raise unreadable_file_error(
                self._where(path), error, input_name=self.input_name
            ) from None

    def _mosaic(
        self,
        paths: Sequence[str],
        bounds: tuple[float, float, float, float],
        shape: tuple[int, int],
    ) -> np.ndarray:
        """(C, h, w): the files painted in order where they have data (all bands in one read)."""
        out = np.full((len(self.file_bands), *shape), np.nan, dtype=np.float32)
        for path in paths:
            values = self._read(path, bounds, shape)
            channels = self.band_of[path]
            if channels is None:
                np.copyto(out, values, where=np.isnan(out))
                continue
            for stored, channel in enumerate(channels):
                if channel is not None:
                    target = out[channel]
                    np.copyto(target, values[stored], where=np.isnan(target))
        return out

    def __getitem__(self, index: GeoSlice) -> dict[str, Any]:
        """A TorchGeo sample of the query, with per-frame ``dates``.

        Args:
            index: ``[xmin:xmax:xres, ymin:ymax:yres, tmin:tmax]`` in the grid's CRS.

        Returns:
            ``image`` (T, C, h, w) or ``mask`` (T, h, w), ``dates`` (T,), ``bounds``,
            ``transform``.

        Raises:
            IndexError: the query holds no file.
        """
        x, y, t = self._disambiguate_slice(index)
        bounds = self.grid.snap((x.start, y.start, x.stop, y.stop))
        if not self._hits(bounds):
            raise IndexError(f"Query {bounds} holds no file of input {self.input_name!r}.")
        in_time = [d for d in self.days() if t.start <= pd.Timestamp(d) <= t.stop] or [None]
        data = torch.from_numpy(self.read(bounds, [[d] if d else [] for d in in_time]))
        sample: dict[str, Any] = {
            "dates": torch.tensor([days_since_epoch(d) for d in in_time], dtype=torch.float64),
            "bounds": self._slice_to_tensor(index),
            "transform": torch.tensor(
                rasterio.transform.from_origin(bounds[0], bounds[3], *self.grid.res)
            ),
        }
        if self.is_image:
            sample["image"] = data
        else:
            sample["mask"] = data[:, 0]
        return sample


def band_token(path: Path, bands: Sequence[str]) -> str | None:
    """The band whose name is a token of the file name (between ``_ - .`` or the ends)."""
    tokens = set(re.split(r"[_.\-\s]+", path.stem))
    found = [b for b in bands if b in tokens]
    return found[0] if len(found) == 1 else None


def files_of(spec_paths: Sequence[str], name: str) -> list[Path]:
    """The raster files of an input (see :func:`find_raster_files`), each once."""
    return sorted(set(find_raster_files(list(spec_paths), name)))


def input_files(spec: InputSpec) -> list[Path | RasterFile]:
    """The files of an input: found by its ``paths``, then named by its ``stac`` catalog.

    Raises:
        MissingFileError: a path that matches no raster, a catalog or a local asset
            that does not exist.
        ConfigError: a catalog whose items or assets do not fit the input
            (see :func:`~stsun_lightning.data.io.stac.stac_files`).
    """
    found: list[Path | RasterFile] = list(files_of(spec.paths, spec.name)) if spec.paths else []
    if spec.stac is not None:
        found += stac_files(spec.stac, spec.sensor, spec.bands, spec.name)
    return found
