"""Labels outside the declared classes, fully masked patches, interrupted cache writes."""

import json
from datetime import date

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from conftest import make_batch
from stsun_lightning.data.datasets.scenes import Scene, SceneInput, ScenePatchDataset
from stsun_lightning.data.io.statistics import BandStatistics
from stsun_lightning.data.sensors import get_sensor
from stsun_lightning.data.sources import SourceInfo, build_vocabularies
from stsun_lightning.io import write_json_atomic
from stsun_lightning.models import create_model
from stsun_lightning.tasks.losses import category_loss

SOURCE = SourceInfo("land", "semantic_segmentation", categories=("water", "tree_cover"))


def _tif(path, data, dtype):
    with rasterio.open(
        path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
        dtype=dtype, crs="EPSG:32633", transform=from_origin(500_000, 5_000_000, 10, 10), nodata=0,
    ) as dst:  # fmt: skip
        dst.write(data.astype(dtype))


def _dataset(tmp_path, label: np.ndarray, ignore=()) -> ScenePatchDataset:
    image = tmp_path / "s2_2021-06-01.tif"
    _tif(image, np.random.default_rng(0).integers(100, 3000, (4, 16, 16)), "uint16")
    _tif(tmp_path / "label.tif", label[None], "uint8")
    bands = ("B02", "B03", "B04", "B08")
    scene = Scene(
        "s", 10.0, (date(2021, 6, 1),), {"s2": SceneInput(get_sensor("sentinel2_l2a"), bands, (image,))},
        tmp_path / "label.tif", 16, 16,
    )  # fmt: skip
    statistics = BandStatistics(mean={"s2": [0.1] * 4}, std={"s2": [0.05] * 4}, scale={"s2": 1e-4})
    return ScenePatchDataset(
        [scene], SOURCE, build_vocabularies([SOURCE]), {1: "water", 2: "tree_cover"}, tuple(ignore),
        "state", statistics, 16, mode="grid",
    )  # fmt: skip


def test_a_label_value_outside_the_classes_names_the_value_and_the_file(tmp_path):
    label = np.ones((16, 16), np.uint8)
    label[3, 3] = 9
    with pytest.raises(
        ValueError, match=r"Label value 9 in .*label.tif is not a declared class of source 'land'"
    ):
        _dataset(tmp_path, label)[0]


def test_a_label_value_listed_in_ignore_values_is_ignored(tmp_path):
    label = np.ones((16, 16), np.uint8)
    label[3, 3] = 9
    batch = _dataset(tmp_path, label, ignore=(9,))[0]
    assert int(batch.target[0, 0, 3, 3]) == -1 and int(batch.target[0, 0, 0, 0]) == 0


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


def test_nan_inf_and_nodata_in_a_file_become_invalid_pixels(tmp_path):
    from rasterio.windows import Window

    from stsun_lightning.data.datasets.scenes import SceneReader

    data = np.full((2, 8, 8), 0.5, np.float32)
    data[0, 1, 1], data[1, 2, 2], data[0, 3, 3] = np.nan, np.inf, -9999.0
    path = tmp_path / "s1_2021-06-01.tif"
    with rasterio.open(
        path, "w", driver="GTiff", height=8, width=8, count=2, dtype="float32", crs="EPSG:32633",
        transform=from_origin(500_000, 5_000_000, 10, 10), nodata=-9999.0,
    ) as dst:  # fmt: skip
        dst.write(data)
    scene = Scene(
        "s", 10.0, (date(2021, 6, 1),), {"s1": SceneInput(get_sensor("sentinel1"), ("VV", "VH"), (path,))},
        None, 8, 8,
    )  # fmt: skip
    reader = SceneReader(
        BandStatistics(mean={"s1": [0.0, 0.0]}, std={"s1": [1.0, 1.0]}, scale={"s1": 1.0})
    )
    image, valid = reader.read(scene, Window(0, 0, 10, 10))  # reaching past the edge, too
    invalid = {(int(r), int(c)) for r, c in zip(*np.nonzero(~valid), strict=True)}
    assert {(1, 1), (2, 2), (3, 3)} <= invalid
    assert all(r >= 8 or c >= 8 for r, c in invalid - {(1, 1), (2, 2), (3, 3)})
    assert np.isfinite(image[:, :, valid]).all()
