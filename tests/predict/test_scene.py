"""Whole-scene prediction: seams, edges, georeferencing, category choice, interruption."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import date

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from stsun_lightning.data.scenes import BandStatistics, Scene, SceneInput, SceneReader
from stsun_lightning.data.sensors import get_sensor
from stsun_lightning.models import create_model
from stsun_lightning.predict import PredictionRequest, ScenePredictor

BANDS = ("B02", "B03", "B04", "B08")
CATEGORIES = ["water", "tree_cover", "cropland", "building"]


def write_scene(folder, height, width, constant=False, crs="EPSG:32633"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = (
        np.full((4, height, width), 1200, np.uint16)
        if constant
        else rng.integers(200, 4000, (4, height, width)).astype(np.uint16)
    )
    path = folder / "s2_2021-06-01.tif"
    transform = from_origin(600_000, 5_500_000, 10, 10)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=height,
        width=width,
        count=4,
        dtype="uint16",
        crs=crs,
        transform=transform,
        nodata=0,
    ) as dst:
        dst.write(data)
        dst.update_tags(ACQUISITION_DATE="2021-06-01")
    scene_input = SceneInput(get_sensor("sentinel2_l2a"), BANDS, (path,))
    return Scene("scene", 10.0, (date(2021, 6, 1),), {"s2": scene_input}, None, height, width)


def reader():
    return SceneReader(
        BandStatistics(mean={"s2": [0.1] * 4}, std={"s2": [0.05] * 4}, scale={"s2": 1e-4})
    )


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("stsun_tiny", categories=CATEGORIES, variables=["canopy_height"])


def test_output_matches_the_input_grid_at_sizes_that_are_not_multiples_of_the_window(
    tmp_path, model
):
    scene = write_scene(tmp_path / "in", 150, 90)
    out = ScenePredictor(model, window=64, overlap=16, progress=False).predict(
        scene,
        reader(),
        PredictionRequest("semantic_segmentation", categories=CATEGORIES),
        tmp_path / "out.tif",
    )
    with rasterio.open(out) as dst, rasterio.open(scene.inputs["s2"].files[0]) as src:
        assert dst.crs == src.crs and dst.transform == src.transform and dst.shape == src.shape
        classes = dst.read(1)
        assert dst.dtypes[0] == "uint8" and dst.nodata == 255
        assert (classes < len(CATEGORIES)).all()  # every pixel predicted, edges included
        assert dst.tags()["CATEGORIES"] == "0:water,1:tree_cover,2:cropland,3:building"
        assert dst.colormap(1)[0][:3] != dst.colormap(1)[1][:3]
        assert dst.is_tiled


def test_two_requested_categories_give_a_map_over_exactly_those(tmp_path, model):
    scene = write_scene(tmp_path / "in", 64, 64)
    out = ScenePredictor(model, window=64, overlap=16, progress=False).predict(
        scene,
        reader(),
        PredictionRequest("semantic_segmentation", categories=["building", "water"]),
        tmp_path / "o.tif",
    )
    with rasterio.open(out) as dst:
        assert set(np.unique(dst.read(1))) <= {0, 1}
        assert dst.tags()["CATEGORIES"] == "0:building,1:water"


def test_values_are_float32_with_nan_nodata(tmp_path, model):
    scene = write_scene(tmp_path / "in", 70, 70)
    out = ScenePredictor(model, window=64, overlap=16, progress=False).predict(
        scene,
        reader(),
        PredictionRequest("regression", variables=["canopy_height"]),
        tmp_path / "h.tif",
    )
    with rasterio.open(out) as dst:
        assert dst.dtypes[0] == "float32" and np.isnan(dst.nodata)
        assert np.isfinite(dst.read(1)).all()


def test_a_constant_image_shows_no_seam_between_windows(tmp_path, model, monkeypatch):
    scene = write_scene(tmp_path / "in", 160, 160, constant=True)
    captured = []
    import stsun_lightning.predict.scene as scene_module

    original = scene_module.ScenePredictor._encode

    def keep(blended, seen, classification, raster):
        captured.append(blended.copy())
        return original(blended, seen, classification, raster)

    monkeypatch.setattr(scene_module.ScenePredictor, "_encode", staticmethod(keep))
    window, overlap = 64, 32
    ScenePredictor(model, window=window, overlap=overlap, progress=False).predict(
        scene,
        reader(),
        PredictionRequest("semantic_segmentation", categories=CATEGORIES),
        tmp_path / "c.tif",
    )
    probabilities = np.concatenate(captured, 1)  # (K, H, W)
    jumps = np.abs(np.diff(probabilities, axis=2)).max(
        axis=(0, 1)
    )  # largest change between columns
    stride = window - overlap
    seams = [c - 1 for c in range(stride, 160, stride) if c < 160]
    inside = np.delete(jumps, seams)
    # Blending leaves no step at window edges larger than the model's own variation.
    assert jumps[seams].max() <= 1.5 * np.quantile(inside, 0.99) + 1e-6


def test_an_interrupted_run_leaves_no_file_and_a_rerun_completes(tmp_path, model):
    scene = write_scene(tmp_path / "in", 256, 256)
    target = tmp_path / "out" / "pred.tif"
    torch.save(model.state_dict(), tmp_path / "model.pt")
    script = textwrap.dedent(
        f"""
        import sys, time, torch
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from test_scene import write_scene, reader, CATEGORIES
        from pathlib import Path
        from stsun_lightning.models import create_model
        from stsun_lightning.predict import PredictionRequest, ScenePredictor
        model = create_model("stsun_tiny")
        model.load_state_dict(torch.load({str(tmp_path / "model.pt")!r}))
        forward = model.forward
        def slow(*args, **kwargs):
            time.sleep(0.5)
            return forward(*args, **kwargs)
        model.forward = slow
        scene = write_scene(Path({str(tmp_path / "in")!r}), 256, 256)
        ScenePredictor(model, window=64, overlap=16, batch_size=1, progress=False).predict(
            scene, reader(), PredictionRequest("semantic_segmentation", categories=CATEGORIES), Path({str(target)!r}))
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    while not list(target.parent.glob(".pred.tif.*")) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # some rows written
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not target.exists()
    ScenePredictor(model, window=64, overlap=16, progress=False).predict(
        scene, reader(), PredictionRequest("semantic_segmentation", categories=CATEGORIES), target
    )
    with rasterio.open(target) as dst:
        assert dst.shape == (256, 256) and (dst.read(1) < 4).all()
    assert [p.name for p in target.parent.iterdir()] == ["pred.tif"]
    before = target.stat().st_mtime_ns
    ScenePredictor(model, window=64, overlap=16, progress=False).predict(
        scene, reader(), PredictionRequest("semantic_segmentation", categories=CATEGORIES), target
    )
    assert target.stat().st_mtime_ns == before  # complete outputs are skipped on rerun
