"""Writers of small real GeoTIFF folders (with CRS and dates) for the GeoTIFF datamodule tests.

The world: a 96 × 96 px label raster at 10 m in UTM 32N whose classes (1, 2, 3) form
8-px blocks, with value 0 (ignored) in the top-left 8 × 8 px. Every input's pixel
values encode the class under them, so alignment can be checked pixel for pixel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject

__all__ = [
    "LABEL_CRS",
    "SIZE",
    "class_pattern",
    "write_raster",
    "write_world",
]

LABEL_CRS = CRS.from_epsg(32632)
SIZE = 96
ORIGIN = (500_000.0, 5_000_000.0)
RES = 10.0


def class_pattern(size: int = SIZE, block: int = 8) -> np.ndarray:
    """(size, size) uint8 classes 1..3 in blocks, 0 in the top-left block."""
    rows, cols = np.indices((size, size)) // block
    classes = (1 + (rows * 7 + cols * 3) % 3).astype(np.uint8)
    classes[:block, :block] = 0
    return classes


def write_raster(
    path: Path,
    data: np.ndarray,
    crs: CRS | None = LABEL_CRS,
    transform: rasterio.Affine | None = None,
    nodata: float | None = None,
    tags: dict[str, str] | None = None,
    compress: str | None = None,
) -> Path:
    """Write (C, H, W) or (H, W) ``data`` as a GeoTIFF (tiled 16 px when compressed)."""
    data = data[None] if data.ndim == 2 else data
    profile: dict = dict(
        driver="GTiff",
        count=data.shape[0],
        height=data.shape[1],
        width=data.shape[2],
        dtype=data.dtype,
        transform=transform or from_origin(*ORIGIN, RES, RES),
        nodata=nodata,
    )
    if crs is not None:
        profile["crs"] = crs
    if compress:
        profile.update(compress=compress, tiled=True, blockxsize=16, blockysize=16)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if tags:
            dst.update_tags(**tags)
    return path


def _reprojected(classes: np.ndarray, crs: CRS, res: float) -> tuple[np.ndarray, rasterio.Affine]:
    """The class pattern warped (nearest) into ``crs`` at ``res``."""
    src_transform = from_origin(*ORIGIN, RES, RES)
    left, top = ORIGIN
    bounds = (left, top - SIZE * RES, left + SIZE * RES, top)
    transform, width, height = calculate_default_transform(
        LABEL_CRS, crs, SIZE, SIZE, *bounds, resolution=res
    )
    out = np.zeros((height, width), dtype=np.uint8)
    reproject(
        classes,
        out,
        src_transform=src_transform,
        src_crs=LABEL_CRS,
        dst_transform=transform,
        dst_crs=crs,
        resampling=Resampling.nearest,
    )
    return out, transform


def write_world(root: Path, compress: str | None = None) -> dict[str, Path]:
    """Labels, a Sentinel-2 series (3 dates, 4 bands per file, one date only in its tags),
    a Landsat-8 series of one file per band (2 dates, band B5 missing on the second),
    and a DEM in EPSG:3857 at 7 m.

    Sentinel-2 values: ``class * 1000 + band * 10 + frame``; Landsat-8 values:
    ``class * 100 + band``; DEM: ``class * 10`` metres.

    Returns:
        Folders by name: ``labels``, ``s2``, ``l8``, ``dem``.
    """
    classes = class_pattern()
    write_raster(root / "labels" / "labels.tif", classes, nodata=None)
    s2_dates = ["20200601", "20200301", "20200415"]  # written out of order
    for frame, day in enumerate(s2_dates):
        data = np.stack([classes.astype(np.uint16) * 1000 + band * 10 + frame for band in range(4)])
        name, tags = f"s2_{day}.tif", None
        if day == "20200415":  # this date is only in the file's tags
            name, tags = "s2_spring.tif", {"ACQUISITION_DATE": "2020-04-15"}
        write_raster(root / "s2" / name, data, compress=compress, tags=tags)
    for day in ("20200510", "20200520"):
        for band in ("B4", "B5"):
            if day == "20200520" and band == "B5":
                continue  # missing band on this date
            value = classes.astype(np.uint16) * 100 + int(band[1:])
            write_raster(root / "l8" / f"LC08_{day}_{band}.tif", value, compress=compress)
    warped, transform = _reprojected(classes, CRS.from_epsg(3857), 7.0)
    write_raster(
        root / "dem" / "dem.tif",
        warped.astype(np.float32) * 10,
        crs=CRS.from_epsg(3857),
        transform=transform,
    )
    return {n: root / n for n in ("labels", "s2", "l8", "dem")}


def four_band_datamodule(world: dict[str, Path], tmp_path: Path, **kwargs: Any) -> Any:
    """A set-up ``GeoTiffDataModule`` over :func:`write_world`'s Sentinel-2 series (4 bands).

    16 px patches, batches of 4, 32 px split blocks (val and test 0.2 each), 24 training
    crops per epoch; ``kwargs`` override or add options.
    """
    from stsun_lightning.data.datamodules.geotiff import GeoTiffDataModule

    options: dict[str, Any] = dict(
        inputs={
            "s2": {
                "sensor": "sentinel2_l2a",
                "paths": str(world["s2"]),
                "bands": ["B02", "B03", "B04", "B08"],
            }
        },
        labels={
            "paths": str(world["labels"]),
            "task": "semantic_segmentation",
            "classes": {1: "water", 2: "tree_cover", 3: "built_up"},
            "ignore_values": [0],
        },
        patch_size=16,
        batch_size=4,
        split={"block_size": 32, "val": 0.2, "test": 0.2},
        train_samples=24,
        statistics_cache=str(tmp_path / "cache"),
    )
    module = GeoTiffDataModule(**{**options, **kwargs})
    module.setup("fit")
    return module
