"""Helpers of the prediction tests: GeoTIFFs on disk and a one-call ``trainer.predict``."""

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from stsun_lightning.data import RasterPredictionDataModule
from stsun_lightning.predict import GeoTiffPredictionWriter
from stsun_lightning.tasks.module import StsunTask

BANDS = ["B02", "B03", "B04", "B08"]
CATEGORIES = ["water", "tree_cover", "cropland", "building"]
TRAINED_SOURCES = {
    "landcover": {"task": "semantic_segmentation", "categories": CATEGORIES},
    "height": {"task": "regression", "variables": ["canopy_height"]},
    "crops": {"task": "time_series_segmentation", "categories": ["wheat", "maize"]},
}


def write_raster(
    path: Path,
    height: int,
    width: int,
    constant: bool = False,
    crs: str | None = "EPSG:32633",
    count: int = 4,
    seed: int = 0,
    origin: tuple[float, float] = (600_000, 5_500_000),
) -> Path:
    """A uint16 Sentinel-2-like GeoTIFF (0 = nodata) with 10 m pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = (
        np.full((count, height, width), 1200, np.uint16)
        if constant
        else rng.integers(200, 4000, (count, height, width)).astype(np.uint16)
    )
    with rasterio.open(
        path, "w", driver="GTiff", height=height, width=width, count=count, dtype="uint16",
        crs=crs, transform=from_origin(*origin, 10, 10), nodata=0,
    ) as dst:  # fmt: skip
        dst.write(data)
    return path


@pytest.fixture(scope="session")
def trained_task() -> StsunTask:
    """An untrained stsun_tiny whose vocabularies cover land cover, height and crops."""
    torch.manual_seed(0)
    return StsunTask("stsun_tiny", sources=TRAINED_SOURCES).eval()


def predict(
    module: StsunTask,
    out: Path,
    writer_args: dict | None = None,
    ckpt_path: Path | None = None,
    **data_args,
) -> GeoTiffPredictionWriter:
    """Run ``trainer.predict`` with a raster datamodule and the GeoTIFF writer."""
    data_args.setdefault("categories", CATEGORIES if "variables" not in data_args else None)
    data_args.setdefault("statistics", {"s2": {"mean": [1000.0] * 4, "std": [500.0] * 4}})
    datamodule = RasterPredictionDataModule(**data_args)
    writer = GeoTiffPredictionWriter(out, **(writer_args or {}))
    trainer = L.Trainer(
        accelerator="cpu", logger=False, callbacks=[writer], enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    trainer.predict(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return writer


def s2_input(paths) -> dict:
    return {"s2": {"sensor": "sentinel2_l2a", "bands": BANDS, "paths": paths}}
