"""One path for a user's data: training, evaluation and prediction read alike.

Train on area A, predict area B (whose class mix differs): prediction reads B with A's
statistics, the frames of training and the same grid, so its windows equal those the
training reader gives on the same pixels.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely
import torch
import yaml
from two_areas import AREA_B, CLASSES, S2_BANDS, input_specs, write_two_areas

from stsun_lightning.cli import build_cli
from stsun_lightning.data.datamodules.geotiff import GeoTiffDataModule
from stsun_lightning.data.datasets.patches import PatchRef, ScenePatchDataset
from stsun_lightning.data.datasets.windows import SceneWindowDataset
from stsun_lightning.data.samplers.split import SPLITS


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return write_two_areas(tmp_path_factory.mktemp("two_areas"))


def geotiff(
    world: dict[str, Path], label_file: str, tmp_path: Path, **kwargs: Any
) -> GeoTiffDataModule:
    options: dict[str, Any] = dict(
        inputs=input_specs(world),
        labels={
            "paths": str(world[label_file]),
            "task": "semantic_segmentation",
            "classes": CLASSES,
        },
        patch_size=16,
        batch_size=4,
        split={"block_size": 16, "val": 0.25, "test": 0.0},
        statistics_cache=str(tmp_path / "cache"),
        date_tolerance_days=3,
        augment=False,
        predict_window=16,
        predict_overlap=0,
    )
    options.update(kwargs)
    return GeoTiffDataModule(**options)


def test_prediction_of_area_b_reads_what_training_reads_with_area_a_statistics(world, tmp_path):
    trained = geotiff(world, "labels_a", tmp_path)
    trained.setup("fit")
    record = trained.data_record()
    # The same data section, pointed at area B, with the checkpoint's record.
    predicting = geotiff(world, "labels_a", tmp_path, region=list(AREA_B))
    predicting.setup("predict")
    predicting.load_data_record(record)
    (job,) = predicting.prediction_jobs()
    windows = SceneWindowDataset([job], predicting.vocabularies, 16, 0)
    # The training reader over B, told A's statistics.
    given = {n: {"mean": list(s.mean), "std": list(s.std)} for n, s in trained.statistics.items()}
    reading_b = geotiff(
        world,
        "labels_b",
        tmp_path,
        statistics=given,
        split={"block_size": 16, "val": 0.0, "test": 0.0},
    )
    reading_b.setup("fit")
    own_b = geotiff(world, "labels_b", tmp_path)
    own_b.setup("fit")
    assert not np.allclose(own_b.statistics["s2"].mean, trained.statistics["s2"].mean, rtol=0.1)
    assert job.scene.series.statistics == trained.statistics  # A's, not B's
    # Training patches of B at every prediction window's place.
    refs = [PatchRef(0, windows.bounds(i)[0], windows.bounds(i)[3]) for i in range(len(windows))]
    patches = ScenePatchDataset(
        [reading_b.scene], reading_b.source, reading_b.vocabularies, refs, 16, "state"
    )
    assert len(windows) == 3 * 3
    for index in range(len(windows)):
        assert patches.bounds(index) == windows.bounds(index)
        predicted, read = windows[index], patches[index]
        torch.testing.assert_close(predicted.image, read.image, atol=1e-5, rtol=0, equal_nan=True)
        for field in ("dates", "time_mask", "band_mask", "valid_mask", "wavelength_nm", "gsd_m"):
            torch.testing.assert_close(
                getattr(predicted, field), getattr(read, field), equal_nan=True
            )


def test_frames_are_every_inputs_dates_and_an_absent_input_is_masked_there(world, tmp_path):
    dm = geotiff(world, "labels_a", tmp_path)
    dm.setup("fit")
    series = dm.scene.series
    days = [f.day.isoformat() for f in series.frames]
    assert days == ["2021-06-01", "2021-07-01", "2021-08-15"]  # s1's 06-03 joined 06-01
    assert [sorted(f.members) for f in series.frames] == [["s1", "s2"], ["s2"], ["s1"]]
    batch = dm.datasets("val")[0][0]
    window = series.read(dm.datasets("val")[0].bounds(0))
    s2, s1, dem = series.channels["s2"], series.channels["s1"], series.channels["dem"]
    mask = window.band_mask
    assert mask[0].all()  # both sensors and the DEM on 06-01
    assert mask[1, s2].all() and not mask[1, s1].any() and mask[1, dem].all()
    assert not mask[2, s2].any() and mask[2, s1].all() and mask[2, dem].all()
    assert np.isnan(window.image[2, s2]).all() and np.isnan(window.image[1, s1]).all()
    assert batch.time_mask.all() and batch.valid_mask.all()  # valid: some band has data


@pytest.mark.parametrize(("block", "patch"), [(32, 16), (48, 32), (40, 16), (50, 32)])
def test_no_val_or_test_patch_shares_a_pixel_with_a_train_patch(tmp_path, block, patch):
    size = 192
    classes = (1 + np.indices((size, size)).sum(0) // 7 % 3).astype(np.uint8)
    transform = rasterio.transform.from_origin(500_000, 5_000_000, 10, 10)
    for name, data in (("labels.tif", classes), ("dem.tif", classes.astype(np.float32))):
        with rasterio.open(
            tmp_path / name, "w", driver="GTiff", count=1, height=size, width=size,
            dtype=data.dtype, crs="EPSG:32632", transform=transform,
        ) as dst:  # fmt: skip
            dst.write(data[None])
    dm = GeoTiffDataModule(
        inputs={"dem": {"sensor": "copernicus_dem", "paths": str(tmp_path / "dem.tif")}},
        labels={"paths": str(tmp_path / "labels.tif"), "task": "semantic_segmentation",
                "classes": CLASSES},
        patch_size=patch, split={"block_size": block, "val": 0.3, "test": 0.2},
        train_samples=300, statistics_cache=str(tmp_path / "cache"),
    )  # fmt: skip
    dm.setup("fit")
    boxes = {
        split: [shapely.box(*dm.datasets(split)[0].bounds(i)) for i in range(len(dm.datasets(split)[0]))]
        for split in SPLITS
    }  # fmt: skip
    train = shapely.union_all(boxes["train"])
    for split in ("val", "test"):
        assert boxes[split], split
        assert shapely.union_all(boxes[split]).intersection(train).area == 0, split
        blocks = shapely.union_all(dm.blocks[split])
        assert all(blocks.contains(b) for b in boxes[split])


def test_statistics_come_from_training_blocks_only_and_honour_nodata(world, tmp_path):
    dm = geotiff(world, "labels_a", tmp_path, split={"block_size": 16, "val": 0.34, "test": 0.0})
    dm.setup("fit")
    with rasterio.open(world["s2"] / "S2_20210601_B08.tif") as src:
        first = src.read(1).astype(np.float64)
    with rasterio.open(world["s2"] / "S2_20210701_B08.tif") as src:
        second = src.read(1).astype(np.float64)
    stored = np.stack([first, second])[:, :, :48]  # area A
    in_train = np.zeros(stored.shape[1:], bool)
    for block in dm.blocks["train"]:
        left, bottom, right, top = block.bounds
        c0, c1 = round((left - 500_000) / 10), round((right - 500_000) / 10)
        r0, r1 = round((5_000_000 - top) / 10), round((5_000_000 - bottom) / 10)
        in_train[r0:r1, c0:c1] = True
    values = stored[:, in_train]
    expected = values[values != 65000].mean() * 1e-4
    nir = dm.statistics["s2"].mean[S2_BANDS.index("B08")]
    assert nir == pytest.approx(expected, rel=1e-6)
    everywhere = stored[stored != 65000].mean() * 1e-4
    assert abs(everywhere - expected) > 1e-3 * expected  # the split matters here
    assert all(s.bands == dm.scene.series.bands[n] for n, s in dm.statistics.items())


def _config(world: dict[str, Path], tmp_path: Path) -> Path:
    data = {
        "class_path": "stsun_lightning.data.GeoTiffDataModule",
        "init_args": {
            "inputs": input_specs(world),
            "labels": {"paths": str(world["labels_a"]), "task": "semantic_segmentation", "classes": CLASSES},
            "patch_size": 16, "batch_size": 4, "date_tolerance_days": 3,
            "split": {"block_size": 16, "val": 0.25, "test": 0.0},
            "statistics_cache": str(tmp_path / "cache"),
            "predict_window": 32, "predict_overlap": 8,
        },
    }  # fmt: skip
    config = {
        "model": {"model": "stsun_tiny"},
        "data": data,
        "trainer": {
            "default_root_dir": str(tmp_path / "run"), "max_steps": 2, "limit_val_batches": 1,
            "accelerator": "cpu", "logger": False, "enable_progress_bar": False,
        },
    }  # fmt: skip
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))  # the first input sets the grid
    return path


@pytest.mark.slow
def test_the_training_config_predicts_as_it_is_through_stsun(world, tmp_path):
    config = _config(world, tmp_path)
    trained = build_cli(["fit", "--config", str(config)])
    checkpoint = next((tmp_path / "run").rglob("*.ckpt"))
    saved = torch.load(checkpoint, weights_only=True)["stsun_data"]
    assert saved["sources"]["geotiff"]["frames"] == {"tolerance_days": 3}
    cli = build_cli([
        "predict", "--config", str(config), f"--ckpt_path={checkpoint}",
        f"--data.init_args.region=[{', '.join(map(str, AREA_B))}]",
    ])  # fmt: skip
    (job,) = cli.datamodule.prediction_jobs()
    assert job.scene.series.statistics == trained.datamodule.statistics
    out = tmp_path / "run" / "predictions" / "S2.tif"  # the first input's scene, whole or cut
    with rasterio.open(out) as dst, rasterio.open(world["labels_b"]) as reference:
        assert (dst.crs, dst.transform, dst.shape) == (
            reference.crs,
            reference.transform,
            reference.shape,
        )
        assert dst.tags()["CATEGORIES"] == "0:water,1:tree_cover,2:built_up"
        assert set(np.unique(dst.read(1))) <= {0, 1, 2}


def test_a_band_missing_at_one_frame_changes_no_output_as_if_absent_there(world, tmp_path):
    from stsun_lightning.models import create_model

    dm = geotiff(world, "labels_a", tmp_path)
    dm.setup("fit")
    batch = dm.datasets("val")[0][0]
    s1 = dm.scene.series.channels["s1"]
    assert not batch.band_mask[0, 1, s1].any()  # no Sentinel-1 acquisition on 07-01
    torch.manual_seed(0)
    model = create_model("stsun_tiny", categories=list(CLASSES.values())).eval()
    with torch.no_grad():
        reference = model(batch).logits
        for value in (0.0, 1e6):
            filled = batch.image.clone()
            filled[:, 1, s1] = value  # whatever the reader had put there
            other = model(dataclasses.replace(batch, image=filled)).logits
            torch.testing.assert_close(other, reference, atol=1e-4, rtol=0)
        unmasked = batch.band_mask.clone()
        unmasked[:, 1, s1] = True  # NaN read as a value (the mean) instead of masked
        moved = model(dataclasses.replace(batch, band_mask=unmasked)).logits
    assert (moved - reference).abs().max() > 1e-3
