"""GeoTIFF writing of the synthetic world: tiled, DEFLATE-compressed, fully described."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from stsun_lightning.data.datasets.world.render import is_sar
from stsun_lightning.data.datasets.world.sources import WorldInput
from stsun_lightning.data.datasets.world.spectra import is_thermal

__all__ = ["CRS", "band_tags", "quantise_reflectance", "write_geotiff"]

CRS = "EPSG:32632"
"""Coordinate reference system of every scene (UTM zone 32N)."""


def write_geotiff(
    path: Path,
    data: np.ndarray,
    transform: Any,
    nodata: float,
    descriptions: Sequence[str],
    tags: dict[str, str],
    per_band_tags: Sequence[dict[str, str]] = (),
) -> None:
    """Write (C, H, W) ``data`` as a tiled, DEFLATE-compressed GeoTIFF."""
    count, height, width = data.shape
    # Tiles of about half a scene (multiples of 16, as TIFF requires): patch reads decode
    # little more than they need.
    block = min(256, 16 * max(1, math.ceil(max(height, width) / 32)))
    profile = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": count,
        "dtype": data.dtype.name,
        "crs": CRS,
        "transform": transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "deflate",
        "predictor": 3 if data.dtype.kind == "f" else 2,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for index, description in enumerate(descriptions, start=1):
            dst.set_band_description(index, description)
        for index, extra in enumerate(per_band_tags, start=1):
            dst.update_tags(index, **extra)
        dst.update_tags(**tags)


def band_tags(inp: WorldInput) -> list[dict[str, str]]:
    """Per-band GeoTIFF tags: unit and scale of the stored values."""
    tags = []
    for band in inp.bands:
        if is_sar(band):
            tags.append({"UNIT": "dB"})
        elif is_thermal(band):
            tags.append({"UNIT": "K", "SCALE": "0.01"})
        else:
            tags.append({"UNIT": "reflectance", "SCALE": "0.0001"})
    return tags


def quantise_reflectance(reflectance: np.ndarray, nodata: np.ndarray) -> np.ndarray:
    """uint16 reflectance x 10000, 0 kept for nodata (valid values are at least 1)."""
    values = np.clip(np.rint(reflectance * 10000.0), 1, 65535).astype(np.uint16)
    values[:, nodata] = 0
    return values
