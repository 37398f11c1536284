"""STAC inputs: a catalog reads the same pixels, dates and bands as the equivalent paths.

The world is the two-area world of ``two_areas`` written as COGs, with a STAC catalog
over it (``stac_world``): Sentinel-2 as four single-band assets per item, Sentinel-1 as
one two-band asset per item, the DEM named by path in both configurations.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy.testing
import pystac
import pytest
import rasterio
import torch
import yaml
from stac_world import FAR_DAY, S2_ASSETS, write_stac_world
from two_areas import CLASSES, input_specs

from stsun_lightning.batch import Batch
from stsun_lightning.cli import build_cli
from stsun_lightning.data.datamodules.geotiff import GeoTiffDataModule
from stsun_lightning.data.datamodules.rasters import RasterPredictionDataModule
from stsun_lightning.data.datasets.geotiff import input_files
from stsun_lightning.data.datasets.windows import SceneWindowDataset
from stsun_lightning.data.io.grid import grid_of
from stsun_lightning.data.io.stac import gdal_path
from stsun_lightning.data.spec import InputSpec
from stsun_lightning.errors import (
    ConfigError,
    MissingFileError,
    RasterMismatchError,
    UnknownNameError,
)

AREA = [8.95, 45.1, 9.02, 45.2]  # lon/lat around both areas, far from the far item


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return write_stac_world(tmp_path_factory.mktemp("stac_world"))


def path_inputs(world: dict[str, Path]) -> dict[str, dict[str, Any]]:
    return input_specs(world)


def stac_inputs(world: dict[str, Path], **s2: Any) -> dict[str, dict[str, Any]]:
    """The same inputs, Sentinel-1 and -2 named by their collections instead of paths."""
    inputs = input_specs(world)
    inputs["s2"] = {
        "sensor": "sentinel2_l2a",
        "stac": str(world["sentinel-2"]),
        "assets": dict(S2_ASSETS),
        "bbox": AREA,
        "bands": ["B02", "B03", "B04", "B08"],
        "scale": 1e-4,
        "nodata": 65000,
        **s2,
    }
    inputs["s1"] = {"sensor": "sentinel1", "stac": str(world["sentinel-1"]), "bands": ["VV", "VH"]}
    return inputs


def datamodule(inputs: dict[str, dict[str, Any]], world, tmp_path: Path, **kwargs: Any):
    options: dict[str, Any] = dict(
        inputs=inputs,
        labels={"paths": str(world["labels_a"]), "task": "semantic_segmentation", "classes": CLASSES},
        patch_size=16, batch_size=4, split={"block_size": 16, "val": 0.25, "test": 0.0},
        statistics_cache=str(tmp_path / "cache"), date_tolerance_days=3, augment=False,
        predict_window=16, predict_overlap=4,
    )  # fmt: skip
    options.update(kwargs)
    return GeoTiffDataModule(**options)


def assert_same_batch(a: Batch, b: Batch) -> None:
    """Every tensor of two batches equal, bit for bit (NaN where NaN)."""
    for field in dataclasses.fields(Batch):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, torch.Tensor):
            torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True, msg=field.name)
        else:
            assert x == y, field.name


def test_training_through_stac_reads_what_the_file_paths_read(world, tmp_path):
    by_path = datamodule(path_inputs(world), world, tmp_path / "paths")
    by_stac = datamodule(stac_inputs(world), world, tmp_path / "stac")
    by_path.setup("fit")
    by_stac.setup("fit")
    paths, stac = by_path.scene.series, by_stac.scene.series
    assert [f.day for f in stac.frames] == [f.day for f in paths.frames]
    assert [dict(f.members) for f in stac.frames] == [dict(f.members) for f in paths.frames]
    assert stac.bands == paths.bands
    assert by_stac.statistics == by_path.statistics
    stac_s2 = {f.path for f in by_stac.scene.files["s2"]}
    assert stac_s2 == {str(p) for p in by_path.scene.files["s2"]}  # the far item left out
    for split in ("train", "val"):
        stac_items, path_items = by_stac.datasets(split)[0], by_path.datasets(split)[0]
        assert len(stac_items) == len(path_items) > 0
        for index in range(0, len(path_items), 3):
            assert_same_batch(stac_items[index], path_items[index])
    batch = by_stac.datasets("val")[0][0]
    assert batch.band_mask.any() and torch.isfinite(batch.image[batch.band_mask]).any()


def test_prediction_through_stac_reads_what_the_file_paths_read(world, tmp_path):
    trained = datamodule(path_inputs(world), world, tmp_path / "train")
    trained.setup("fit")
    record = trained.data_record()
    windows = {}
    for name, inputs in (("paths", path_inputs(world)), ("stac", stac_inputs(world))):
        predicting = datamodule(inputs, world, tmp_path / name)
        predicting.setup("predict")
        predicting.load_data_record(record)
        (job,) = predicting.prediction_jobs()
        windows[name] = SceneWindowDataset([job], predicting.vocabularies, 16, 4)
    stac_job, path_job = windows["stac"].jobs[0], windows["paths"].jobs[0]
    assert stac_job.scene.name == "MGRS-32TMT"  # the items' grid:code
    assert stac_job.profile() == path_job.profile()
    assert stac_job.scene.series.statistics == trained.statistics
    assert len(windows["stac"]) == len(windows["paths"]) > 1
    for index in range(len(windows["paths"])):
        assert_same_batch(windows["stac"][index], windows["paths"][index])


def test_raster_prediction_takes_stac_inputs_too(world):
    statistics = "rasters"
    jobs = {
        name: RasterPredictionDataModule(
            inputs, categories=["water"], statistics=statistics, window=32, overlap=8
        ).prediction_jobs()
        for name, inputs in (("paths", path_inputs(world)), ("stac", stac_inputs(world)))
    }
    (stac_job,), (path_job,) = jobs["stac"], jobs["paths"]
    assert stac_job.profile() == path_job.profile()
    assert stac_job.scene.series.dates == path_job.scene.series.dates
    assert stac_job.scene.series.statistics == path_job.scene.series.statistics
    vocabularies = {"tasks": ["semantic_segmentation"], "categories": ["water"], "variables": []}
    stac_windows = SceneWindowDataset([stac_job], vocabularies, 32, 8)
    path_windows = SceneWindowDataset([path_job], vocabularies, 32, 8)
    for index in range(len(path_windows)):
        assert_same_batch(stac_windows[index], path_windows[index])


def test_a_date_range_keeps_only_the_items_in_it(world, tmp_path):
    dm = datamodule(stac_inputs(world, datetime="2021-06-15/.."), world, tmp_path)
    dm.setup("fit")
    days = {f.day for f in input_files(dm.input_specs["s2"])}
    assert [d.isoformat() for d in sorted(days)] == ["2021-07-01"]
    frames = dm.scene.series.frames
    assert [sorted(f.members) for f in frames] == [["s1"], ["s2"], ["s1"]]
    only = InputSpec.parse("s2", stac_inputs(world, datetime="2021-06-01", bbox=None)["s2"])
    assert {f.day.isoformat() for f in input_files(only)} == {"2021-06-01"}


def test_a_bounding_box_keeps_only_the_items_it_meets(world):
    everywhere = InputSpec.parse("s2", stac_inputs(world, bbox=None)["s2"])
    found = input_files(everywhere)
    assert {f.day.isoformat() for f in found} == {"2021-06-01", "2021-06-10", "2021-07-01"}
    assert {f.scene for f in found} == {"MGRS-32TMT", "MGRS-32TNT"}
    far = [9.2, 45.1, 9.3, 45.2]  # only the item 20 km east
    (day,) = {f.day for f in input_files(InputSpec.parse("s2", stac_inputs(world, bbox=far)["s2"]))}
    assert day.strftime("%Y%m%d") == FAR_DAY
    nowhere = stac_inputs(world, bbox=[10.0, 50.0, 10.1, 50.1], datetime="2021-01-01/2021-12-31")
    with pytest.raises(ConfigError, match=r"no item of .*collection\.json \(3 item\(s\)\) matches "
                       r"datetime 2021-01-01/2021-12-31 and bbox \[10\.0, 50\.0, 10\.1, 50\.1\]"):  # fmt: skip
        input_files(InputSpec.parse("s2", nowhere["s2"]))


def test_a_missing_asset_key_names_the_item_the_key_and_the_items_keys(world):
    spec = stac_inputs(world, assets={**S2_ASSETS, "swir16": "B11"})["s2"]
    with pytest.raises(
        ConfigError,
        match=r"Input 's2': STAC item 'S2_20210601' has no asset 'swir16' \(named under "
        r"'assets'\); its assets are \['blue', 'green', 'nir', 'red', 'thumbnail'\]",
    ):
        input_files(InputSpec.parse("s2", spec))
    with pytest.raises(UnknownNameError, match=r"Unknown band .* 'B8' \(in input 's2', "
                       r"assets\['nir'\]\)\. Did you mean 'B08'\?"):  # fmt: skip
        InputSpec.parse("s2", stac_inputs(world, assets={"nir": "B8"})["s2"])


def test_bands_from_eo_bands_match_by_wavelength_and_multi_band_assets_by_name(world):
    by_mapping = input_files(InputSpec.parse("s2", stac_inputs(world)["s2"]))
    spec = stac_inputs(world)["s2"]
    del spec["assets"]  # eo:bands name blue, green, ...: matched by centre wavelength
    by_eo = input_files(InputSpec.parse("s2", spec))
    assert sorted(by_eo, key=lambda f: f.path) == sorted(by_mapping, key=lambda f: f.path)
    assert {f.bands for f in by_eo} == {("B02",), ("B03",), ("B04",), ("B08",)}
    s1 = input_files(InputSpec.parse("s1", stac_inputs(world)["s1"]))
    assert [f.bands for f in s1] == [("VV", "VH"), ("VV", "VH")]
    assert all(f.georef is None for f in s1) and all(f.georef for f in by_eo)
    only_vh = {"sensor": "sentinel1", "stac": str(world["sentinel-1"]), "bands": ["VH"]}
    assert [f.bands for f in input_files(InputSpec.parse("s1", only_vh))] == [(None, "VH")] * 2


def test_an_item_collection_and_a_single_item_resolve_as_the_catalog(world, tmp_path, monkeypatch):
    catalog = pystac.Catalog.from_file(str(world["catalog"]))
    items = list(catalog.get_items(recursive=True))
    s1_items = [item for item in items if item.id.startswith("S1A")]
    collection = pystac.ItemCollection(s1_items)
    collection.save_object(dest_href=str(tmp_path / "items.json"))
    spec = {"sensor": "sentinel1", "bands": ["VV", "VH"]}
    from_catalog = input_files(InputSpec.parse("s1", {**spec, "stac": str(world["catalog"])}))
    from_items = input_files(InputSpec.parse("s1", {**spec, "stac": str(tmp_path / "items.json")}))
    assert from_items == from_catalog
    one = input_files(InputSpec.parse("s1", {**spec, "stac": s1_items[0].self_href}))
    assert one == from_catalog[:1]
    monkeypatch.chdir(tmp_path)  # a relative stac path is relative to where stsun runs
    relative = input_files(InputSpec.parse("s1", {**spec, "stac": "items.json"}))
    assert relative == from_items


def test_stac_errors_name_the_item_the_asset_and_the_href(world, tmp_path):
    s1_item = next(pystac.Collection.from_file(str(world["sentinel-1"])).get_items())
    item = json.loads(Path(s1_item.self_href).read_text())
    undated = {**item, "properties": {**item["properties"], "datetime": None}}
    (tmp_path / "undated.json").write_text(json.dumps(undated))
    spec = {"sensor": "sentinel1", "stac": str(tmp_path / "undated.json")}
    with pytest.raises(ConfigError, match=rf"STAC item '{item['id']}' \(.*undated\.json\) has no "
                       r"datetime \(nor start_datetime\)"):  # fmt: skip
        input_files(InputSpec.parse("s1", spec))
    moved = json.loads(json.dumps(item))
    moved["assets"]["vv_vh"]["href"] = "gone/S1.tif"
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    with pytest.raises(MissingFileError, match=rf"STAC item '{item['id']}', asset 'vv_vh': href "
                       r"'gone/S1\.tif' \(.*gone/S1\.tif\) does not exist"):  # fmt: skip
        input_files(InputSpec.parse("s1", {**spec, "stac": str(tmp_path / "moved.json")}))
    with pytest.raises(MissingFileError, match=r"STAC file .*nothing\.json does not exist"):
        input_files(InputSpec.parse("s1", {**spec, "stac": str(tmp_path / "nothing.json")}))
    with pytest.raises(ConfigError, match=r"\['datetime'\] filter a STAC input"):
        InputSpec.parse("s1", {"sensor": "sentinel1", "paths": "x", "datetime": "2021-01-01/.."})
    with pytest.raises(ConfigError, match=r"names no files: give 'paths'.*or 'stac'"):
        InputSpec.parse("s1", {"sensor": "sentinel1"})


def test_remote_hrefs_open_through_gdal_virtual_file_systems():
    url = "https://example.com/items/S2/B04.tif"
    assert gdal_path(url) == f"/vsicurl/{url}"
    assert gdal_path("s3://bucket/key/B04.tif") == "/vsis3/bucket/key/B04.tif"
    assert gdal_path("file:///data/B04%20a.tif") == "/data/B04 a.tif"
    assert gdal_path("/data/B04.tif") == "/data/B04.tif"


@pytest.fixture(scope="module")
def served(world):
    """The world's folder served over HTTP on localhost (no network needed).

    In another process: GDAL holds the GIL while it opens a file, so a server thread of
    this process could never answer it.
    """
    root = world["catalog"].parent.parent
    server = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
         "--directory", str(root)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        port = re.search(r"port (\d+)", server.stdout.readline())
        assert port, "the HTTP server did not start"
        yield f"http://127.0.0.1:{port.group(1)}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_catalog_over_http_reads_its_assets_through_vsicurl(world, served):
    spec = {"sensor": "sentinel1", "bands": ["VV", "VH"]}
    local = input_files(InputSpec.parse("s1", {**spec, "stac": str(world["sentinel-1"])}))
    url = f"{served}/stac/sentinel-1/collection.json"
    remote = input_files(InputSpec.parse("s1", {**spec, "stac": url}))
    assert [f.path for f in remote] == [
        f"/vsicurl/{served}/rasters/s1/{Path(f.path).name}" for f in local
    ]
    inputs = {name: {**spec, "stac": href} for name, href in (("s1", url),)}
    local_inputs = {"s1": {**spec, "stac": str(world["sentinel-1"])}}
    jobs = [
        RasterPredictionDataModule(i, categories=["water"], statistics="rasters").prediction_jobs()
        for i in (inputs, local_inputs)
    ]
    (over_http,), (on_disk,) = jobs
    assert over_http.profile() == on_disk.profile()
    bounds = over_http.scene.extent.bounds
    numpy.testing.assert_array_equal(
        over_http.scene.series.read(bounds).image, on_disk.scene.series.read(bounds).image
    )


def _cli_config(inputs: dict[str, dict[str, Any]], world, root: Path) -> Path:
    """A ``stsun`` config training on area A with ``inputs``."""
    init_args = {
        "inputs": inputs,
        "labels": {"paths": str(world["labels_a"]), "task": "semantic_segmentation", "classes": CLASSES},
        "patch_size": 16, "batch_size": 4, "date_tolerance_days": 3, "augment": False,
        "split": {"block_size": 16, "val": 0.25, "test": 0.0},
        "statistics_cache": str(root / "cache"), "predict_window": 16, "predict_overlap": 4,
    }  # fmt: skip
    config = {
        "model": {"model": "stsun_tiny"},
        "data": {"class_path": "stsun_lightning.data.GeoTiffDataModule", "init_args": init_args},
        "trainer": {
            "default_root_dir": str(root / "run"), "max_steps": 2, "limit_val_batches": 1,
            "accelerator": "cpu", "logger": False, "enable_progress_bar": False,
        },
    }  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.slow
def test_stsun_fits_through_stac_and_predicts_the_map_the_file_paths_predict(world, tmp_path):
    configs = {
        "stac": _cli_config(stac_inputs(world), world, tmp_path / "stac"),
        "paths": _cli_config(path_inputs(world), world, tmp_path / "paths"),
    }
    build_cli(["fit", "--config", str(configs["stac"])])
    checkpoint = next((tmp_path / "stac" / "run").rglob("*.ckpt"))
    for config in configs.values():
        build_cli(["predict", "--config", str(config), f"--ckpt_path={checkpoint}"])
    (through_stac,) = (tmp_path / "stac" / "run" / "predictions").glob("*.tif")
    (through_paths,) = (tmp_path / "paths" / "run" / "predictions").glob("*.tif")
    assert through_stac.name == "MGRS-32TMT.tif" and through_paths.name == "S2.tif"
    with rasterio.open(through_stac) as a, rasterio.open(through_paths) as b:
        assert (a.crs, a.transform, a.shape) == (b.crs, b.transform, b.shape)
        numpy.testing.assert_array_equal(a.read(), b.read())
        assert len(numpy.unique(a.read(1))) > 1


def test_a_band_in_two_assets_and_an_asset_of_other_bands_than_listed_are_errors(world):
    s2_item = next(pystac.Collection.from_file(str(world["sentinel-2"])).get_items())
    item = json.loads(Path(s2_item.self_href).read_text())
    item["assets"]["blue-jp2"] = item["assets"]["blue"]  # Earth Search's COG and JP2 of B02
    twice = Path(s2_item.self_href).with_name("twice.json")  # beside it: its hrefs are relative
    twice.write_text(json.dumps(item))
    s2 = {"sensor": "sentinel2_l2a", "stac": str(twice)}
    with pytest.raises(ConfigError, match=r"STAC item 'S2_20210601' has band 'B02' in assets "
                       r"'blue' and 'blue-jp2'; name the one to read under 'assets'"):  # fmt: skip
        input_files(InputSpec.parse("s2", s2))
    s1 = {"sensor": "sentinel1", "stac": str(world["sentinel-1"]), "assets": {"vv_vh": "VV"}}
    predicting = RasterPredictionDataModule({"s1": s1}, categories=["water"], statistics="rasters")
    with pytest.raises(RasterMismatchError, match=r"S1A_IW_20210603\.tif \(STAC item "
                       r"'S1A_IW_20210603', asset 'vv_vh'\) has 2 band\(s\), but the catalog "
                       r"gives it 1"):  # fmt: skip
        predicting.prediction_jobs()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("datetime", "2021-13-01/..", r"datetime '2021-13-01/\.\.': '2021-13-01' is not a date"),
        ("datetime", "2021-06-01/2021-01-01", r"datetime '2021-06-01/2021-01-01' ends before"),
        ("bbox", [9.0, 45.0, 8.0, 46.0], r"bbox must be \[min lon, min lat, max lon, max lat\]"),
        ("assets", ["B02"], r"assets must map asset keys to bands"),
    ],
)
def test_malformed_stac_options_name_the_input_and_the_expected_form(world, key, value, message):
    with pytest.raises(ConfigError, match=rf"Input 's2': {message}"):
        InputSpec.parse("s2", stac_inputs(world, **{key: value})["s2"])


def test_the_grid_of_a_file_whose_item_states_proj_is_read_from_the_catalog(world):
    (first, *_) = input_files(InputSpec.parse("s2", stac_inputs(world)["s2"]))
    assert first.georef is not None
    with rasterio.open(first.path) as src:
        assert (first.georef.crs, first.georef.transform) == (src.crs, src.transform)
        assert first.georef.shape == src.shape and first.georef.bounds == tuple(src.bounds)
    unopened = dataclasses.replace(first, path="/nowhere/B02.tif")  # never opened
    assert grid_of(unopened) == grid_of(Path(first.path))
