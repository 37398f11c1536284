import hashlib
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from stsun_lightning.data.datasets.world import world as world_module
from stsun_lightning.data.datasets.world.world import SOURCES, VERSION, SpectralWorld
from stsun_lightning.data.sensors import get_sensor
from stsun_lightning.errors import UnknownNameError

SIZE, SCENES = 64, 2
EXPECTED_SOURCES = {
    "s2_crops": ("time_series_segmentation", "aggregate"),
    "landsat8_landcover": ("semantic_segmentation", "state"),
    "aerial_landcover": ("semantic_segmentation", "state"),
    "s1s2_landcover": ("semantic_segmentation", "state"),
    "s2_change": ("change_detection", "change"),
    "s2_clouds": ("cloud_mask", "state"),
    "canopy_height": ("regression", "state"),
}
COARSE = ["water", "tree_cover", "cropland", "built_up", "bare_soil", "grassland"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    manifest = SpectralWorld(root, seed=0, scene_size=SIZE, scenes_per_source=SCENES).generate()
    return root, manifest


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def file_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def scene_paths(manifest: dict) -> list[str]:
    paths = []
    for source in manifest["sources"].values():
        for scene in source["scenes"]:
            paths += [p for files in scene["files"].values() for p in files] + [scene["label"]]
    return paths


# --- manifest and files -------------------------------------------------------------------


def test_manifest_shape(world):
    root, manifest = world
    assert json.loads((root / "manifest.json").read_text()) == manifest
    assert {k: manifest[k] for k in ("version", "seed", "scene_size", "scenes_per_source")} == {
        "version": VERSION,
        "seed": 0,
        "scene_size": SIZE,
        "scenes_per_source": SCENES,
    }
    assert manifest["crs"] == "EPSG:32632"
    assert set(manifest["sources"]) == set(EXPECTED_SOURCES)
    for name, source in manifest["sources"].items():
        assert (source["task"], source["outputs"]) == EXPECTED_SOURCES[name]
        assert [s["split"] for s in source["scenes"]] == ["train"] * (SCENES - 1) + ["val"]
        assert [s["name"] for s in source["scenes"]] == [f"scene_{i:03d}" for i in range(SCENES)]
        for info in source["inputs"].values():
            sensor = get_sensor(info["sensor"])
            assert info["sensor"] == sensor.name
            assert set(info["bands"]) <= set(sensor.band_names)
        for scene in source["scenes"]:
            assert set(scene["files"]) == set(source["inputs"])
            assert scene["dates"] == sorted(scene["dates"])
            for files in scene["files"].values():
                assert len(files) == len(scene["dates"])
        label = source["label"]
        if name == "canopy_height":
            assert label == {"kind": "values", "variables": ["canopy_height"], "unit": "m"}
        else:
            assert label["kind"] == "classes" and label["ignore_values"] == [0]
            assert list(label["classes"]) == [str(i) for i in range(1, len(label["classes"]) + 1)]


def test_sources_sensors_and_classes(world):
    _, manifest = world
    sources = manifest["sources"]
    s2_bands = list(get_sensor("sentinel2_l2a").band_names)
    assert sources["s2_crops"]["inputs"] == {"s2": {"sensor": "sentinel2_l2a", "bands": s2_bands}}
    assert all(len(s["dates"]) == 8 for s in sources["s2_crops"]["scenes"])
    assert list(sources["s2_crops"]["label"]["classes"].values()) == [
        "wheat", "maize", "rapeseed", "sunflower", "soybean", "grassland",
    ]  # fmt: skip
    landsat = sources["landsat8_landcover"]["inputs"]["landsat8"]
    assert landsat["bands"] == ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B10"]
    assert list(sources["landsat8_landcover"]["label"]["classes"].values()) == COARSE
    assert list(sources["s1s2_landcover"]["label"]["classes"].values()) == COARSE
    fine = list(sources["aerial_landcover"]["label"]["classes"].values())
    assert set(fine) == {
        "water", "tree_cover", "grassland", "building", "road", "bare_soil", "cropland",
    }  # fmt: skip
    assert len(set(fine) & set(COARSE)) == 5  # shared names between the class sets
    assert sources["aerial_landcover"]["inputs"]["aerial"]["sensor"] == "isprs_rgbir"
    assert all(s["gsd_m"] == 1.0 for s in sources["aerial_landcover"]["scenes"])
    assert all(s["gsd_m"] == 30.0 for s in sources["landsat8_landcover"]["scenes"])
    assert set(sources["s1s2_landcover"]["inputs"]) == {"s1", "s2"}
    assert sources["s1s2_landcover"]["inputs"]["s1"]["bands"] == ["VV", "VH"]
    assert set(sources["canopy_height"]["inputs"]) == {"s1", "s2"}
    assert sources["s2_clouds"]["inputs"]["s2"]["sensor"] == "sentinel2_l1c"
    assert "B10" in sources["s2_clouds"]["inputs"]["s2"]["bands"]
    assert list(sources["s2_change"]["label"]["classes"].values()) == ["no_change", "change"]
    assert list(sources["s2_clouds"]["label"]["classes"].values()) == ["clear", "cloud"]
    for scene in sources["s2_change"]["scenes"]:
        first, second = (np.datetime64(d) for d in scene["dates"])
        assert 350 <= (second - first).astype(int) <= 380


def test_every_geotiff_is_georeferenced_and_described(world):
    root, manifest = world
    for source in manifest["sources"].values():
        label_spec = source["label"]
        for scene in source["scenes"]:
            gsd = scene["gsd_m"]
            transforms = set()
            for input_name, files in scene["files"].items():
                bands = source["inputs"][input_name]["bands"]
                for path, date in zip(files, scene["dates"], strict=True):
                    assert path.endswith(f"{input_name}_{date}.tif")
                    with rasterio.open(root / path) as src:
                        assert src.crs.to_epsg() == 32632
                        assert (src.width, src.height) == (SIZE, SIZE)
                        assert src.transform.a == gsd and src.transform.e == -gsd
                        assert list(src.descriptions) == bands
                        tags = src.tags()
                        assert tags["ACQUISITION_DATE"] == date
                        assert tags["SENSOR"] == source["inputs"][input_name]["sensor"]
                        assert src.nodata is not None
                        if src.dtypes[0] == "uint16":
                            assert src.nodata == 0
                        else:
                            assert src.dtypes[0] == "float32" and math.isnan(src.nodata)
                        assert src.profile["tiled"] and src.compression.name == "deflate"
                        transforms.add(tuple(src.transform))
            assert len(transforms) == 1  # all inputs and dates share the scene's grid
            with rasterio.open(root / scene["label"]) as src:
                assert src.crs.to_epsg() == 32632 and tuple(src.transform) in transforms
                tags = src.tags()
                if label_spec["kind"] == "classes":
                    assert src.dtypes[0] == "uint8" and src.nodata == 0
                    expected = ",".join(f"{k}:{v}" for k, v in label_spec["classes"].items())
                    assert tags["CLASSES"] == expected
                    values = np.unique(src.read(1))
                    assert set(values.tolist()) <= {0, *map(int, label_spec["classes"])}
                else:
                    assert src.dtypes[0] == "float32" and math.isnan(src.nodata)
                    assert tags["VARIABLES"] == "canopy_height" and tags["UNIT"] == "m"


def test_scenes_do_not_overlap(world):
    root, manifest = world
    boxes = []
    for source in manifest["sources"].values():
        for scene in source["scenes"]:
            with rasterio.open(root / scene["label"]) as src:
                boxes.append(src.bounds)
    for a, b in itertools.combinations(boxes, 2):
        assert a.right <= b.left or b.right <= a.left or a.top <= b.bottom or b.top <= a.bottom


def test_value_ranges(world):
    root, manifest = world
    for source in manifest["sources"].values():
        for scene in source["scenes"]:
            for input_name, files in scene["files"].items():
                info = source["inputs"][input_name]
                bands = get_sensor(info["sensor"]).select(info["bands"])
                for path in files:
                    data = read(root / path)
                    if info["sensor"] == "sentinel1":
                        valid = data[:, np.isfinite(data).all(0)]
                        assert valid.size and valid.min() > -45 and valid.max() < 15
                        continue
                    valid = data[:, (data > 0).all(0)]  # 0 = nodata in every band
                    assert valid.shape[1] > 0.5 * SIZE * SIZE
                    for band, values in zip(bands, valid, strict=True):
                        if band.wavelength_nm > 3000:  # thermal: kelvin x 100
                            assert values.min() > 22000 and values.max() < 34000
                        else:  # reflectance x 10000
                            assert values.max() < 12000


# --- determinism ----------------------------------------------------------------------------


def test_same_seed_gives_identical_files_other_seed_differs(world, tmp_path):
    root, manifest = world
    again = SpectralWorld(tmp_path / "again", seed=0, scene_size=SIZE, scenes_per_source=SCENES)
    assert again.generate() == manifest
    reference = file_hashes(root)
    assert file_hashes(tmp_path / "again") == reference
    other = SpectralWorld(
        tmp_path / "other", seed=1, scene_size=SIZE, scenes_per_source=SCENES, sources=["s2_crops"]
    )
    other_hashes = file_hashes(tmp_path / "other") if other.generate() else {}
    tifs = [p for p in other_hashes if p.endswith(".tif")]
    assert tifs and all(other_hashes[p] != reference.get(p) for p in tifs)


# --- physics of the content -----------------------------------------------------------------


def crop_ndvi(root: Path, manifest: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NDVI (N, T), clear-sky flags (N, T) and crop labels (N,) of every crop pixel."""
    source = manifest["sources"]["s2_crops"]
    bands = source["inputs"]["s2"]["bands"]
    blue, red, nir = (bands.index(b) for b in ("B02", "B04", "B08"))
    ndvi, clear, labels = [], [], []
    for scene in source["scenes"]:
        label = read(root / scene["label"])[0]
        stack = np.stack([read(root / f).astype(np.float32) / 1e4 for f in scene["files"]["s2"]])
        pixels = stack[:, :, label > 0]  # (T, C, N)
        total = np.maximum(pixels[:, nir] + pixels[:, red], 1e-6)
        ndvi.append(((pixels[:, nir] - pixels[:, red]) / total).T)
        # Clouds are bright in the blue; nodata is 0. NDVI is a ratio, so shadows matter less.
        clear.append(((pixels[:, blue] > 0) & (pixels[:, blue] < 0.12)).T)
        labels.append(label[label > 0])
    return np.concatenate(ndvi), np.concatenate(clear), np.concatenate(labels)


def nearest_centroid_accuracy(ndvi, clear, labels, dates) -> float:
    """Balanced accuracy of a nearest-centroid classifier over the clear dates of ``dates``."""
    classes = np.unique(labels)
    features, valid = ndvi[:, dates], clear[:, dates]
    centroids = np.stack(
        [
            np.nanmean(np.where(valid[labels == k], features[labels == k], np.nan), 0)
            for k in classes
        ]
    )
    squared = np.where(valid[:, None], (features[:, None] - centroids[None]) ** 2, 0).sum(-1)
    predicted = classes[squared.argmin(1)]
    seen = valid.any(1)
    return float(np.mean([(predicted[seen & (labels == k)] == k).mean() for k in classes]))


def test_crops_separable_over_the_season_not_on_one_date(world):
    root, manifest = world
    ndvi, clear, labels = crop_ndvi(root, manifest)
    assert len(np.unique(labels)) == 6
    dates = ndvi.shape[1]
    for t in range(dates):
        stats = []
        for k in np.unique(labels):
            values = ndvi[(labels == k) & clear[:, t], t]
            stats.append((values.mean(), values.std()))
        closest = min(
            abs(a[0] - b[0]) / max(a[1], b[1]) for a, b in itertools.combinations(stats, 2)
        )
        assert closest < 1.0, f"date {t}: every pair of crops differs by more than one std"
    single = [nearest_centroid_accuracy(ndvi, clear, labels, [t]) for t in range(dates)]
    season = nearest_centroid_accuracy(ndvi, clear, labels, list(range(dates)))
    assert max(single) < 0.75, single
    assert season > 0.85, season
    assert season > max(single) + 0.15


def test_canopy_height_is_inferable_from_optical_and_radar(world):
    root, manifest = world
    source = manifest["sources"]["canopy_height"]
    bands = source["inputs"]["s2"]["bands"]
    heights, features = [], []
    for scene in source["scenes"]:
        height = read(root / scene["label"])[0]
        s2 = read(root / scene["files"]["s2"][0]).astype(np.float32) / 1e4
        vv, vh = 10 ** (read(root / scene["files"]["s1"][0]) / 10)
        # A 3x3 boxcar (multilooking) tames the speckle, as any SAR user would.
        padded = np.pad(vh, 1, mode="edge")
        vh3 = sum(padded[i : i + SIZE, j : j + SIZE] for i in range(3) for j in range(3)) / 9
        stack = [*s2, 10 * np.log10(vv), 10 * np.log10(vh), 10 * np.log10(vh3)]
        features.append(np.stack(stack).reshape(len(stack), -1).T)
        heights.append(height.ravel())
    features, heights = np.concatenate(features), np.concatenate(heights)
    # Screen clouds (bright blue) and cloud shadows (dark NIR), as a scene mask would.
    blue, nir = features[:, bands.index("B02")], features[:, bands.index("B08")]
    clear = (blue < 0.12) & (nir > 0.15) & np.isfinite(heights)
    trees = clear & (heights > 3)
    assert trees.sum() > 500
    swir = np.corrcoef(heights[trees], features[trees, bands.index("B11")])[0, 1]
    radar = np.corrcoef(heights[trees], features[trees, -1])[0, 1]
    assert swir < -0.5 and radar > 0.5, (swir, radar)
    assert np.nanmax(heights) <= 45 and np.nanmin(heights) >= 0
    # Even a linear model of the pixel values gets well under half the spread of heights.
    design = np.concatenate([features[clear], features[clear] ** 2, np.ones((clear.sum(), 1))], 1)
    fit, held_out = slice(0, None, 2), slice(1, None, 2)
    coef = np.linalg.lstsq(design[fit], heights[clear][fit], rcond=None)[0]
    error = np.abs(design[held_out] @ coef - heights[clear][held_out]).mean()
    assert error < 0.4 * heights[clear][held_out].std()


def test_clouds_and_cirrus_band(world):
    root, manifest = world
    source = manifest["sources"]["s2_clouds"]
    b10 = source["inputs"]["s2"]["bands"].index("B10")
    for scene in source["scenes"]:
        label = read(root / scene["label"])[0]
        image = read(root / scene["files"]["s2"][0]).astype(np.float32) / 1e4
        assert 0.05 < (label == 2).mean() < 0.75
        assert image[b10][label == 2].mean() > 5 * image[b10][label == 1].mean()
        assert np.median(image[b10][label == 1]) < 0.02


def test_change_labels_follow_spectral_change(world):
    root, manifest = world
    source = manifest["sources"]["s2_change"]
    bands = source["inputs"]["s2"]["bands"]
    changed, unchanged = [], []
    for scene in source["scenes"]:
        label = read(root / scene["label"])[0]
        before, after = (read(root / f).astype(np.float32) / 1e4 for f in scene["files"]["s2"])
        assert (label == 2).any() and (label == 1).any()
        clear = (before[1] < 0.12) & (after[1] < 0.12) & (before[1] > 0) & (after[1] > 0)
        delta = np.abs(after - before)[[bands.index("B04"), bands.index("B11")]].sum(0)
        changed.append(delta[clear & (label == 2)])
        unchanged.append(delta[clear & (label == 1)])
    assert np.median(np.concatenate(changed)) > 1.5 * np.median(np.concatenate(unchanged))


def test_landcover_classes_match_signatures(world):
    root, manifest = world
    source = manifest["sources"]["s1s2_landcover"]
    classes = {v: int(k) for k, v in source["label"]["classes"].items()}
    bands = source["inputs"]["s2"]["bands"]
    vv, nir, red = [], [], []
    labels = []
    for scene in source["scenes"]:
        labels.append(read(root / scene["label"])[0].ravel())
        s1 = read(root / scene["files"]["s1"][0])
        s2 = read(root / scene["files"]["s2"][0]).astype(np.float32) / 1e4
        vv.append(s1[0].ravel())
        nir.append(s2[bands.index("B08")].ravel())
        red.append(s2[bands.index("B04")].ravel())
    labels, vv, nir, red = map(np.concatenate, (labels, vv, nir, red))
    water, trees = labels == classes["water"], labels == classes["tree_cover"]
    assert water.any() and trees.any()
    assert np.median(vv[water]) < np.median(vv[~water]) - 5
    assert np.median(nir[trees] / red[trees]) > 3 * np.median(nir[water] / red[water])


def test_mixed_pixels_at_coarse_gsd(world):
    root, manifest = world
    scene = manifest["sources"]["landsat8_landcover"]["scenes"][0]
    image = read(root / scene["files"]["landsat8"][0]).astype(np.float32)
    assert len(np.unique(image[4])) > 500  # a continuum, not a few class colours


# --- caching and atomicity --------------------------------------------------------------------


def test_complete_cache_is_reused(world):
    root, manifest = world
    stamps = {p: (root / p).stat().st_mtime_ns for p in ["manifest.json", *scene_paths(manifest)]}
    world_again = SpectralWorld(root, seed=0, scene_size=SIZE, scenes_per_source=SCENES)
    assert world_again.is_complete()
    start = time.perf_counter()
    assert world_again.generate() == manifest
    assert world_again.manifest == manifest
    assert time.perf_counter() - start < 1.0
    assert {p: (root / p).stat().st_mtime_ns for p in stamps} == stamps


def test_stale_or_incomplete_cache_is_regenerated(tmp_path):
    world = SpectralWorld(tmp_path, scene_size=32, scenes_per_source=1, sources=["s2_clouds"])
    manifest = world.generate()
    hashes = file_hashes(tmp_path)
    label = tmp_path / manifest["sources"]["s2_clouds"]["scenes"][0]["label"]
    label.unlink()
    assert not world.is_complete()
    assert world.generate() == manifest and file_hashes(tmp_path) == hashes
    stale = {**manifest, "version": 0}
    (tmp_path / "manifest.json").write_text(json.dumps(stale))
    assert not world.is_complete()
    assert world.generate() == manifest and file_hashes(tmp_path) == hashes
    bigger = SpectralWorld(tmp_path, scene_size=48, scenes_per_source=1, sources=["s2_clouds"])
    assert not bigger.is_complete()
    assert bigger.generate()["scene_size"] == 48
    assert not world.is_complete()
    before = (tmp_path / "manifest.json").stat().st_mtime_ns
    bigger.generate(force=True)
    assert (tmp_path / "manifest.json").stat().st_mtime_ns != before


def test_failed_generation_leaves_nothing_at_final_paths(tmp_path, monkeypatch):
    calls = []
    original = world_module.write_geotiff

    def failing_writer(*args, **kwargs):
        calls.append(args[0])
        if len(calls) > 5:
            raise OSError("disk full")
        original(*args, **kwargs)

    monkeypatch.setattr(world_module, "write_geotiff", failing_writer)
    world = SpectralWorld(tmp_path, scene_size=32, scenes_per_source=2)
    with pytest.raises(OSError, match="disk full"):
        world.generate()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # no source, no manifest


def test_killed_generation_is_atomic_and_rerun_matches(world, tmp_path):
    reference_root, manifest = world
    root = tmp_path / "killed"
    script = (
        "import sys; from stsun_lightning.data.datasets.world.world import SpectralWorld; "
        f"SpectralWorld(sys.argv[1], seed=0, scene_size={SIZE}, scenes_per_source={SCENES})"
        ".generate()"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(root)])
    try:
        deadline = time.monotonic() + 60
        while not list(root.glob(".tmp-*/*/*/*.tif")):
            assert child.poll() is None, "the generation ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not (root / "manifest.json").exists()
    assert not any((root / name).exists() for name in SOURCES)
    assert list(root.glob(".tmp-*"))  # the killed run's work stays hidden in its temp folder

    assert SpectralWorld(root, seed=0, scene_size=SIZE, scenes_per_source=SCENES).generate() == (
        manifest
    )
    assert not list(root.glob(".tmp-*"))
    assert file_hashes(root) == file_hashes(reference_root)


def test_invalid_arguments():
    with pytest.raises(UnknownNameError, match="s2_crops"):
        SpectralWorld("unused", sources=["s2_crop"])
    with pytest.raises(ValueError, match="scene_size"):
        SpectralWorld("unused", scene_size=4)
    with pytest.raises(ValueError, match="scenes_per_source"):
        SpectralWorld("unused", scenes_per_source=0)
    subset = SpectralWorld("unused", sources=["canopy_height", "s2_crops"])
    assert subset.sources == ["s2_crops", "canopy_height"]  # registry order


def test_val_scenes_hold_out_the_last_scenes_of_each_source(tmp_path):
    world = SpectralWorld(
        tmp_path, scene_size=32, scenes_per_source=3, sources=["s2_clouds"], val_scenes=2
    )
    splits = [s["split"] for s in world.generate()["sources"]["s2_clouds"]["scenes"]]
    assert splits == ["train", "val", "val"]
    assert world.generate()["val_scenes"] == 2
    with pytest.raises(ValueError, match="val_scenes: expected 0 to scenes_per_source - 1 = 2"):
        SpectralWorld(tmp_path, scenes_per_source=3, val_scenes=3)
