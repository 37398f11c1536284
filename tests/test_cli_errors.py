"""A person's mistake ends ``stsun``'s output as one message, with no traceback.

Each mistake runs the installed ``stsun`` in a subprocess (stdout and stderr through one
pipe, as a terminal shows them) on real GeoTIFFs and a real checkpoint, and asserts on
the last line of what it printed. The mistakes are found at every stage: parsing the
config, building the datamodule, and running (setup, the first batch, a DataLoader
worker's read, the model's first forward).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, Dataset

import stsun_lightning
from stsun_lightning.cli import build_cli, main
from stsun_lightning.cli_errors import person_message
from stsun_lightning.data.datamodules.geotiff import GeoTiffDataModule
from stsun_lightning.data.sensors import get_sensor
from stsun_lightning.errors import (
    ConfigError,
    InputFileError,
    MissingFileError,
    UnknownNameError,
    closest_name,
)
from stsun_lightning.tasks.module import StsunTask

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "data"))

from geotiffs import write_world  # noqa: E402

CLASSES = {1: "water", 2: "tree_cover", 3: "built_up"}
BANDS = ["B02", "B03", "B04", "B08"]
STATISTICS = {"s2": {"mean": [1000.0] * 4, "std": [500.0] * 4}}
_CONSOLE_SCRIPT = Path(sys.executable).with_name("stsun")
STSUN = (
    [str(_CONSOLE_SCRIPT)]
    if _CONSOLE_SCRIPT.exists()
    else [sys.executable, "-m", "stsun_lightning.cli"]
)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return write_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of stsun_tiny trained on land cover (untrained weights suffice)."""
    torch.manual_seed(0)
    sources = {"landcover": {"task": "semantic_segmentation", "categories": list(CLASSES.values())}}
    task = StsunTask("stsun_tiny", sources=sources)
    state = {
        "state_dict": task.state_dict(),
        "hyper_parameters": dict(task.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    task.on_save_checkpoint(state)
    path = tmp_path_factory.mktemp("checkpoint") / "task.ckpt"
    torch.save(state, path)
    return path


def s2(paths: Path | str, bands: list[str] = BANDS, sensor: str = "sentinel2_l2a") -> dict:
    return {"s2": {"sensor": sensor, "paths": str(paths), "bands": bands}}


def fit_config(world: dict[str, Path], tmp_path: Path, **init_args: Any) -> Path:
    """``configs/geotiff.yaml`` pointed at the fixture's files, for one fast step."""
    config = yaml.safe_load((ROOT / "configs" / "geotiff.yaml").read_text())
    args = config["data"]["init_args"]
    args["inputs"] = s2(world["s2"])
    args["labels"].update(paths=str(world["labels"]), classes=CLASSES)
    args.update(
        patch_size=16,
        batch_size=2,
        split={"by": "spatial_blocks", "val": 0.2, "test": 0.2, "block_size": 32},
        statistics_cache=str(tmp_path / "cache"),
        num_workers=0,
    )
    args.update(init_args)
    config["model"]["model"] = "stsun_tiny"
    config["trainer"].pop("callbacks")
    config["trainer"].update(
        accelerator="cpu", default_root_dir=str(tmp_path / "run"), fast_dev_run=1,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def predict_config(
    world: dict[str, Path], tmp_path: Path, ckpt_path: Path | str, **init_args: Any
) -> Path:
    """``configs/predict.yaml`` on one Sentinel-2 file of the fixture, with a checkpoint."""
    config = yaml.safe_load((ROOT / "configs" / "predict.yaml").read_text())
    args = config["data"]["init_args"]
    args.update(
        inputs=s2(world["s2"] / "s2_20200301.tif"),
        categories=["water", "tree_cover"],
        window=32,
        overlap=0,
        statistics=STATISTICS,
    )
    args.update(init_args)
    config["trainer"].update(accelerator="cpu", enable_progress_bar=False)
    config["trainer"]["callbacks"][0]["init_args"]["output_dir"] = str(tmp_path / "predictions")
    config["ckpt_path"] = str(ckpt_path)
    path = tmp_path / "predict.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_stsun(*args: str, cwd: Path) -> tuple[int, str]:
    """Run ``stsun`` on this checkout's code; its exit status and all it printed."""
    src = str(Path(stsun_lightning.__file__).resolve().parents[1])
    paths = [src, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run(
        [*STSUN, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=600,
    )  # fmt: skip
    return done.returncode, done.stdout


def assert_ends_with_one_message(returncode: int, output: str, expected: str) -> None:
    """Status 2, no traceback, and ``error: <expected>`` the last line and the only one."""
    lines = output.rstrip().splitlines()
    assert returncode == 2, output
    assert "Traceback" not in output and "Union subtypes" not in output, output
    assert re.fullmatch(f"error: {expected}", lines[-1]), lines[-1]
    assert [line for line in lines if re.search(expected, line)] == [lines[-1]], output


def truncated_copy(folder: Path, name: str, tmp_path: Path) -> Path:
    """A copy of ``folder`` whose file ``name`` lost the second half of its bytes."""
    copy = shutil.copytree(folder, tmp_path / f"{folder.name}_truncated")
    data = (copy / name).read_bytes()
    (copy / name).write_bytes(data[: len(data) // 2])
    return copy


# The three stages of a run: parsing, building the datamodule, running the model.


@pytest.mark.slow
def test_an_unknown_key_in_the_config_names_it_and_the_closest_key(world, tmp_path):
    config = fit_config(world, tmp_path, patch_sise=16)
    assert_ends_with_one_message(
        *run_stsun("fit", "--config", str(config), cwd=tmp_path),
        r"data: stsun_lightning\.data\.GeoTiffDataModule does not accept option 'patch_sise'\. "
        r"Did you mean 'patch_size'\? \('stsun fit --help' lists the accepted options\.\)",
    )


def test_an_unknown_sensor_names_the_input_and_the_closest_sensor(world, tmp_path):
    config = fit_config(world, tmp_path, inputs=s2(world["s2"], sensor="sentinel2_l2"))
    assert_ends_with_one_message(
        *run_stsun("fit", "--config", str(config), cwd=tmp_path),
        r"Unknown sensor 'sentinel2_l2' \(in input 's2'\)\. Did you mean 'sentinel2_l2a'\? "
        r"Known: copernicus_dem, .*, sentinel2_l2a\.",
    )


@pytest.mark.slow
def test_an_unknown_category_at_predict_names_the_closest_the_checkpoint_knows(
    world, tmp_path, checkpoint
):
    config = predict_config(world, tmp_path, checkpoint, categories=["water", "tree_cove"])
    assert_ends_with_one_message(
        *run_stsun("predict", "--config", str(config), cwd=tmp_path),
        r"Unknown category 'tree_cove' \(in the datamodule's categories; the network, e\.g\. "
        r"from its checkpoint, never learnt it\)\. Did you mean 'tree_cover'\? "
        r"Known: built_up, tree_cover, water\.",
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mistake", "expected"),
    [
        (
            "band",
            r"Unknown band of sensor 'sentinel2_l2a' 'B8' \(in input 's2'\)\. "
            r"Did you mean 'B08'\? Known: B01, .*",
        ),
        ("missing", r"Input 's2': '.*nowhere' matches no raster \(expected a file, .*\)\."),
        (
            "band_count",
            r"Input 's2': .*s2_\w+\.tif has 4 band\(s\), expected 2 \(B02, B03\): list the "
            r"bands stored in each file, .*",
        ),
        (
            "truncated_at_setup",
            r"Input 's2': cannot read .*s2_20200301\.tif as a raster \(corrupt or truncated\?\): "
            r".*expected \d+",
        ),
        (
            "truncated_in_a_worker",
            r"Input 's2': cannot read .*s2_20200301\.tif as a raster \(corrupt or truncated\?\): "
            r".*expected \d+",
        ),
    ],
    ids=lambda value: value if re.fullmatch(r"\w+", str(value)) else "",
)
def test_fit_mistakes_end_the_output_with_one_message(world, tmp_path, mistake, expected):
    options: dict[str, Any] = {
        "band": {"inputs": s2(world["s2"], bands=["B8", "B03", "B04", "B08"])},
        "missing": {"inputs": s2(tmp_path / "nowhere")},
        "band_count": {"inputs": s2(world["s2"], bands=["B02", "B03"])},
    }.get(mistake, {})
    if mistake.startswith("truncated"):
        options["inputs"] = s2(truncated_copy(world["s2"], "s2_20200301.tif", tmp_path))
    if mistake == "truncated_in_a_worker":  # statistics given: the first read is a worker's
        options.update(statistics=STATISTICS, num_workers=1)
    config = fit_config(world, tmp_path, **options)
    assert_ends_with_one_message(*run_stsun("fit", "--config", str(config), cwd=tmp_path), expected)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mistake", "expected"),
    [
        (
            "task",
            r"Unknown task 'semantic_segmentaton' \(in the datamodule's task; .*\)\. "
            r"Did you mean 'semantic_segmentation'\? Known: .*",
        ),
        (
            "band",
            r"Unknown band of sensor 'sentinel2_l2a' 'B8' \(in input 's2'\)\. "
            r"Did you mean 'B08'\? Known: B01, .*",
        ),
        ("missing", r"Input 's2': '.*nowhere\.tif' matches no raster \(expected a file, .*\)\."),
        (
            "corrupt",
            r"Input 's2': cannot open .*garbage_20200301\.tif as a raster \(corrupt or "
            r"truncated\?\): .*",
        ),
        (
            "truncated",
            r"Input 's2': cannot read .*s2_20200301\.tif as a raster \(corrupt or truncated\?\): "
            r".*expected \d+",
        ),
        (
            "band_count",
            r"Input 's2': .*s2_20200301\.tif has 4 band\(s\), expected 3 \(B02, B03, B04\): "
            r"list the bands stored in each file, in order, under 'bands', or set "
            r"separate_files: true for one file per band\.",
        ),
        (
            "missing_checkpoint",
            r"ckpt_path: no checkpoint file at .*tsak\.ckpt\. Did you mean 'task\.ckpt'\?",
        ),
        (
            "corrupt_checkpoint",
            r"ckpt_path: .*garbage\.ckpt is not a checkpoint \(corrupt or truncated\?\): "
            r"expected the zip archive that torch\.save writes\.",
        ),
    ],
    ids=lambda value: value if re.fullmatch(r"\w+", str(value)) else "",
)
def test_predict_mistakes_end_the_output_with_one_message(
    world, tmp_path, checkpoint, mistake, expected
):
    ckpt_path: Path = checkpoint
    options: dict[str, Any] = {
        "task": {"task": "semantic_segmentaton"},
        "band": {"inputs": s2(world["s2"] / "s2_20200301.tif", bands=["B8", "B03", "B04", "B08"])},
        "missing": {"inputs": s2(tmp_path / "nowhere.tif")},
        "band_count": {"inputs": s2(world["s2"] / "s2_20200301.tif", bands=["B02", "B03", "B04"])},
    }.get(mistake, {})
    if mistake == "corrupt":
        garbage = tmp_path / "garbage_20200301.tif"
        garbage.write_bytes(b"II*\x00" + bytes(range(256)) * 4)  # a TIFF header, then noise
        options["inputs"] = s2(garbage)
    if mistake == "truncated":  # statistics given: the first read is the first window's
        folder = truncated_copy(world["s2"], "s2_20200301.tif", tmp_path)
        options["inputs"] = s2(folder / "s2_20200301.tif")
    if mistake == "missing_checkpoint":
        ckpt_path = checkpoint.with_name("tsak.ckpt")
    if mistake == "corrupt_checkpoint":
        ckpt_path = tmp_path / "garbage.ckpt"
        ckpt_path.write_bytes(checkpoint.read_bytes()[:1000])  # a zip cut short
    config = predict_config(world, tmp_path, ckpt_path, **options)
    assert_ends_with_one_message(
        *run_stsun("predict", "--config", str(config), cwd=tmp_path), expected
    )


# In-process: what build_cli raises, jsonargparse's other errors, workers, and bugs.


def test_build_cli_raises_the_mistake_itself_not_jsonargparse_wrapping(world, tmp_path):
    config = fit_config(world, tmp_path, inputs=s2(world["s2"], sensor="sentinel2_l2"))
    with pytest.raises(UnknownNameError, match=r"Did you mean 'sentinel2_l2a'"):
        build_cli(["--config", str(config)], run=False)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"data.init_args.patch_size": "sixteen"},
            r"data\.patch_size: Expected int\. Got value: sixteen \('stsun fit --help' .*",
        ),
        (
            {"model.loss_balance": "mean"},
            r"model\.loss_balance: Expected one of 'initial_mean', 'none'\. Got value: mean .*",
        ),
        (
            {"model.lerning_rate": 0.1},
            r"Subcommand 'fit' does not accept option 'model\.lerning_rate'\. "
            r"Did you mean 'model\.learning_rate'\? .*",
        ),
        (
            {"model.coarsen": 0.5},
            r"Subcommand 'fit' does not accept option 'model\.coarsen'\. "
            r"It moved to 'data\.coarsen' \(the datamodule's option\)\. .*",
        ),
        (
            {"data.class_path": "stsun_lightning.data.GeoTifDataModule"},
            r"data: class_path 'stsun_lightning\.data\.GeoTifDataModule' names no class .*"
            r"Did you mean 'stsun_lightning\.data\.GeoTiffDataModule'\? .*",
        ),
    ],
    ids=["wrong-type", "not-a-choice", "unknown-model-key", "moved-key", "unknown-class"],
)
def test_parse_errors_name_the_key_in_one_line(world, tmp_path, capsys, change, expected):
    config = yaml.safe_load(fit_config(world, tmp_path).read_text())
    for dotted, value in change.items():
        *parents, key = dotted.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[key] = value
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "usage:" not in err and "Traceback" not in err, err  # no 60 lines of usage
    assert re.fullmatch(f"error: {expected}", err.rstrip().splitlines()[-1]), err


def test_a_broken_yaml_config_names_the_file_and_line(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(path)])
    last = capsys.readouterr().err.rstrip().splitlines()[-1]
    assert re.fullmatch(rf"error: Problems parsing config: .* in {path}, line 1, column 7 .*", last)


class _UnreadableFile(Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> None:
        raise InputFileError("Input 's2': cannot read x.tif as a raster (corrupt or truncated?)")


def test_a_dataloader_worker_mistake_keeps_its_own_message():
    with pytest.raises(InputFileError) as caught:
        next(iter(DataLoader(_UnreadableFile(), num_workers=1)))
    assert "Traceback" in str(caught.value)  # how torch re-raises it in the main process
    assert person_message(caught.value) == (
        "Input 's2': cannot read x.tif as a raster (corrupt or truncated?)"
    )


def test_the_closest_name_ignores_case_and_zero_padding_first():
    bands = get_sensor("sentinel2_l2a").band_names
    assert [closest_name(n, bands) for n in ("B8", "b2", "B13", "B8a", "XYZ")] == [
        "B08",
        "B02",
        "B12",
        "B8A",
        None,
    ]


def test_the_error_classes_are_the_builtins_callers_catch():
    missing = MissingFileError("no file")
    assert isinstance(missing, FileNotFoundError) and isinstance(missing, ConfigError)
    assert isinstance(missing, ValueError) and isinstance(InputFileError("x"), OSError)
    assert isinstance(UnknownNameError("x"), KeyError) and str(UnknownNameError("a b")) == "a b"


@pytest.mark.parametrize("during_a_mistake", [False, True])
def test_a_bug_keeps_its_traceback(world, tmp_path, monkeypatch, during_a_mistake):
    def broken_setup(self: GeoTiffDataModule, stage: str | None = None) -> None:
        if not during_a_mistake:
            raise RuntimeError("a bug")
        try:
            raise ConfigError("a mistake")
        except ConfigError:
            raise RuntimeError("a bug while reporting it")  # noqa: B904 (chained by context)

    monkeypatch.setattr(GeoTiffDataModule, "setup", broken_setup)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["fit", "--config", str(fit_config(world, tmp_path))])
