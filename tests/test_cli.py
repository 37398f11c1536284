"""The ``stsun`` CLI driven in-process through fit, validate, test and predict."""

import pytest
import torch
import yaml

from stsun_lightning.cli import build_cli, main
from stsun_lightning.data.datamodules.world import SpectralWorldDataModule
from stsun_lightning.data.datasets.world.world import SOURCES


@pytest.fixture(scope="module")
def world_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    SpectralWorldDataModule(root=str(root), scene_size=64, scenes_per_source=2)  # generate once
    return root


def _data_args(root, *sources):
    args = [
        "--data=stsun_lightning.data.datamodules.world.SpectralWorldDataModule",
        f"--data.root={root}",
        "--data.scene_size=64",
        "--data.scenes_per_source=2",
        "--data.patch_size=32",
        "--data.batch_size=2",
        "--data.train_batches_per_epoch=4",
        "--data.samples_per_scene=8",
    ]
    if sources:
        args.append(f"--data.source_names=[{','.join(sources)}]")
    return args


def _trainer_args(tmp_path):
    return [
        "--trainer.accelerator=cpu",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_fit_runs_for_every_task_kind(world_root, tmp_path, source):
    cli = build_cli(
        [
            "fit",
            *_data_args(world_root, source),
            *_trainer_args(tmp_path),
            "--trainer.fast_dev_run=1",
        ]
    )
    assert cli.model.sources.keys() == {source}
    assert cli.trainer.state.finished
    logged = cli.trainer.callback_metrics
    assert torch.isfinite(logged["train/loss"])
    assert any(k.startswith(f"val/{source}/") for k in logged)


def test_fit_trains_on_coarse_crops_the_datamodule_draws(world_root, tmp_path):
    args = [
        *_data_args(world_root, "s2_clouds"),
        "--data.coarsen=1.0",
        "--data.coarsen_factors=[2]",
    ]
    cli = build_cli(["fit", *args, *_trainer_args(tmp_path), "--trainer.fast_dev_run=1"])
    assert cli.trainer.state.finished and torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    (train,) = cli.datamodule.datasets("train")
    (val,) = cli.datamodule.datasets("val")
    gsd = float(val[0].gsd_m[0])
    item = train[0]
    assert item.image.shape[-1] == 32 and float(item.gsd_m[0]) == 2 * gsd


@pytest.mark.slow
@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_other_subcommands_run(world_root, tmp_path, subcommand):
    cli = build_cli(
        [
            subcommand,
            *_data_args(world_root, "s2_clouds", "canopy_height"),
            *_trainer_args(tmp_path),
            "--trainer.fast_dev_run=1",
        ]
    )
    assert cli.trainer.state.finished


@pytest.mark.slow
def test_sources_flow_from_the_datamodule_into_the_model(world_root, tmp_path):
    cli = build_cli([*_data_args(world_root), *_trainer_args(tmp_path)], run=False)
    model = cli.model.model
    assert set(cli.model.sources) == set(SOURCES)
    assert {"wheat", "tree_cover", "building", "cloud", "change"} <= set(model.categories)
    assert model.variables == ["canopy_height"]
    assert len(model.categories) == len(set(model.categories))  # shared names share a row


@pytest.mark.slow
def test_a_reloaded_checkpoint_gives_the_same_validation_metrics(world_root, tmp_path):
    args = [
        *_data_args(world_root, "landsat8_landcover", "canopy_height"),
        *_trainer_args(tmp_path),
    ]
    cli = build_cli(["fit", *args, "--trainer.max_steps=3"])
    checkpoint = next(tmp_path.rglob("*.ckpt"))
    first = build_cli(["validate", *args, f"--ckpt_path={checkpoint}"])
    again = build_cli(["validate", *args, f"--ckpt_path={checkpoint}"])
    metrics = {
        k: float(v) for k, v in first.trainer.callback_metrics.items() if k.startswith("val/")
    }
    assert "val/landsat8_landcover/miou" in metrics and "val/canopy_height/mae" in metrics
    for name, value in metrics.items():
        assert float(again.trainer.callback_metrics[name]) == pytest.approx(value, abs=1e-6)
    assert first.model.model.categories == cli.model.model.categories
    state = torch.load(checkpoint, weights_only=False)["state_dict"]
    torch.testing.assert_close(
        state["model.category_embedding.weight"], first.model.model.category_embedding.weight
    )


@pytest.mark.slow
def test_a_printed_config_runs_as_given(world_root, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                *_data_args(world_root, "s2_change"),
                *_trainer_args(tmp_path),
                "--trainer.fast_dev_run=1",
                "--print_config",
            ]
        )
    printed = capsys.readouterr().out
    config = yaml.safe_load(printed)
    assert (
        config["model"]["model"] == "stsun_tiny" and config["trainer"]["gradient_clip_val"] == 1.0
    )
    path = tmp_path / "printed.yaml"
    path.write_text(printed)
    cli = build_cli(["fit", f"--config={path}"])
    assert cli.trainer.state.finished


@pytest.mark.slow
def test_the_config_is_saved_with_every_run(world_root, tmp_path):
    build_cli(
        [
            "fit",
            *_data_args(world_root, "s2_clouds"),
            *_trainer_args(tmp_path),
            "--trainer.max_steps=1",
            "--trainer.limit_val_batches=1",
        ]
    )
    saved = list(tmp_path.rglob("config.yaml"))
    assert saved and yaml.safe_load(saved[0].read_text())["data"]["init_args"]["source_names"] == [
        "s2_clouds"
    ]


@pytest.mark.slow
def test_predict_writes_cogs_of_rasters_with_a_checkpoint_trained_on_other_sources(
    world_root, tmp_path
):
    import rasterio

    build_cli(
        [
            "fit",
            *_data_args(world_root, "landsat8_landcover", "canopy_height"),
            *_trainer_args(tmp_path),
            "--trainer.max_steps=2",
            "--trainer.limit_val_batches=1",
        ]
    )
    checkpoint = next(tmp_path.rglob("last.ckpt"), None) or next(tmp_path.rglob("*.ckpt"))
    scene = world_root / "landsat8_landcover" / "scene_001"
    out = tmp_path / "predictions"
    cli = build_cli(
        [
            "predict",
            "--config=configs/predict.yaml",
            "--data.inputs={landsat8: {sensor: landsat8_oli_tirs, "
            f"bands: [B1, B2, B3, B4, B5, B6, B7, B10], scale: 0.0001, paths: '{scene}/landsat8_*.tif'}}}}",
            "--data.categories=[grassland,water]",
            "--data.window=32",
            "--data.overlap=8",
            "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
            f"--trainer.callbacks.output_dir={out}",
            f"--trainer.default_root_dir={tmp_path}",
            f"--ckpt_path={checkpoint}",
        ]
    )
    assert cli.model.hparams.model == "stsun_tiny"
    written = sorted(p.name for p in out.iterdir())
    assert written == ["landsat8.tif", "landsat8_probabilities.tif"]  # <scene>_<date>.tif
    label = scene / "label.tif"
    with rasterio.open(out / "landsat8.tif") as dst, rasterio.open(label) as ref:
        assert (dst.crs, dst.transform, dst.shape) == (ref.crs, ref.transform, ref.shape)
        assert dst.tags()["CATEGORIES"] == "0:grassland,1:water"
        assert set(dst.read(1).ravel()) <= {0, 1}


@pytest.mark.slow
def test_the_trainer_writes_checkpoints_atomically_unless_told_otherwise(world_root, tmp_path):
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from stsun_lightning.tasks.checkpoint_io import AtomicCheckpointIO

    args = [*_data_args(world_root, "s2_clouds"), *_trainer_args(tmp_path)]
    cli = build_cli(args, run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    own = build_cli(
        [*args, "--trainer.plugins=lightning.pytorch.plugins.io.TorchCheckpointIO"], run=False
    )
    assert type(own.trainer.strategy.checkpoint_io) is TorchCheckpointIO
