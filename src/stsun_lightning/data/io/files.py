"""Finding raster files, their sensors, dates and ground sample distance.

Shared by the training datamodule of a user's GeoTIFFs and by whole-raster prediction,
so both read paths, sensors and dates the same way.
"""

from __future__ import annotations

import glob
import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine

from stsun_lightning.data.sensors import Sensor, get_sensor, load_sensor_yaml
from stsun_lightning.errors import ConfigError, MissingFileError

__all__ = [
    "DEFAULT_DATE_PATTERN",
    "Georeference",
    "RasterFile",
    "days_since_epoch",
    "file_date",
    "find_raster_files",
    "gsd_m",
    "gsd_metres",
    "name_date",
    "parse_date",
    "resolve_sensor",
    "tag_date",
]

DEFAULT_DATE_PATTERN = r"(?P<date>\d{4}-?\d{2}-?\d{2})"
_RASTER_SUFFIXES = (".tif", ".tiff", ".TIF", ".TIFF")
_DATE_TAGS = ("ACQUISITION_DATE", "DATE", "TIFFTAG_DATETIME")


@dataclass(frozen=True)
class Georeference:
    """Where a raster lies, known without opening it (e.g. from STAC's ``proj`` extension).

    Attributes:
        crs: its CRS.
        transform: its affine transform (pixel corner to CRS coordinates).
        shape: (rows, columns).
    """

    crs: CRS
    transform: Affine
    shape: tuple[int, int]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in its CRS."""
        rows, cols = self.shape
        xs, ys = zip(*(self.transform @ (c, r) for c in (0, cols) for r in (0, rows)), strict=True)
        return min(xs), min(ys), max(xs), max(ys)


@dataclass(frozen=True)
class RasterFile:
    """A raster of an input whose date, bands and scene a catalog states (STAC).

    Files found by path take these from their names and tags instead; both are read by
    the same reader.

    Attributes:
        path: what rasterio opens: a local path or a GDAL virtual path
            (``/vsicurl/https://...``).
        day: its acquisition date.
        bands: the band stored in each of its bands, in order; None for a band the
            input does not read.
        scene: the scene it belongs to at prediction.
        origin: where the catalog names it, for messages (``item 'x', asset 'B04'``).
        georef: its CRS, transform and shape when the catalog states them.
    """

    path: str
    day: date
    bands: tuple[str | None, ...]
    scene: str
    origin: str
    georef: Georeference | None = None


def find_raster_files(paths: str | list[str], input_name: str) -> list[Path]:
    """Files of one input from files, folders (their ``.tif`` files) or globs.

    Raises:
        MissingFileError: a path matches no raster, naming the input and the path.
    """
    found: list[Path] = []
    for pattern in [paths] if isinstance(paths, str) else paths:
        path = Path(pattern).expanduser()
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.suffix in _RASTER_SUFFIXES)
        elif any(c in pattern for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        else:
            matches = [path] if path.is_file() else []
        if not matches:
            raise MissingFileError(
                f"Input {input_name!r}: {pattern!r} matches no raster (expected a file, a folder "
                "of .tif files or a glob such as 'scenes/*_B04.tif')."
            )
        found += matches
    return found


def resolve_sensor(spec: str | dict[str, Any], input_name: str) -> Sensor:
    """A sensor from a registry name, a YAML file (``*.yaml``) or an inline mapping.

    Raises:
        UnknownNameError: an unknown sensor name, naming the input and the closest sensor.
        ConfigError: an invalid sensor file or mapping, naming the sensor and the field.
    """
    if isinstance(spec, dict):
        return Sensor.from_dict(spec)
    if str(spec).endswith((".yaml", ".yml")):
        sensor = load_sensor_yaml(spec, register=False)
        if isinstance(sensor, list):
            raise ConfigError(
                f"Input {input_name!r}: {spec} describes several sensors; expected one."
            )
        return sensor
    return get_sensor(spec, where=f"input {input_name!r}")


def parse_date(text: str) -> date | None:
    """A date from text holding ``YYYYMMDD`` or ``YYYY-MM-DD`` (and maybe a time); else None."""
    digits = re.sub(r"\D", "", text)
    try:
        return datetime.strptime(digits[:8], "%Y%m%d").date() if len(digits) >= 8 else None
    except ValueError:
        return None


def name_date(path: Path, date_pattern: str) -> date | None:
    """The date in a file's name, found by ``date_pattern`` (a regex with a group ``date``).

    Raises:
        ConfigError: the pattern matches text that is not a date, naming the file.
    """
    match = re.search(date_pattern, Path(path).stem)
    if not match or match.groupdict().get("date") is None:
        return None
    parsed = parse_date(match.group("date"))
    if parsed is None:
        raise ConfigError(
            f"{path}: {match.group('date')!r} (matched by date_pattern) is not a date "
            "(expected YYYYMMDD or YYYY-MM-DD)."
        )
    return parsed


def tag_date(tags: dict[str, str]) -> date | None:
    """The date in a raster's ``ACQUISITION_DATE``, ``DATE`` or ``TIFFTAG_DATETIME`` tag."""
    for tag in _DATE_TAGS:
        if tag in tags and (parsed := parse_date(tags[tag])) is not None:
            return parsed
    return None


def file_date(path: Path, dataset: rasterio.io.DatasetReader, date_pattern: str) -> date | None:
    """A raster's date: from its name by ``date_pattern``, else from its tags, else None."""
    return name_date(path, date_pattern) or tag_date(dataset.tags())


def gsd_metres(crs: rasterio.crs.CRS, res: float, latitude: float = 0.0) -> float:
    """Metres per pixel of a grid with pixel size ``res`` in ``crs`` units.

    Args:
        crs: the grid's CRS.
        res: pixel size in CRS units (degrees for a geographic CRS).
        latitude: latitude of the grid's centre (for a geographic CRS).
    """
    if crs.is_geographic:
        return res * 111_320.0 * math.cos(math.radians(latitude))
    return res * crs.linear_units_factor[1]


def gsd_m(dataset: rasterio.io.DatasetReader) -> float:
    """Metres per pixel of an open raster."""
    latitude = dataset.xy(dataset.height // 2, dataset.width // 2)[1]
    return gsd_metres(dataset.crs, abs(dataset.transform.a), latitude)


_EPOCH = date(1970, 1, 1)


def days_since_epoch(day: date | None) -> float:
    """Days from 1970-01-01 to ``day``; NaN for an unknown date (None)."""
    return float("nan") if day is None else float((day - _EPOCH).days)
