"""A two-area world of real GeoTIFFs for the one-path tests: train on A, predict B.

48 × 96 px at 10 m in UTM 32N. Area A (columns 0-47) is mostly land, area B (columns
48-95) mostly water, so their band statistics differ. Inputs:

- ``s2``: Sentinel-2 B02, B03, B04, B08 as one file per band and date
  (``S2_<date>_<band>.tif``), uint16 reflectance × 10000 without a nodata tag, where
  the input's ``nodata: 65000`` marks a saturated strip, on 2021-06-01 and 2021-07-01;
- ``s1``: Sentinel-1 VV, VH in dB, float32 at 20 m, on 2021-06-03 and 2021-08-15;
- ``dem``: a static DEM in EPSG:3857 at 30 m;
- labels: ``labels_a.tif`` over A and ``labels_b.tif`` over B, classes 1 water,
  2 tree cover, 3 built-up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject

__all__ = ["AREA_B", "CLASSES", "S2_BANDS", "input_specs", "write_two_areas"]

UTM = CRS.from_epsg(32632)
ORIGIN = (500_000.0, 5_000_000.0)
HEIGHT, WIDTH = 48, 96
CLASSES = {1: "water", 2: "tree_cover", 3: "built_up"}
S2_BANDS = ("B02", "B03", "B04", "B08")
S2_DATES = ("20210601", "20210701")
S1_DATES = ("20210603", "20210815")
AREA_B = (ORIGIN[0] + 480.0, ORIGIN[1] - 480.0, ORIGIN[0] + 960.0, ORIGIN[1])
"""(left, bottom, right, top) of area B."""
SATURATED = 65000
# Reflectance × 10000 of each class in B02, B03, B04, B08, and its backscatter and height.
_S2 = {1: (600, 500, 300, 200), 2: (300, 600, 300, 3500), 3: (1500, 1500, 1600, 2200)}
_S1 = {1: (-22.0, -28.0), 2: (-8.0, -14.0), 3: (-3.0, -9.0)}
_HEIGHT = {1: 0.0, 2: 40.0, 3: 15.0}


def _classes() -> np.ndarray:
    rows, cols = np.indices((HEIGHT, WIDTH)) // 8
    land = 2 + (rows + cols) % 2  # tree cover and built-up
    classes = np.where(cols < 6, land, 1).astype(np.uint8)  # B is water ...
    classes[:, :48] = np.where((rows[:, :48] * 3 + cols[:, :48]) % 5 == 0, 1, land[:, :48])
    classes[16:24, 64:72] = 2  # ... with an island
    return classes


def _write(path: Path, data: np.ndarray, transform, crs=UTM, nodata=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = data[None] if data.ndim == 2 else data
    with rasterio.open(
        path, "w", driver="GTiff", count=data.shape[0], height=data.shape[1],
        width=data.shape[2], dtype=data.dtype, crs=crs, transform=transform, nodata=nodata,
    ) as dst:  # fmt: skip
        dst.write(data)


def write_two_areas(root: Path) -> dict[str, Path]:
    """Write the world under ``root``; returns its folders and label files by name."""
    rng = np.random.default_rng(0)
    classes = _classes()
    transform = from_origin(*ORIGIN, 10.0, 10.0)
    for t, day in enumerate(S2_DATES):
        for b, band in enumerate(S2_BANDS):
            values = np.vectorize(lambda c, b=b: _S2[int(c)][b])(classes).astype(np.float64)
            values = values * (1 + 0.05 * t) + rng.normal(0, 30, values.shape)
            stored = np.clip(values, 1, 20000).astype(np.uint16)
            stored[40:44, 10:30] = SATURATED  # no data, by the input's nodata
            _write(root / "s2" / f"S2_{day}_{band}.tif", stored, transform)
    coarse = classes[::2, ::2]
    for t, day in enumerate(S1_DATES):
        db = np.stack([np.vectorize(lambda c, p=p: _S1[int(c)][p])(coarse) for p in range(2)])
        db = (db + t + rng.normal(0, 0.5, db.shape)).astype(np.float32)
        _write(root / "s1" / f"S1A_IW_{day}.tif", db, from_origin(*ORIGIN, 20.0, 20.0))
    heights = np.vectorize(lambda c: _HEIGHT[int(c)])(classes).astype(np.float32)
    mercator = CRS.from_epsg(3857)
    bounds = (ORIGIN[0], ORIGIN[1] - HEIGHT * 10, ORIGIN[0] + WIDTH * 10, ORIGIN[1])
    dem_transform, width, height = calculate_default_transform(
        UTM, mercator, WIDTH, HEIGHT, *bounds, resolution=30.0
    )
    dem = np.zeros((height, width), np.float32)
    reproject(heights, dem, src_transform=transform, src_crs=UTM, dst_transform=dem_transform,
              dst_crs=mercator, resampling=Resampling.average)  # fmt: skip
    _write(root / "dem" / "copernicus_dem.tif", dem, dem_transform, crs=mercator)
    _write(root / "labels_a.tif", classes[:, :48], transform)
    _write(root / "labels_b.tif", classes[:, 48:], from_origin(ORIGIN[0] + 480, ORIGIN[1], 10, 10))
    return {
        "s2": root / "s2",
        "s1": root / "s1",
        "dem": root / "dem",
        "labels_a": root / "labels_a.tif",
        "labels_b": root / "labels_b.tif",
    }


def input_specs(world: dict[str, Path]) -> dict[str, dict]:
    """The ``inputs:`` block of a training config over the world."""
    return {
        "s2": {
            "sensor": "sentinel2_l2a",
            "paths": str(world["s2"]),
            "bands": list(S2_BANDS),
            "separate_files": True,
            "scale": 1e-4,
            "nodata": SATURATED,
        },
        "s1": {"sensor": "sentinel1", "paths": str(world["s1"]), "bands": ["VV", "VH"]},
        "dem": {"sensor": "copernicus_dem", "paths": str(world["dem"]), "resampling": "nearest"},
    }
