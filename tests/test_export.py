"""``stsun export``: ONNX parity with PyTorch, errors, metadata and ``stsun predict`` through it."""

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import rasterio
import torch
from rio_cogeo.cogeo import cog_validate

from predict.rasters import BANDS, CATEGORIES, predict, s2_input, write_raster
from stsun_lightning.cli import build_cli, main
from stsun_lightning.data.datasets.frames import FrameRule
from stsun_lightning.data.io.statistics import InputStatistics
from stsun_lightning.data.record import InputRecord, SourceRecord, record_to_dict
from stsun_lightning.errors import ConfigError
from stsun_lightning.export import OnnxModel, export_model, read_metadata, served_from_checkpoint
from stsun_lightning.predict import model_fingerprint
from stsun_lightning.tasks.module import StsunTask

SOURCES = {"landcover": {"task": "semantic_segmentation", "categories": CATEGORIES}}
MEAN, STD = [900.0, 1000.0, 1100.0, 2500.0], [400.0, 450.0, 500.0, 900.0]


def write_checkpoint(path: Path, **model_overrides) -> Path:
    """A stsun_tiny checkpoint with the data record of a Sentinel-2 input (untrained weights)."""
    torch.manual_seed(0)
    task = StsunTask("stsun_tiny", sources=SOURCES, model_overrides=model_overrides or None)
    with torch.no_grad():  # sharper logits than at initialisation: more classes win somewhere
        task.model.category_head.log_scale.add_(2.0)
        if task.model.conv_stem is not None:  # its token projection starts at zero
            torch.nn.init.normal_(task.model.conv_stem.to_tokens.weight, std=0.3)
        if task.model.basis_kernels:  # so do the basis kernels
            torch.nn.init.normal_(task.model.tokenizer.basis_kernel.weight, std=0.1)
            torch.nn.init.normal_(task.model.decoder.basis_mix.weight, std=0.3)
    state = {
        "state_dict": task.state_dict(),
        "hyper_parameters": dict(task.hparams),
        "pytorch-lightning_version": L.__version__,
    }
    task.on_save_checkpoint(state)
    inputs = {
        "s2": InputRecord("sentinel2_l2a", InputStatistics(tuple(BANDS), tuple(MEAN), tuple(STD)))
    }
    state["stsun_data"] = record_to_dict({"landcover": SourceRecord(inputs, FrameRule(3))})
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("checkpoint") / "task.ckpt")


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    export_model(str(checkpoint), str(path))
    return path


def physical_windows(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(2, 1, 4, H, W) Sentinel-2-like reflectances; the second item has no data top-left."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.tensor(MEAN)[:, None, None] + torch.tensor(STD)[:, None, None] * torch.randn(
        2, 1, 4, height, width, generator=generator
    )
    image[1, :, :, : height // 3, : width // 4] = torch.nan
    return image


@pytest.mark.slow
@pytest.mark.parametrize("size", [(192, 256), (100, 130)])
def test_onnx_gives_the_pytorch_outputs(checkpoint, exported, size):
    served, _ = served_from_checkpoint(checkpoint)
    image = physical_windows(*size)
    dates, gsd = torch.tensor([[19_000.0], [19_100.0]]), torch.tensor([10.0, 10.0])
    with torch.no_grad():
        expected = served.eval()(image, dates, gsd)
    got = OnnxModel(exported)(image, dates, gsd)
    assert got.shape == expected.shape == (2, 1, len(CATEGORIES), *size)
    # (100, 130) is padded to the graph's 192 x 192 with no data: exact by the padding rules.
    assert (got - expected).abs().max() <= 1e-4
    assert torch.isfinite(got).all()


@pytest.mark.slow
@pytest.mark.parametrize(
    "options", [{"conv_stem": 8}, {"conv_stem": 8, "basis_kernels": True}], ids=["conv", "basis"]
)
def test_a_network_with_its_options_exports_with_exact_padding(tmp_path, options):
    checkpoint = write_checkpoint(tmp_path / "task.ckpt", **options)
    export_model(str(checkpoint), str(tmp_path / "model.onnx"))
    served, _ = served_from_checkpoint(checkpoint)
    image = physical_windows(100, 130)  # padded to the graph's 192 x 192 with no data
    dates, gsd = torch.tensor([[19_000.0], [19_100.0]]), torch.tensor([10.0, 10.0])
    with torch.no_grad():
        expected = served.eval()(image, dates, gsd)
    got = OnnxModel(tmp_path / "model.onnx")(image, dates, gsd)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-4


@pytest.mark.slow
def test_batches_of_any_size_run_in_chunks_of_the_graph(checkpoint, exported):
    served, _ = served_from_checkpoint(checkpoint)
    image = torch.cat([physical_windows(64, 64), physical_windows(64, 64, seed=1)[:1]])
    dates, gsd = torch.full((3, 1), 19_000.0), torch.full((3,), 10.0)
    with torch.no_grad():
        expected = served.eval()(image, dates, gsd)
    assert (OnnxModel(exported)(image, dates, gsd) - expected).abs().max() <= 1e-4


def test_export_of_unknown_categories_fails_and_writes_nothing(checkpoint, tmp_path):
    target = tmp_path / "model.onnx"
    with pytest.raises(ConfigError) as caught:
        export_model(str(checkpoint), str(target), categories=["water", "glacier", "lava"])
    message = str(caught.value)
    assert "'glacier', 'lava'" in message and "does not know them" in message
    assert all(f"'{name}'" in message for name in CATEGORIES)  # what it knows
    assert list(tmp_path.iterdir()) == []


def test_export_of_an_unknown_task_or_band_names_it(checkpoint, tmp_path):
    with pytest.raises(ConfigError, match=r"task 'flood_mapping'.*It knows task"):
        export_model(str(checkpoint), str(tmp_path / "a.onnx"), task="flood_mapping")
    with pytest.raises(ConfigError, match="B8A"):
        export_model(str(checkpoint), str(tmp_path / "b.onnx"), bands={"s2": ["B04", "B8A"]})
    assert list(tmp_path.iterdir()) == []


def test_stsun_export_prints_the_error_as_one_line(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["export", f"--ckpt_path={checkpoint}", f"--output={tmp_path / 'm.onnx'}",
              "--categories=[water,glacier]"])  # fmt: skip
    assert caught.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: Cannot export categories 'glacier'")


@pytest.mark.slow
def test_metadata_round_trips(checkpoint, exported):
    meta = read_metadata(exported)
    assert meta["task"] == "semantic_segmentation" and meta["categories"] == CATEGORIES
    assert meta["inputs"] == [{"name": "s2", "sensor": "sentinel2_l2a", "bands": BANDS}]
    assert [b["name"] for b in meta["bands"]] == BANDS
    assert meta["bands"][2]["wavelength_nm"] == pytest.approx(665, abs=2)
    assert meta["statistics"] == {"s2": {"bands": BANDS, "mean": MEAN, "std": STD}}
    assert meta["frames"] == {"tolerance_days": 3} and meta["outputs"] == "state"
    assert (meta["patch_size"], meta["size_multiple"], meta["min_size"]) == (8, 64, 192)
    task = StsunTask.load_from_checkpoint(str(checkpoint), map_location="cpu")
    assert meta["model"] == model_fingerprint(task)


@pytest.mark.slow
def test_predict_through_the_export_writes_the_checkpoints_cog(checkpoint, exported, tmp_path):
    raster = write_raster(tmp_path / "in" / "scene.tif", 150, 170, seed=3)
    with rasterio.open(raster, "r+") as dst:  # a corner without data
        dst.write(np.zeros((4, 30, 40), np.uint16), window=((0, 30), (0, 40)))
    args = dict(inputs=s2_input(str(raster)), window=64, overlap=16, statistics="checkpoint")
    writer = {"probabilities": "uint8"}
    torch.manual_seed(1)  # other initial weights: the checkpoint's must replace them
    from_checkpoint = predict(
        StsunTask("stsun_tiny", sources=SOURCES), tmp_path / "ckpt", writer, checkpoint, **args
    ).written
    from_onnx = predict(
        StsunTask("stsun_tiny", sources=SOURCES, onnx=str(exported)), tmp_path / "onnx", writer,
        **args,
    ).written  # fmt: skip
    assert [p.name for p in from_onnx] == [p.name for p in from_checkpoint]
    (map_a, probabilities_a), (map_b, probabilities_b) = (
        [_read(p) for p in paths] for paths in (from_checkpoint, from_onnx)
    )
    classes = np.unique(map_a[map_a != 255])
    assert len(classes) >= 2  # a map that could disagree
    np.testing.assert_array_equal(map_b, map_a)
    assert np.abs(probabilities_b.astype(int) - probabilities_a.astype(int)).max() <= 1
    with rasterio.open(from_onnx[0]) as a, rasterio.open(from_checkpoint[0]) as b:
        assert a.tags()["MODEL"] == b.tags()["MODEL"]
        assert a.tags()["CATEGORIES"] == b.tags()["CATEGORIES"]


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as dst:
        return dst.read()


@pytest.mark.slow
def test_stsun_predict_takes_the_exported_file(exported, tmp_path):
    raster = write_raster(tmp_path / "in" / "tile.tif", 80, 90, seed=4)
    out = tmp_path / "predictions"
    build_cli(
        [
            "predict", "--trainer.accelerator=cpu", "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
            "--trainer.callbacks=stsun_lightning.predict.GeoTiffPredictionWriter",
            f"--trainer.callbacks.output_dir={out}",
            "--data=stsun_lightning.data.RasterPredictionDataModule",
            f"--data.inputs={json.dumps(s2_input(str(raster)))}",
            f"--data.categories={json.dumps(CATEGORIES)}", "--data.window=64",
            "--data.overlap=16", f"--model.onnx={exported}",
        ]
    )  # fmt: skip
    assert cog_validate(str(out / "tile.tif"))[0]
    with rasterio.open(out / "tile.tif") as dst:
        assert dst.tags()["MODEL"] == read_metadata(exported)["model"]
        assert dst.shape == (80, 90)


@pytest.mark.slow
def test_a_checkpoint_and_an_exported_file_together_are_refused(checkpoint, exported):
    task = StsunTask("stsun_tiny", sources=SOURCES, onnx=str(exported))
    with pytest.raises(ConfigError, match=r"give ckpt_path or model\.onnx, not both"):
        task.on_load_checkpoint(torch.load(checkpoint, weights_only=True))
