"""Whole-scene prediction to COGs: grid, edges, seams, categories, outputs, interruption."""

import copy
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import rasterio
import torch
from rasters import BANDS, CATEGORIES, predict, s2_input, trained_task, write_raster
from rio_cogeo.cogeo import cog_validate

from stsun_lightning.data import RasterPredictionDataModule
from stsun_lightning.palette import NAMED_COLOURS, colour_table
from stsun_lightning.predict import OutputSettings, model_fingerprint
from stsun_lightning.predict.outputs import SceneOutputs
from stsun_lightning.predict.uncertainty import margin, normalised_entropy
from stsun_lightning.predict.windows import blend_weights
from stsun_lightning.tasks.module import StsunTask

__all__ = ["trained_task"]  # the fixture, imported for pytest


def test_output_matches_the_input_grid_at_sizes_that_are_not_multiples_of_the_window(
    tmp_path, trained_task
):
    source = write_raster(tmp_path / "in" / "tile_2021-06-01.tif", 150, 90)
    writer = predict(
        trained_task, tmp_path / "out", inputs=s2_input(str(source)), window=64, overlap=16
    )
    assert writer.written == [tmp_path / "out" / "tile.tif"]
    with rasterio.open(writer.written[0]) as dst, rasterio.open(source) as src:
        assert dst.crs == src.crs and dst.transform == src.transform and dst.shape == src.shape
        classes = dst.read(1)
        assert dst.dtypes[0] == "uint8" and dst.nodata == 255
        assert (classes < len(CATEGORIES)).all()  # every pixel predicted, edges included
        assert dst.tags()["CATEGORIES"] == "0:water,1:tree_cover,2:cropland,3:building"
        assert dst.colormap(1)[0][:3] != dst.colormap(1)[1][:3]
        assert dst.profile["tiled"] and dst.driver == "GTiff"


def test_large_outputs_are_cloud_optimized_with_overviews(tmp_path, trained_task):
    source = write_raster(tmp_path / "in" / "big.tif", 600, 600)
    writer = predict(
        trained_task, tmp_path / "out", inputs=s2_input(str(source)), window=128, overlap=0
    )
    with rasterio.open(writer.written[0]) as dst:
        assert dst.overviews(1), "COG has no overviews"
        assert dst.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_two_requested_categories_give_a_map_over_exactly_those(tmp_path, trained_task):
    source = write_raster(tmp_path / "in" / "a.tif", 64, 64)
    writer = predict(
        trained_task, tmp_path / "out", inputs=s2_input(str(source)), categories=["building", "water"],
        window=64, overlap=16,
    )  # fmt: skip
    with rasterio.open(writer.written[0]) as dst:
        assert set(np.unique(dst.read(1))) <= {0, 1}
        assert dst.tags()["CATEGORIES"] == "0:building,1:water"


def test_a_category_subset_gives_the_same_logits_as_the_full_set(tmp_path, trained_task):
    """Rows are matched by name: asking for two categories ranks them as the full map does."""
    source = write_raster(tmp_path / "in" / "a.tif", 64, 64)
    args = {"inputs": s2_input(str(source)), "window": 64, "overlap": 0}
    full = predict(trained_task, tmp_path / "full", {"probabilities": "float16"}, **args)
    pair = predict(
        trained_task, tmp_path / "pair", {"probabilities": "float16"}, categories=["building", "water"], **args
    )  # fmt: skip
    with rasterio.open(full.written[1]) as f, rasterio.open(pair.written[1]) as p:
        all_p, two_p = f.read().astype(np.float64), p.read().astype(np.float64)
    # Softmax over a subset = the full softmax renormalised over that subset.
    expected = all_p[[3, 0]] / all_p[[3, 0]].sum(0, keepdims=True)
    np.testing.assert_allclose(two_p, expected, atol=2e-3)


def test_probabilities_sum_to_one_in_both_formats(tmp_path, trained_task):
    source = write_raster(tmp_path / "in" / "a.tif", 80, 72)
    for kind, tolerance in (("uint8", 4 / 254), ("float16", 4e-3)):
        writer = predict(
            trained_task, tmp_path / kind, {"probabilities": kind}, inputs=s2_input(str(source)),
            window=64, overlap=16,
        )  # fmt: skip
        assert [p.name for p in writer.written] == ["a.tif", "a_probabilities.tif"]
        with rasterio.open(writer.written[1]) as dst:
            assert dst.count == len(CATEGORIES) and dst.dtypes[0] == kind
            assert list(dst.descriptions) == CATEGORIES
            values = dst.read().astype(np.float64) * dst.scales[0]
        np.testing.assert_allclose(values.sum(0), 1.0, atol=tolerance)


def test_values_are_float32_with_nan_where_the_input_has_no_data(tmp_path, trained_task):
    source = write_raster(tmp_path / "in" / "h.tif", 70, 70)
    with rasterio.open(source, "r+") as dst:
        block = dst.read()
        block[:, :10, :20] = 0  # nodata in every band: no data at all there
        block[1, 30:40, 30:40] = 0  # nodata in one band only: the pixels keep their value
        dst.write(block)
    writer = predict(
        trained_task, tmp_path / "out", inputs=s2_input(str(source)), task="regression",
        variables=["canopy_height"], categories=None, window=64, overlap=16,
    )  # fmt: skip
    with rasterio.open(writer.written[0]) as dst:
        assert dst.dtypes[0] == "float32" and np.isnan(dst.nodata)
        assert dst.descriptions == ("canopy_height",)
        heights = dst.read(1)
    assert np.isnan(heights[:10, :20]).all()
    assert np.isfinite(heights[10:]).all() and np.isfinite(heights[:, 20:]).all()


def test_a_time_series_gives_one_map_per_date_named_by_date(tmp_path, trained_task):
    dates = ["2021-04-01", "2021-06-01", "2021-08-01"]
    for i, day in enumerate(dates[::-1]):  # written out of order: frames are sorted by date
        write_raster(tmp_path / "in" / f"field_{day}.tif", 48, 40, seed=i)
    writer = predict(
        trained_task, tmp_path / "out", inputs=s2_input(str(tmp_path / "in")),
        task="time_series_segmentation", categories=["wheat", "maize"], outputs="per_date",
        window=32, overlap=8,
    )  # fmt: skip
    with rasterio.open(writer.written[0]) as dst:
        assert writer.written[0].name == "field.tif"
        assert dst.count == 3 and list(dst.descriptions) == dates
        assert dst.tags()["OUTPUTS"] == "per_date"
        assert set(np.unique(dst.read())) <= {0, 1}


def test_a_constant_image_shows_no_seam_between_windows(tmp_path, trained_task, monkeypatch):
    source = write_raster(tmp_path / "in" / "c.tif", 160, 160, constant=True)
    captured = []
    original = SceneOutputs._write

    def keep(self, top, col, blended, seen):
        assert col == 0  # one chunk of columns at this width
        captured.append(blended[0].copy())
        return original(self, top, col, blended, seen)

    monkeypatch.setattr(SceneOutputs, "_write", keep)
    window, overlap = 64, 32
    predict(
        trained_task, tmp_path / "out", inputs=s2_input(str(source)), window=window, overlap=overlap
    )
    probabilities = np.concatenate(captured, 1)  # (K, H, W)
    jumps = np.abs(np.diff(probabilities, axis=2)).max(
        axis=(0, 1)
    )  # largest change between columns
    stride = window - overlap
    seams = [c - 1 for c in range(stride, 160, stride)]
    inside = np.delete(jumps, seams)
    # Blending leaves no step at window edges larger than the model's own variation.
    assert jumps[seams].max() <= 1.5 * np.quantile(inside, 0.99) + 1e-6


def test_complete_outputs_are_skipped_and_overwrite_redoes_them(tmp_path, trained_task):
    source = write_raster(tmp_path / "in" / "a.tif", 64, 64)
    args = {"inputs": s2_input(str(source)), "window": 64, "overlap": 0}
    target = predict(trained_task, tmp_path / "out", **args).written[0]
    before = target.stat().st_mtime_ns
    assert predict(trained_task, tmp_path / "out", **args).written == []
    assert target.stat().st_mtime_ns == before
    assert predict(trained_task, tmp_path / "out", {"overwrite": True}, **args).written == [target]
    assert target.stat().st_mtime_ns != before


def test_an_interrupted_run_leaves_no_file_and_a_rerun_completes(tmp_path, trained_task):
    source = write_raster(tmp_path / "in" / "pred.tif", 256, 256)
    target = tmp_path / "out" / "pred.tif"
    checkpoint = tmp_path / "task.ckpt"
    import torch

    torch.save(trained_task.state_dict(), checkpoint)
    script = textwrap.dedent(
        f"""
        import sys, time, torch
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from pathlib import Path
        from rasters import TRAINED_SOURCES, predict, s2_input
        from stsun_lightning.tasks.module import StsunTask
        task = StsunTask("stsun_tiny", sources=TRAINED_SOURCES)
        task.load_state_dict(torch.load({str(checkpoint)!r}))
        forward = task.model.forward
        def slow(*args, **kwargs):
            time.sleep(0.5)
            return forward(*args, **kwargs)
        task.model.forward = slow
        predict(task, Path({str(target.parent)!r}), inputs=s2_input({str(source)!r}),
                window=64, overlap=16, batch_size=1)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 90
    while not list(target.parent.glob(".pred.tif.*")) and time.time() < deadline:
        time.sleep(0.1)
    assert list(target.parent.glob(".pred.tif.*")), "the writer never started"
    time.sleep(1.0)  # some rows written
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not target.exists()
    writer = predict(
        trained_task, target.parent, inputs=s2_input(str(source)), window=64, overlap=16
    )
    assert writer.written == [target]
    with rasterio.open(target) as dst:
        assert dst.shape == (256, 256) and (dst.read(1) < 4).all()
    assert [p.name for p in target.parent.iterdir()] == ["pred.tif"]


def test_band_order_in_the_config_follows_the_files(tmp_path, trained_task):
    """The same pixels stored in another band order, described so, predict the same map."""
    source = write_raster(tmp_path / "in" / "a.tif", 48, 48)
    with rasterio.open(source) as src:
        profile, data = src.profile, src.read()
    reordered = tmp_path / "in2" / "a.tif"
    reordered.parent.mkdir()
    with rasterio.open(reordered, "w", **profile) as dst:
        dst.write(data[::-1])
    maps = []
    for path, bands in ((source, BANDS), (reordered, BANDS[::-1])):
        inputs = {"s2": {"sensor": "sentinel2_l2a", "bands": bands, "paths": str(path)}}
        writer = predict(
            trained_task,
            path.parent / "out",
            inputs=inputs,
            window=48,
            overlap=0,
            statistics="rasters",
        )
        with rasterio.open(writer.written[0]) as dst:
            maps.append(dst.read(1))
    np.testing.assert_array_equal(maps[0], maps[1])


def test_float16_probabilities_of_a_1100_by_1500_raster_are_valid_cogs_with_overviews(
    tmp_path, trained_task
):
    source = write_raster(tmp_path / "in" / "wide.tif", 1100, 1500)
    writer = predict(
        trained_task, tmp_path / "out", {"probabilities": "float16", "uncertainty": "entropy",
        "uncertainty_format": "float16"}, inputs=s2_input(str(source)), window=256, overlap=32,
    )  # fmt: skip
    names = [p.name for p in writer.written]
    assert names == ["wide.tif", "wide_probabilities.tif", "wide_uncertainty.tif"]
    for path in writer.written:
        valid, errors, _ = cog_validate(str(path), strict=True)
        assert valid and not errors, (path.name, errors)
        with rasterio.open(path) as dst:
            assert dst.shape == (1100, 1500) and dst.overviews(1) == [2, 4]
    with rasterio.open(writer.written[1]) as dst:
        assert dst.dtypes == ("float16",) * len(CATEGORIES)
        probabilities = dst.read().astype(np.float64)
        coarse = dst.read(out_shape=(len(CATEGORIES), 275, 375)).astype(np.float64)
    with rasterio.open(writer.written[2]) as dst:
        doubt = dst.read(1).astype(np.float64)
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=4e-3)
    np.testing.assert_allclose(coarse.sum(0), 1.0, atol=4e-3)  # averaged overviews too
    np.testing.assert_allclose(doubt, normalised_entropy(probabilities), atol=4e-3)


def _checkpoint(task: StsunTask, path: Path) -> Path:
    """A Lightning checkpoint of ``task``'s weights, as ``trainer.save_checkpoint`` writes."""
    checkpoint = {"state_dict": task.state_dict(), "pytorch-lightning_version": L.__version__}
    task.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


def _perturbed(task: StsunTask) -> StsunTask:
    other = copy.deepcopy(task)
    with torch.no_grad():
        other.model.category_head.log_scale.add_(0.5)
    return other


def test_a_rerun_redoes_outputs_made_with_other_settings_or_weights_and_skips_current_ones(
    tmp_path, trained_task
):
    source = write_raster(tmp_path / "in" / "a.tif", 64, 64)
    out = tmp_path / "out"
    args = {"inputs": s2_input(str(source)), "window": 64, "overlap": 0}

    def run(module=trained_task, writer_args=None, **changes):
        written = predict(module, out, {"probabilities": "uint8", **(writer_args or {})},
                          **{**args, **changes}).written  # fmt: skip
        return [p.name for p in written]

    def tags(name="a.tif"):
        with rasterio.open(out / name) as dst:
            return dst.tags()

    both = ["a.tif", "a_probabilities.tif"]
    assert run() == both
    first = tags()
    assert first["MODEL"] == model_fingerprint(trained_task)
    assert tags("a_probabilities.tif")["PROBABILITIES"] == "uint8"
    before = (out / "a.tif").stat().st_mtime_ns
    assert run() == []  # the same settings and weights: skipped, untouched
    assert (out / "a.tif").stat().st_mtime_ns == before

    assert run(categories=["building", "water"]) == both
    assert tags()["CATEGORIES"] == "0:building,1:water"
    assert run(categories=["building", "water"]) == []
    assert run(categories=["water", "building"]) == both  # the same names in another order

    other = _perturbed(trained_task)
    assert run(other, categories=["water", "building"]) == both
    assert tags()["MODEL"] == model_fingerprint(other) != first["MODEL"]

    assert run(other, {"probabilities": "float16"}, categories=["water", "building"]) == both
    assert tags("a_probabilities.tif")["PROBABILITIES"] == "float16"
    assert run(other, {"probabilities": "none"}, categories=["water", "building"]) == []
    assert run(other, outputs="aggregate", categories=["water", "building"]) == both
    assert tags()["OUTPUTS"] == "aggregate"
    assert run(other, task="regression", variables=["canopy_height"], categories=None) == ["a.tif"]
    assert tags()["TASK"] == "regression" and tags()["VARIABLES"] == "canopy_height"


def test_a_rerun_from_another_checkpoint_file_redoes_the_scene(tmp_path, trained_task):
    source = write_raster(tmp_path / "in" / "a.tif", 64, 64)
    first = _checkpoint(trained_task, tmp_path / "first.ckpt")
    second = _checkpoint(_perturbed(trained_task), tmp_path / "second.ckpt")
    module = copy.deepcopy(trained_task)  # loading a checkpoint changes the module
    args = {"inputs": s2_input(str(source)), "window": 64, "overlap": 0}
    out = tmp_path / "out"
    assert predict(module, out, ckpt_path=first, **args).written == [out / "a.tif"]
    with rasterio.open(out / "a.tif") as dst:
        recorded = dst.tags()
    assert recorded["CHECKPOINT"] == str(first)
    assert recorded["MODEL"] == model_fingerprint(trained_task)
    assert predict(module, out, ckpt_path=first, **args).written == []
    assert predict(module, out, ckpt_path=second, **args).written == [out / "a.tif"]
    with rasterio.open(out / "a.tif") as dst:
        assert dst.tags()["CHECKPOINT"] == str(second)
        assert dst.tags()["MODEL"] != recorded["MODEL"]
    # The same weights from another file make the same maps: nothing to redo.
    copied = tmp_path / "copy_of_second.ckpt"
    copied.write_bytes(second.read_bytes())
    assert predict(module, out, ckpt_path=copied, **args).written == []


def test_uncertainty_is_computed_from_the_blended_probabilities(tmp_path):
    """Two windows certain of different classes: the overlap is uncertain, their centres not."""
    source = write_raster(tmp_path / "in" / "u.tif", 64, 96)
    job = RasterPredictionDataModule(
        inputs=s2_input(str(source)), categories=["water", "cropland"],
        statistics={"s2": {"mean": [0.0] * 4, "std": [1.0] * 4}},
    ).prediction_jobs()[0]  # fmt: skip
    window, overlap = 64, 32
    results = {}
    for kind in ("entropy", "margin"):
        settings = OutputSettings(uncertainty=kind, uncertainty_format="float16", model="m")
        outputs = SceneOutputs(job, tmp_path / kind, window, overlap, settings)
        for col, label in ((0, 0), (32, 1)):  # left window says water, right cropland
            certain = np.zeros((1, 2, window, window), np.float32)
            certain[0, label] = 1.0
            done = outputs.add(col, certain, np.ones((window, window), bool))
        assert done
        with rasterio.open(tmp_path / kind / "u_uncertainty.tif") as dst:
            results[kind] = dst.read(1).astype(np.float64)[0]  # one row: (96,)
            tags, descriptions = dst.tags(), dst.descriptions
        assert tags["UNCERTAINTY"] == kind and tags["UNCERTAINTY_FORMAT"] == "float16"
        assert "log K" in tags["UNCERTAINTY_MEANING"] or "p1 - p2" in tags["UNCERTAINTY_MEANING"]
        assert tags["CATEGORIES"] == "water,cropland" and descriptions == ("state",)
    # What blending gives: p(cropland) = right weight / (left + right weight) per column.
    ramp = blend_weights(window, overlap)[window // 2]
    left, right = np.zeros(96), np.zeros(96)
    left[:64], right[32:] = ramp, ramp
    p = right / (left + right)
    entropy = -(p * np.log(np.maximum(p, 1e-30)) + (1 - p) * np.log(np.maximum(1 - p, 1e-30)))
    np.testing.assert_allclose(results["entropy"], entropy / np.log(2), atol=2e-3)
    np.testing.assert_allclose(results["margin"], 1 - np.abs(1 - 2 * p), atol=2e-3)
    assert results["entropy"][:16].max() < 1e-3 and results["entropy"][80:].max() < 1e-3
    assert results["entropy"][47:49].min() > 0.99  # the middle of the overlap: a tie


@pytest.mark.parametrize(
    ("probabilities", "entropy", "margin_value"),
    [
        ([1.0, 0.0, 0.0], 0.0, 0.0),
        ([0.5, 0.5, 0.0], np.log(2) / np.log(3), 1.0),
        ([1 / 3, 1 / 3, 1 / 3], 1.0, 1.0),
        ([0.7, 0.2, 0.1], -(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1)) / np.log(3), 0.5),
    ],
)  # fmt: skip
def test_entropy_and_margin_of_known_probability_vectors(probabilities, entropy, margin_value):
    p = np.array(probabilities, np.float32)[:, None, None]  # (K, 1, 1)
    np.testing.assert_allclose(normalised_entropy(p)[0, 0], entropy, atol=1e-6)
    np.testing.assert_allclose(margin(p)[0, 0], margin_value, atol=1e-6)


def test_a_uint16_class_map_of_300_categories_has_a_colour_table_by_name(tmp_path):
    names = ["water", "tree_cover", *(f"crop_{i}" for i in range(298))]
    torch.manual_seed(0)
    task = StsunTask(
        "stsun_tiny", sources={"many": {"task": "semantic_segmentation", "categories": names}}
    ).eval()
    source = write_raster(tmp_path / "in" / "m.tif", 40, 48)
    writer = predict(
        task, tmp_path / "out", inputs=s2_input(str(source)), categories=names, window=48, overlap=8
    )
    with rasterio.open(writer.written[0]) as dst:
        assert dst.dtypes == ("uint16",) and dst.nodata == 65535
        assert (dst.read(1) < 300).all()
        colours = dst.colormap(1)
    expected = colour_table(names, nodata=65535)
    assert colours[0] == NAMED_COLOURS["water"] + (255,) and colours[1] == expected[1]
    assert len({colours[i] for i in range(300)}) == 300 and colours[65535][3] == 0
