"""The TorchGeo benchmark wrappers, on tiny fakes in each dataset's real on-disk layout."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torchgeo_fakes import FAKES, OSCD_DATES, PASTIS_DATES, write_ftw, write_oscd, write_potsdam

from stsun_lightning.batch import Batch, collate_batches
from stsun_lightning.cli import build_cli
from stsun_lightning.data.datamodules.benchmarks import (
    FTWDataModule,
    L7IrishDataModule,
    L8BiomeDataModule,
    LEVIRCDDataModule,
    LoveDADataModule,
    OSCDDataModule,
    PastisDataModule,
    PotsdamDataModule,
    SEN12MSDataModule,
    TorchGeoDataModule,
    VaihingenDataModule,
)
from stsun_lightning.data.datamodules.benchmarks.readers import SampleReader
from stsun_lightning.data.io.files import days_since_epoch
from stsun_lightning.data.samplers.epochs import EpochIndex
from stsun_lightning.data.sensors import get_sensor
from stsun_lightning.data.sources import build_vocabularies

pytestmark = pytest.mark.filterwarnings(  # TorchGeo's GeoDataset, under pandas 3
    "ignore:The inplace keyword in GeoDataFrame.drop is deprecated"
)
PATCH = 32
MODULES: dict[str, tuple[type[TorchGeoDataModule], dict]] = {
    "pastis": (PastisDataModule, {"num_frames": 4}),
    "oscd": (OSCDDataModule, {}),
    "levir_cd": (LEVIRCDDataModule, {}),
    "loveda": (LoveDADataModule, {}),
    "potsdam": (PotsdamDataModule, {}),
    "vaihingen": (VaihingenDataModule, {}),
    "sen12ms": (SEN12MSDataModule, {}),
    "l7_irish": (L7IrishDataModule, {"samples_per_scene": 4}),
    "l8_biome": (L8BiomeDataModule, {"samples_per_scene": 4}),
    "ftw": (FTWDataModule, {}),
}
# name: (task, T, inputs as (sensor, bands), categories shared with other datasets)
# fmt: off
EXPECTED = {
    "pastis": ("time_series_segmentation", 4, [("sentinel2_l2a", ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"))], {"maize", "soybean"}),
    "oscd": ("change_detection", 2, [("sentinel2_l1c", None)], {"no_change", "change"}),
    "levir_cd": ("change_detection", 2, [("google_earth_rgb", ("R", "G", "B"))], {"change"}),
    "loveda": ("semantic_segmentation", 1, [("google_earth_rgb", ("R", "G", "B"))], {"building", "water", "tree_cover", "cropland", "bare_soil"}),
    "potsdam": ("semantic_segmentation", 1, [("isprs_rgbir", ("R", "G", "B", "IR"))], {"building", "tree_cover"}),
    "vaihingen": ("semantic_segmentation", 1, [("isprs_irrg", ("IR", "R", "G"))], {"building", "tree_cover"}),
    "sen12ms": ("semantic_segmentation", 1, [("sentinel1", ("VV", "VH")), ("sentinel2_l1c", None)], {"water", "cropland", "built_up", "tree_cover"}),
    "l7_irish": ("cloud_mask", 1, [("landsat7_etm", ("B1", "B2", "B3", "B4", "B5", "B6", "B6", "B7", "B8"))], {"clear", "cloud"}),
    "l8_biome": ("cloud_mask", 1, [("landsat8_oli_tirs", None)], {"clear", "cloud"}),
    "ftw": ("time_series_segmentation", 2, [("sentinel2_l2a", ("B04", "B03", "B02", "B08"))], {"field"}),
}
# fmt: on
SPLITS = ("train", "val", "test")
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def fake_roots(tmp_path_factory) -> dict[str, Path]:
    """Every fake dataset, written once."""
    base = tmp_path_factory.mktemp("torchgeo_fakes")
    return {name: write(base / name) for name, write in FAKES.items()}


def dataset_names() -> list[str]:
    """Every wrapped dataset."""
    return sorted(MODULES)


def make_module(name: str, root: Path, **kwargs) -> TorchGeoDataModule:
    cls, extra = MODULES[name]
    return cls(root=str(root), patch_size=PATCH, batch_size=2, **{**extra, **kwargs})


def first_and_last(datamodule: TorchGeoDataModule, split: str) -> Batch | None:
    dataset = datamodule.datasets(split)[0]
    if len(dataset) == 0:
        return None
    return collate_batches([dataset[0], dataset[len(dataset) - 1]]).validate()


@pytest.mark.parametrize("name", dataset_names())
def test_batches_carry_bands_dates_categories_and_targets(name, fake_roots):
    datamodule = make_module(name, fake_roots[name])
    datamodule.setup("fit")
    datamodule.setup("test")
    task, frames, inputs, shared = EXPECTED[name]
    source = datamodule.source_infos[0]
    assert source.name == name and source.task == task
    assert shared <= set(source.categories)
    metadata = [get_sensor(sensor).metadata(bands) for sensor, bands in inputs]
    wavelengths = torch.cat([m["wavelength_nm"] for m in metadata])
    vocab = datamodule.vocabularies
    seen = 0
    for split in SPLITS:
        batch = first_and_last(datamodule, split)
        if batch is None:
            continue
        seen += 1
        b, t, c, h, w = batch.image.shape
        assert (b, t, c, h, w) == (2, frames, wavelengths.numel(), PATCH, PATCH)
        assert torch.equal(batch.wavelength_nm, wavelengths.expand(2, -1))
        assert [vocab["tasks"][int(i)] for i in batch.task] == [task, task]
        assert [vocab["categories"][int(i)] for i in batch.categories[0]] == list(source.categories)
        assert batch.target.shape == (2, 1, PATCH, PATCH)
        assert int(batch.target.min()) >= -1 and int(batch.target.max()) < len(source.categories)
        assert bool((batch.target[:, 0][~batch.valid_mask] == -1).all())
        for i in range(2):  # real frames have data wherever the pixel is valid
            real = batch.image[i][batch.time_mask[i]]
            assert bool(torch.isfinite(real[..., batch.valid_mask[i]]).all())
        assert batch.source == [name, name]
    assert seen >= 2  # train and at least one evaluation split


def test_pastis_frames_have_their_dates_and_series_are_padded_or_subsampled(fake_roots):
    datamodule = make_module("pastis", fake_roots["pastis"])
    datamodule.setup("fit")
    reader, indices = datamodule.split_samples("val")
    patch = int(reader.dataset.idxs[indices[0]])
    expected = [days_since_epoch(dt.datetime.strptime(str(d), "%Y%m%d").date()) for d in PASTIS_DATES[patch]]  # fmt: skip
    batch = datamodule.datasets("val")[0][0]
    assert len(expected) == 6  # subsampled evenly to 4: frames 0, 2, 3, 5
    assert batch.dates[0].tolist() == [expected[i] for i in (0, 2, 3, 5)]
    assert batch.time_mask.all() and batch.outputs[0, 0, 0] == 2  # aggregate
    reader, indices = datamodule.split_samples("test")
    short = datamodule.datasets("test")[0][0]  # a 2-frame series, padded to 4
    assert short.time_mask[0].tolist() == [True, True, False, False]
    assert math.isnan(short.dates[0, 2]) and bool(short.image[0, 2:].isnan().all())
    assert short.valid_mask.any()


def test_oscd_pairs_have_their_dates_and_grids_cover_every_pixel_once(tmp_path):
    root = write_oscd(tmp_path / "oscd")
    datamodule = OSCDDataModule(root=str(root), patch_size=PATCH, val_fraction=0.34)
    datamodule.setup("test")
    days = [days_since_epoch(dt.datetime.strptime(d, "%Y%m%d").date()) for d in OSCD_DATES]
    dataset = datamodule.datasets("test")[0]
    batches = [dataset[i] for i in range(len(dataset))]
    assert all(b.dates[0].tolist() == days for b in batches)
    assert all(b.outputs[0, 0].tolist() == [1.0, 0.0, 1.0] for b in batches)  # change 0 -> 1
    labelled = sum(int((b.target >= 0).sum()) for b in batches)
    reader, indices = datamodule.split_samples("test")
    assert labelled == sum(int(reader.read(i).target.ge(0).sum()) for i in indices)


def test_splits_made_here_are_disjoint_and_deterministic(fake_roots):
    splits = []
    for _ in range(2):
        datamodule = make_module("oscd", fake_roots["oscd"], val_fraction=0.34)
        splits.append({s: datamodule.split_samples(s)[1] for s in ("train", "val")})
    assert splits[0] == splits[1]
    assert not set(splits[0]["train"]) & set(splits[0]["val"])
    assert sorted(splits[0]["train"] + splits[0]["val"]) == [0, 1, 2]
    clouds = make_module("l8_biome", fake_roots["l8_biome"])
    scenes = clouds.scene_splits(4)
    assert sorted(i for scene in scenes.values() for i in scene) == [0, 1, 2, 3] and all(
        scenes.values()
    )


def test_landsat_patches_are_dated_by_their_scene(fake_roots):
    datamodule = make_module("l8_biome", fake_roots["l8_biome"])
    reader, indices = datamodule.split_samples("val")
    dates = {days_since_epoch(dt.datetime.strptime(n[9:16], "%Y%j").date()) for n in ("LC80420082013220LGN00", "LC80530022014156LGN00", "LC80070662014234LGN00", "LC80200462014005LGN00")}  # fmt: skip
    example = reader.read(indices[0])
    assert example.dates.tolist()[0] in dates
    assert example.image.shape == (1, 11, PATCH, PATCH)


def test_band_statistics_are_cached_beside_the_data_or_given(tmp_path, monkeypatch):
    root = write_potsdam(tmp_path / "potsdam")
    first = PotsdamDataModule(root=str(root), patch_size=PATCH)
    mean, std = first.statistics()
    cache = root / "stsun_statistics_potsdam.json"
    stored = json.loads(cache.read_text())
    assert stored["mean"] == mean and len(mean) == 4 and all(s > 0 for s in std)
    assert 0 < mean[0] < 255

    def no_reading(*args):
        raise AssertionError("a cache hit reads no sample")

    monkeypatch.setattr(
        "stsun_lightning.data.datamodules.benchmarks.base.band_statistics", no_reading
    )
    assert PotsdamDataModule(root=str(root), patch_size=PATCH).statistics() == (mean, std)
    given = PotsdamDataModule(root=str(root), mean=[0.0] * 4, std=[1.0] * 4)
    assert given.statistics() == ([0.0] * 4, [1.0] * 4)
    with pytest.raises(ValueError, match="one value per band"):
        PotsdamDataModule(root=str(root), mean=[0.0], std=[1.0]).statistics()


def test_potsdam_windows_read_from_disk_match_the_whole_tile(fake_roots):
    datamodule = make_module("potsdam", fake_roots["potsdam"])
    reader, indices = datamodule.split_samples("test")
    window = (20, -5, PATCH, PATCH)  # past the left and bottom edges
    part = reader.read_window(indices[0], window)
    whole = SampleReader.read_window(reader, indices[0], window)
    assert torch.equal(part.image.nan_to_num(-1), whole.image.nan_to_num(-1))
    assert torch.equal(part.target, whole.target)
    assert bool(part.image[..., :5].isnan().all()) and bool((part.target[:, :5] == -1).all())


def test_ftw_frames_are_window_a_then_window_b(tmp_path):
    root = write_ftw(tmp_path / "ftw")
    datamodule = FTWDataModule(root=str(root), mean=[0.0] * 4, std=[1.0] * 4, target="2-class")
    assert datamodule.source_infos[0].categories == ("non_field", "field")
    reader, indices = datamodule.split_samples("val")
    example = reader.read(indices[0])
    aoi = Path(reader.dataset.files[indices[0]]["win_a"]).stem
    for t, window in enumerate(("window_a", "window_b")):
        with rasterio.open(root / "austria" / "s2_images" / window / f"{aoi}.tif") as src:
            assert np.array_equal(example.image[t].numpy(), src.read().astype(np.float32))


def test_rows_follow_vocabularies_set_before_setup(fake_roots):
    loveda = make_module("loveda", fake_roots["loveda"])
    vaihingen = make_module("vaihingen", fake_roots["vaihingen"])
    joint = build_vocabularies([*vaihingen.source_infos, *loveda.source_infos])
    loveda.vocabularies = joint
    loveda.setup("fit")
    batch = loveda.datasets("train")[0][0]
    names = [joint["categories"][int(i)] for i in batch.categories[0]]
    assert names == list(loveda.source_infos[0].categories)
    assert joint["categories"].index("building") == vaihingen.category_names.index("building")


def test_torchgeo_batch_format_gives_torchgeo_keys(fake_roots):
    datamodule = make_module("levir_cd", fake_roots["levir_cd"], batch_format="torchgeo")
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape == (2, 2, 3, PATCH, PATCH) and batch["mask"].shape == (
        2,
        PATCH,
        PATCH,
    )


def test_sen12ms_igbp_scheme_has_17_classes(fake_roots):
    datamodule = make_module("sen12ms", fake_roots["sen12ms"], label_scheme="igbp", bands=["B04", "VV"])  # fmt: skip
    assert len(datamodule.source_infos[0].categories) == 17
    assert datamodule.band_inputs() == [("sentinel1", ("VV",)), ("sentinel2_l1c", ("B04",))]
    datamodule.setup("fit")
    assert datamodule.datasets("train")[0][0].validate().image.shape[2] == 2


@pytest.mark.slow
@pytest.mark.parametrize("name", dataset_names())
def test_fit_runs_from_the_config(name, fake_roots, tmp_path):
    cli = build_cli(
        [
            "fit",
            f"--config={CONFIGS / f'{name}.yaml'}",
            f"--data.root={fake_roots[name]}",
            "--data.batch_size=2",
            "--data.num_workers=0",
            f"--data.patch_size={PATCH}",
            f"--data.eval_patch_size={PATCH}",
            "--model.model=stsun_tiny",
            "--trainer.accelerator=cpu",
            "--trainer.fast_dev_run=1",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
        ]
    )
    assert cli.trainer.state.finished
    assert set(cli.model.sources) == {name}
    logged = cli.trainer.callback_metrics
    assert torch.isfinite(logged["train/loss"])
    assert f"val/{name}/miou" in logged


@pytest.mark.parametrize("name", ["l7_irish", "l8_biome"])
def test_landsat_training_windows_move_every_epoch_and_repeat_for_a_seed(name, fake_roots):
    def epoch_images(datamodule, epoch):
        train = datamodule.datasets("train")[0]
        return [train[EpochIndex(epoch, i)].image for i in range(len(train))]

    datamodule = make_module(name, fake_roots[name])
    first, second = epoch_images(datamodule, 0), epoch_images(datamodule, 1)
    assert all(image.shape[-2:] == (PATCH, PATCH) for image in first + second)
    # Other windows every epoch (most items move), the same ones for the same seed.
    moved = sum(
        not torch.equal(a.nan_to_num(-9), b.nan_to_num(-9))
        for a, b in zip(first, second, strict=True)
    )
    assert moved >= len(first) // 2
    again = epoch_images(make_module(name, fake_roots[name]), 1)
    assert all(
        torch.equal(a.nan_to_num(-9), b.nan_to_num(-9)) for a, b in zip(second, again, strict=True)
    )
    # A window holds real pixels of its scene (the fakes' only fill is a 6-column strip).
    assert all(bool(image.isfinite().any()) for image in first)
