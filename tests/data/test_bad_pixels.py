"""Labels outside the declared classes, fully masked patches, interrupted cache writes."""

import json

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from conftest import make_batch
from stsun_lightning.data.datamodules.geotiff import GeoTiffDataModule
from stsun_lightning.data.datasets.frames import FrameRule
from stsun_lightning.data.datasets.scenes import build_series
from stsun_lightning.data.io.grid import grid_of
from stsun_lightning.data.io.statistics import given_statistics
from stsun_lightning.data.spec import InputSpec
from stsun_lightning.io import write_json_atomic
from stsun_lightning.models import create_model
from stsun_lightning.tasks.losses import category_loss

CLASSES = {1: "water", 2: "tree_cover"}


def _tif(path, data, dtype, origin=(500_000, 5_000_000)):
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
        dtype=dtype, crs="EPSG:32633", transform=from_origin(*origin, 10, 10), nodata=0,
    ) as dst:  # fmt: skip
        dst.write(data.astype(dtype))
    return path


def _datamodule(tmp_path, labels: list[np.ndarray], ignore=()) -> GeoTiffDataModule:
    """Labels tiled side by side (one file each, 16 px wide) under one Sentinel-2 image."""
    width = 16 * len(labels)
    image = np.random.default_rng(0).integers(100, 3000, (4, 16, width))
    _tif(tmp_path / "s2" / "s2_2021-06-01.tif", image, "uint16")
    for i, label in enumerate(labels):
        _tif(
            tmp_path / "labels" / f"label_{i}.tif",
            label[None],
            "uint8",
            (500_000 + 160 * i, 5_000_000),
        )
    return GeoTiffDataModule(
        inputs={"s2": {"sensor": "sentinel2_l2a", "paths": str(tmp_path / "s2"),
                       "bands": ["B02", "B03", "B04", "B08"], "scale": 1e-4}},
        labels={"paths": str(tmp_path / "labels"), "task": "semantic_segmentation",
                "classes": CLASSES, "ignore_values": list(ignore)},
        patch_size=16, split={"block_size": 16, "val": 0.0, "test": 0.0},
        statistics_cache=str(tmp_path / "cache"), augment=False,
    )  # fmt: skip


def test_a_label_value_outside_the_classes_names_the_value_and_the_file_holding_it(tmp_path):
    clean = np.ones((16, 16), np.uint8)
    bad = np.ones((16, 16), np.uint8)
    bad[3, 3] = 9
    with pytest.raises(
        ValueError, match=r"Label value 9 in .*label_1\.tif is not a declared class of source"
    ):
        dm = _datamodule(tmp_path, [clean, bad])
        dm.setup("fit")
        for i in range(len(dm.datasets("train")[0])):
            dm.datasets("train")[0][i]


def test_a_label_value_listed_in_ignore_values_is_ignored(tmp_path):
    label = np.ones((16, 16), np.uint8)
    label[3, 3] = 9
    dm = _datamodule(tmp_path, [label], ignore=(9,))
    dm.setup("fit")
    batch = dm.datasets("train")[0][0]
    assert int(batch.target[0, 0, 3, 3]) == -1 and int(batch.target[0, 0, 0, 0]) == 0


def test_a_source_without_any_labelled_pixel_is_an_error_at_setup(tmp_path):
    dm = _datamodule(tmp_path, [np.full((16, 16), 9, np.uint8)], ignore=(9,))
    with pytest.raises(ValueError, match=r"no training patch holds a labelled pixel"):
        dm.setup("fit")


def test_a_patch_without_any_valid_pixel_gives_a_zero_loss_not_nan():
    torch.manual_seed(0)
    model = create_model("stsun_tiny", categories=["water", "tree_cover"])
    batch = make_batch(categories=[0, 1])
    batch.valid_mask[:] = False
    batch.image[:] = float("nan")  # what the reader gives where there is no data
    batch.target[:] = -1  # and no label there
    output = model(batch)
    loss = category_loss(output.logits, batch.target)
    assert torch.isfinite(output.logits).all() and float(loss) == 0.0
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_an_interrupted_json_cache_write_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "statistics.json"

    def broken(*args, **kwargs):
        raise KeyboardInterrupt  # killed half way through

    monkeypatch.setattr(json, "dump", broken)
    monkeypatch.setattr(json, "dumps", broken)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(target, {"mean": [1.0]})
    assert list(tmp_path.iterdir()) == []


def test_nan_inf_and_nodata_are_no_data_and_a_pixel_with_none_is_invalid(tmp_path):
    data = np.full((2, 8, 8), 0.5, np.float32)
    data[0, 1, 1], data[1, 2, 2], data[0, 3, 3] = np.nan, np.inf, -9999.0
    data[:, 5, 5] = -9999.0  # no band has data here
    path = tmp_path / "s1" / "s1_2021-06-01.tif"
    path.parent.mkdir()
    with rasterio.open(
        path, "w", driver="GTiff", height=8, width=8, count=2, dtype="float32", crs="EPSG:32633",
        transform=from_origin(500_000, 5_000_000, 10, 10), nodata=-9999.0,
    ) as dst:  # fmt: skip
        dst.write(data)
    spec = InputSpec.parse(
        "s1", {"sensor": "sentinel1", "paths": str(path.parent), "bands": ["VV", "VH"]}
    )
    grid = grid_of(path)
    series = build_series({"s1": spec}, {"s1": [path]}, grid, FrameRule())
    series.set_statistics(
        given_statistics({"s1": {"mean": [0.0, 0.0], "std": [1.0, 1.0]}}, series.bands)
    )
    window = series.read((500_000, 5_000_000 - 100, 500_100, 5_000_000))  # past the edges, too
    invalid = {(int(r), int(c)) for r, c in zip(*np.nonzero(~window.valid), strict=True)}
    assert (5, 5) in invalid and all(r >= 8 or c >= 8 for r, c in invalid - {(5, 5)})
    assert np.isnan(window.image[0, 0, 1, 1]) and np.isnan(window.image[0, 1, 2, 2])
    assert np.isnan(window.image[0, 0, 3, 3]) and window.image[0, 1, 3, 3] == 0.5
    assert window.band_mask.all() and window.time_mask.all()
