"""The GeoTIFF datamodule on real GeoTIFF folders written by fixtures (geotiffs.py)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely
import torch
import yaml
from geotiffs import class_pattern, write_raster, write_world
from torch.utils.data import DataLoader
from torchgeo.samplers import RandomPatchSampler

from stsun_lightning.cli import build_cli
from stsun_lightning.data.datamodules.geotiff import GeoTiffDataModule
from stsun_lightning.errors import UnknownNameError

CLASSES = {1: "water", 2: "tree_cover", 3: "built_up"}


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    return write_world(tmp_path / "world")


def inputs_of(world: dict[str, Path], *names: str) -> dict[str, dict[str, Any]]:
    specs = {
        "s2": {
            "sensor": "sentinel2_l2a",
            "paths": str(world["s2"]),
            "bands": ["B02", "B03", "B04", "B08"],
        },
        "l8": {
            "sensor": "landsat8_oli_tirs",
            "paths": str(world["l8"]),
            "bands": ["B4", "B5"],
            "separate_files": True,
        },
        "dem": {"sensor": "copernicus_dem", "paths": str(world["dem"]), "resampling": "nearest"},
    }
    return {n: specs[n] for n in names or specs}


def datamodule(world: dict[str, Path], tmp_path: Path, **kwargs: Any) -> GeoTiffDataModule:
    options: dict[str, Any] = dict(
        inputs=inputs_of(world),
        labels={
            "paths": str(world["labels"]),
            "task": "semantic_segmentation",
            "classes": CLASSES,
            "ignore_values": [0],
        },
        patch_size=16,
        batch_size=4,
        split={"block_size": 32, "val": 0.2, "test": 0.2},
        statistics_cache=str(tmp_path / "cache"),
    )
    options.update(kwargs)
    return GeoTiffDataModule(**options)


def raw_inputs(dm: GeoTiffDataModule, bounds: tuple[float, ...]) -> dict[str, np.ndarray]:
    """Per input, its (T, C, h, w) stored values (scale 1) read by the datamodule's reader."""
    assert dm.scene is not None
    series = dm.scene.series
    values = series.read_physical(bounds)
    return {n: values[:, channels] for n, channels in series.channels.items()}


def test_sensors_in_other_crs_and_resolution_align_pixel_for_pixel(world, tmp_path):
    dm = datamodule(world, tmp_path, augment=False)
    dm.setup("fit")
    classes = class_pattern()
    matches = {"s2": [], "l8": [], "dem": []}
    dataset = dm.datasets("train")[0]
    for index in range(0, len(dataset), 7):
        bounds = dataset.bounds(index)
        col = round((bounds[0] - 500_000) / 10)
        row = round((5_000_000 - bounds[3]) / 10)
        truth = classes[row : row + 16, col : col + 16]
        raw = raw_inputs(dm, bounds)
        s2 = raw["s2"][0, 0]  # frame 0 = 2020-03-01 (written second): class*1000 + 0 + 1
        matches["s2"].append(np.nan_to_num(s2 - 1) // 1000 == truth)
        matches["l8"].append(raw["l8"][2, 0] // 100 == truth)  # frame 2 = 2020-05-10, B4
        matches["dem"].append(raw["dem"][0, 0] / 10 == truth)
        batch = dataset[index]
        target = batch.target[0, 0].numpy()
        expected = np.where(truth == 0, -1, truth.astype(np.int64) - 1)
        np.testing.assert_array_equal(target, expected)  # labels: exact
    assert np.mean(matches["s2"]) == 1.0  # same grid: exact
    assert np.mean(matches["l8"]) == 1.0  # separate band files, same grid: exact
    # EPSG:3857 at 7 m, warped (nearest) onto UTM 10 m: exact but where the warp
    # lands on block edges.
    assert np.mean(matches["dem"]) > 0.95


def test_time_series_frames_in_date_order_with_their_dates(world, tmp_path):
    dm = datamodule(world, tmp_path, inputs=inputs_of(world, "s2"))
    dm.setup("fit")
    batch = dm.datasets("val")[0][0]
    days = [
        str(np.datetime64("1970-01-01") + np.timedelta64(int(d), "D"))
        for d in batch.dates[0].tolist()
    ]
    assert days == ["2020-03-01", "2020-04-15", "2020-06-01"]  # 04-15 is from the tags
    raw = raw_inputs(dm, dm.datasets("val")[0].bounds(0))["s2"]
    # write order was 06-01 (frame value 0), 03-01 (1), 04-15 (2): frames follow dates
    assert [int(raw[t, 0, 0, 0]) % 10 for t in range(3)] == [1, 2, 0]


def test_torchgeo_sampler_gets_per_frame_dates(world, tmp_path):
    dm = datamodule(world, tmp_path, inputs=inputs_of(world, "s2"))
    dm.setup("fit")
    dataset = dm.scene.series.datasets["s2"]
    sampler = RandomPatchSampler(dataset, size=16, length=3, generator=0)
    for query in sampler:
        sample = dataset[query]
        assert sample["image"].shape == (3, 4, 16, 16)
        assert sample["dates"].tolist() == [18322.0, 18367.0, 18414.0]


def test_band_missing_on_a_date_is_masked_not_zero_filled(world, tmp_path):
    dm = datamodule(world, tmp_path, inputs=inputs_of(world, "l8"))
    dm.setup("fit")
    batch = dm.datasets("train")[0][0]
    # frames 2020-05-10 and 2020-05-20; channels B4, B5; B5 has no file on 05-20
    image = batch.image[0]
    assert image.shape[:2] == (2, 2)
    assert torch.isnan(image[1, 1]).all()
    assert torch.isfinite(image[0]).all() and torch.isfinite(image[1, 0]).all()
    assert batch.time_mask.all()
    assert batch.band_mask[0].tolist() == [[True, True], [True, False]]  # B5 absent on 05-20


def test_spatial_split_blocks_and_patches_do_not_overlap(world, tmp_path):
    dm = datamodule(world, tmp_path)
    dm.setup("fit")
    boxes = {
        split: [
            shapely.box(*dm.datasets(split)[0].bounds(i)) for i in range(len(dm.datasets(split)[0]))
        ]
        for split in ("train", "val", "test")
    }
    assert all(boxes.values())
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        union_a = shapely.union_all(boxes[a])
        union_b = shapely.union_all(boxes[b])
        assert union_a.intersection(union_b).area == 0, (a, b)
        blocks_a = shapely.union_all(dm.blocks[a])
        assert blocks_a.intersection(shapely.union_all(dm.blocks[b])).area == 0
    for split in ("train", "val", "test"):  # every patch inside its split's blocks
        blocks = shapely.union_all(dm.blocks[split])
        assert all(blocks.contains(box) for box in boxes[split])


def test_batches_validate_and_carry_metadata(world, tmp_path):
    dm = datamodule(world, tmp_path)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    batch.validate()
    assert batch.image.shape == (4, 5, 7, 16, 16)  # 5 dates, 4 + 2 + 1 bands
    assert batch.gsd_m.tolist() == [10.0] * 4
    assert math.isclose(batch.wavelength_nm[0, 0].item(), 492.4, abs_tol=5)  # S2 B02
    assert dm.sources == {
        "geotiff": {
            "name": "geotiff",
            "task": "semantic_segmentation",
            "categories": ["water", "tree_cover", "built_up"],
            "variables": [],
            "slot_categories": [],
        }
    }


def test_statistics_are_cached_and_can_be_given(world, tmp_path):
    dm = datamodule(world, tmp_path)
    dm.setup("fit")
    cached = list((tmp_path / "cache").glob("*.json"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    again = datamodule(world, tmp_path)
    again.setup("fit")
    assert cached[0].stat().st_mtime_ns == stamp  # read, not recomputed
    given = {
        "s2": {"mean": [0.0] * 4, "std": [1.0] * 4},
        "l8": {"mean": [0.0] * 2, "std": [1.0] * 2},
        "dem": {"mean": [0.0], "std": [2.0]},
    }
    plain = datamodule(world, tmp_path, statistics=given, augment=False)
    plain.setup("fit")
    batch = plain.datasets("train")[0][0]
    raw = raw_inputs(plain, plain.datasets("train")[0].bounds(0))
    np.testing.assert_allclose(batch.image[0, :, 6].numpy(), raw["dem"][:, 0] / 2.0)
    with pytest.raises(ValueError, match=r"statistics\['dem'\] needs 'mean' and 'std' with 1"):
        bad = datamodule(world, tmp_path, statistics={**given, "dem": {"mean": [0, 0], "std": [1]}})
        bad.setup("fit")


def test_nodata_and_nan_become_invalid_pixels(tmp_path):
    classes = class_pattern()
    labels = write_raster(tmp_path / "labels.tif", classes)
    optical = np.stack([classes.astype(np.float32) * 0.1] * 4)
    optical[:, 40:50, 40:50] = -9999.0  # nodata
    optical[2, 60:62, 60:62] = np.nan
    write_raster(tmp_path / "s2" / "s2_20200101.tif", optical, nodata=-9999.0)
    dm = GeoTiffDataModule(
        inputs={
            "s2": {
                "sensor": "sentinel2_l2a",
                "paths": str(tmp_path / "s2"),
                "bands": ["B02", "B03", "B04", "B08"],
            }
        },
        labels={
            "paths": str(labels),
            "task": "semantic_segmentation",
            "classes": CLASSES,
            "ignore_values": [0],
        },
        patch_size=96,
        split={"block_size": 96, "val": 0, "test": 0},
        statistics_cache=str(tmp_path / "cache"),
        augment=False,
    )
    dm.setup("fit")
    dataset = dm.datasets("train")[0]
    batch = dataset[0]
    valid = batch.valid_mask[0]
    assert not valid[40:50, 40:50].any()
    assert valid[60:62, 60:62].all()  # other bands have data there
    assert torch.isnan(batch.image[0, 0, 2, 60:62, 60:62]).all()
    assert (batch.target[0, 0, 40:50, 40:50] == -1).all()


def test_dataloader_workers_read_the_same_patches_bit_for_bit(tmp_path):
    world = write_world(tmp_path / "world", compress="deflate")
    dm = datamodule(world, tmp_path, augment=False, batch_size=1)
    dm.setup("fit")
    dataset = dm.datasets("train")[0]
    indices = list(range(0, len(dataset), 3))
    single = [dataset[i].image for i in indices]  # handles now open in this process
    loader = DataLoader(
        torch.utils.data.Subset(dataset, indices),
        batch_size=None,
        num_workers=2,
        multiprocessing_context="fork",
    )
    parallel = [batch.image for batch in loader]
    assert len(parallel) == len(single)
    for a, b in zip(single, parallel, strict=True):
        assert torch.equal(a.nan_to_num(-7), b.nan_to_num(-7))


def test_label_value_outside_the_classes_names_value_and_file(world, tmp_path):
    dm = datamodule(
        world,
        tmp_path,
        labels={
            "paths": str(world["labels"]),
            "task": "semantic_segmentation",
            "classes": {1: "water", 2: "tree_cover"},
            "ignore_values": [0],
        },
        augment=False,
    )
    with pytest.raises(ValueError, match=r"Label value 3 in .*labels\.tif is not a declared class"):
        dm.setup("fit")  # setup reads training patches for a labelled pixel
        for i in range(len(dm.datasets("train")[0])):
            dm.datasets("train")[0][i]
    ignoring = datamodule(
        world,
        tmp_path,
        labels={
            "paths": str(world["labels"]),
            "task": "semantic_segmentation",
            "classes": {1: "water", 2: "tree_cover"},
            "ignore_values": [0, 3],
        },
    )
    ignoring.setup("fit")
    assert ignoring.datasets("train")[0][0].target.max() <= 1


def test_unknown_sensor_band_and_config_keys_are_named(world, tmp_path):
    with pytest.raises(
        UnknownNameError,
        match=r"Unknown band of sensor 'sentinel2_l2a' 'B8' \(in input 's2'\)\. Did you mean",
    ):
        datamodule(
            world,
            tmp_path,
            inputs={"s2": {"sensor": "sentinel2_l2a", "paths": str(world["s2"]), "bands": ["B8"]}},
        )
    with pytest.raises(UnknownNameError, match="sentinel2_l2a"):
        datamodule(
            world, tmp_path, inputs={"s2": {"sensor": "sentinel2_l2", "paths": str(world["s2"])}}
        )
    with pytest.raises(ValueError, match=r"Input 's2' has unknown keys \['band'\]"):
        datamodule(
            world, tmp_path, inputs={"s2": {"sensor": "sentinel2_l2a", "paths": "x", "band": []}}
        )
    with pytest.raises(ValueError, match="labels need either 'classes'"):
        datamodule(world, tmp_path, labels={"paths": "x", "task": "semantic_segmentation"})


def test_wrong_band_count_names_the_file(world, tmp_path):
    dm = datamodule(
        world,
        tmp_path,
        inputs={
            "s2": {"sensor": "sentinel2_l2a", "paths": str(world["s2"]), "bands": ["B02", "B03"]}
        },
    )
    with pytest.raises(ValueError, match=r"s2_20200301\.tif has 4 band\(s\), expected 2"):
        dm.setup("fit")


def test_file_without_crs_corrupt_file_and_empty_folder_fail_at_setup(world, tmp_path):
    write_raster(world["s2"] / "s2_20200701.tif", np.zeros((4, 96, 96), np.uint16), crs=None)
    with pytest.raises(ValueError, match=r"s2_20200701\.tif has no CRS"):
        datamodule(world, tmp_path).setup("fit")
    (world["s2"] / "s2_20200701.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ValueError, match=r"cannot open .*s2_20200701\.tif as a raster"):
        datamodule(world, tmp_path).setup("fit")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"Input 's2': .*empty' matches no raster"):
        dm = datamodule(
            world,
            tmp_path,
            inputs={
                "s2": {
                    "sensor": "sentinel2_l2a",
                    "paths": str(empty),
                    "bands": ["B02", "B03", "B04", "B08"],
                }
            },
        )
        dm.setup("fit")


def test_inputs_and_labels_that_do_not_meet_fail_at_setup(world, tmp_path):
    far = rasterio.transform.from_origin(600_000.0, 5_000_000.0, 10.0, 10.0)
    write_raster(
        tmp_path / "far" / "far_20200101.tif", np.ones((4, 32, 32), np.uint16), transform=far
    )
    dm = datamodule(
        world,
        tmp_path,
        inputs={
            "far": {
                "sensor": "sentinel2_l2a",
                "paths": str(tmp_path / "far"),
                "bands": ["B02", "B03", "B04", "B08"],
            }
        },
    )
    with pytest.raises(ValueError, match=r"'labels' .* does not intersect far .* in space"):
        dm.setup("fit")
    dated = write_raster(tmp_path / "dated" / "labels_20210101.tif", class_pattern())
    dm = datamodule(
        world,
        tmp_path,
        labels={
            "paths": str(dated),
            "task": "semantic_segmentation",
            "classes": CLASSES,
            "ignore_values": [0],
        },
    )
    with pytest.raises(ValueError, match=r"do not intersect in time: labels are dated 2021-01-01"):
        dm.setup("fit")
    near = datamodule(
        world,
        tmp_path,
        labels={
            "paths": str(dated),
            "task": "semantic_segmentation",
            "classes": CLASSES,
            "ignore_values": [0],
        },
        date_tolerance_days=250,
        inputs=inputs_of(world, "s2"),
    )
    near.setup("fit")
    assert [str(f.day) for f in near.scene.series.frames] == ["2020-06-01"]


def test_split_too_small_for_its_blocks_is_explained(world, tmp_path):
    dm = datamodule(
        world, tmp_path, patch_size=16, split={"block_size": 96, "val": 0.2, "test": 0.1}
    )
    with pytest.raises(ValueError, match=r"lower split\.block_size"):
        dm.setup("fit")


def test_regression_labels(tmp_path):
    heights = class_pattern().astype(np.float32) * 3.5
    labels = write_raster(tmp_path / "height.tif", heights, nodata=-1.0)
    write_raster(
        tmp_path / "s2" / "s2_20200101.tif", np.stack([class_pattern().astype(np.uint16)] * 4)
    )
    dm = GeoTiffDataModule(
        inputs={
            "s2": {
                "sensor": "sentinel2_l2a",
                "paths": str(tmp_path / "s2"),
                "bands": ["B02", "B03", "B04", "B08"],
            }
        },
        labels={
            "paths": str(labels),
            "task": "regression",
            "variables": ["canopy_height"],
            "ignore_values": [0],
        },
        patch_size=32,
        split={"block_size": 32, "val": 0.2, "test": 0.1},
        statistics_cache=str(tmp_path / "cache"),
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    batch.validate()
    assert batch.target.shape == (8, 1, 1, 32, 32)
    finite = batch.target[torch.isfinite(batch.target)]
    assert set(finite.unique().tolist()) <= {3.5, 7.0, 10.5}


@pytest.mark.slow
def test_stsun_fit_runs_the_example_config_on_our_files(world, tmp_path):
    config = yaml.safe_load(Path("configs/geotiff.yaml").read_text())
    args = config["data"]["init_args"]
    assert args["split"]["by"] == "spatial_blocks"
    args["inputs"] = inputs_of(world, "s2", "dem")
    args["labels"]["paths"] = str(world["labels"])
    args["labels"]["classes"] = CLASSES
    args.update(
        patch_size=16,
        batch_size=2,
        split={"by": "spatial_blocks", "val": 0.2, "test": 0.2, "block_size": 32},
        statistics_cache=str(tmp_path / "cache"),
        num_workers=0,
    )
    config["trainer"].update(
        default_root_dir=str(tmp_path / "run"), fast_dev_run=2, accelerator="cpu"
    )
    config["trainer"].pop("callbacks", None)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = build_cli(["fit", "--config", str(path)])
    assert cli.trainer.state.finished
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])


@pytest.mark.slow
def test_torchgeo_segmentation_task_trains_on_our_datamodule(world, tmp_path):
    from lightning import Trainer
    from torchgeo.trainers import SemanticSegmentationTask

    dm = datamodule(
        world, tmp_path, inputs=inputs_of(world, "dem"), batch_format="torchgeo", batch_size=2
    )
    task = SemanticSegmentationTask(
        model="unet",
        backbone="resnet18",
        weights=None,
        in_channels=1,
        num_classes=3,
        ignore_index=-1,
    )
    trainer = Trainer(
        max_steps=3,
        limit_val_batches=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(task, datamodule=dm)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 1, 16, 16) and batch["mask"].shape == (2, 16, 16)
    assert batch["mask"].dtype == torch.long and "valid_mask" in batch and "dates" in batch
    assert trainer.global_step == 3
