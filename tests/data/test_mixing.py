"""Mixing several datamodules: shared category rows, homogeneous batches, DDP shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from geotiffs import write_world

import stsun_lightning.data.samplers.sources as sampling
from stsun_lightning.batch import Batch
from stsun_lightning.data.datamodules.geotiff import GeoTiffDataModule
from stsun_lightning.data.datamodules.mixing import MixedDataModule


def member(
    world: dict[str, Path], tmp_path: Path, name: str, classes: dict, **kw: Any
) -> GeoTiffDataModule:
    sensors = {
        "s2": {
            "sensor": "sentinel2_l2a",
            "paths": str(world["s2"]),
            "bands": ["B02", "B03", "B04", "B08"],
        },
        "dem": {"sensor": "copernicus_dem", "paths": str(world["dem"])},
    }
    return GeoTiffDataModule(
        inputs={kw.pop("input", "s2"): sensors[kw.pop("sensor", "s2")]},
        labels={
            "paths": str(world["labels"]),
            "task": "semantic_segmentation",
            "classes": classes,
            "ignore_values": [0],
        },
        name=name,
        patch_size=16,
        split={"block_size": 32, "val": 0.2, "test": 0.2},
        statistics_cache=str(tmp_path / "cache"),
        train_samples=kw.pop("train_samples", 40),
        **kw,
    )


@pytest.fixture
def mixed(tmp_path: Path) -> MixedDataModule:
    world = write_world(tmp_path / "world")
    a = member(world, tmp_path, "optical", {1: "water", 2: "tree_cover", 3: "built_up"})
    b = member(
        world,
        tmp_path,
        "terrain",
        {1: "water", 2: "cropland", 3: "bare_soil"},
        input="dem",
        sensor="dem",
        train_samples=10,
    )
    module = MixedDataModule([a, b], batch_size=4, temperature=1.0, seed=5)
    module.setup("fit")
    return module


def test_category_names_share_rows_across_members(mixed):
    vocab = mixed.vocabularies["categories"]
    assert vocab == ["water", "tree_cover", "built_up", "cropland", "bare_soil"]
    rows = {}
    for dataset in mixed.datasets("train"):
        batch = dataset[0]
        rows[batch.source[0]] = [vocab[r] for r in batch.categories[0].tolist()]
    assert rows == {
        "optical": ["water", "tree_cover", "built_up"],
        "terrain": ["water", "cropland", "bare_soil"],
    }
    assert set(mixed.sources) == {"optical", "terrain"}


def test_batches_are_homogeneous_and_sources_mix(mixed):
    seen = []
    for batch in mixed.train_dataloader():
        batch.validate()
        assert len(set(batch.source)) == 1
        seen.append(batch.source[0])
    assert set(seen) == {"optical", "terrain"}
    assert seen.count("optical") > seen.count("terrain")  # 40 vs 10 samples, temperature 1


def _ranks(mixed: MixedDataModule, monkeypatch, split: str) -> list[list[Batch]]:
    per_rank = []
    for rank in range(2):
        monkeypatch.setattr(sampling.dist, "is_initialized", lambda: True)
        monkeypatch.setattr(sampling.dist, "get_rank", lambda rank=rank: rank)
        monkeypatch.setattr(sampling.dist, "get_world_size", lambda: 2)
        loader = mixed.train_dataloader() if split == "train" else mixed.val_dataloader()
        per_rank.append(list(loader))
    return per_rank


def _keys(batch: Batch) -> list[tuple]:
    return [
        (s, round(float(torch.nan_to_num(batch.image[i]).sum()), 3), int(batch.target[i].sum()))
        for i, s in enumerate(batch.source)
    ]


def test_two_ranks_cover_every_validation_sample_exactly_once(mixed, monkeypatch):
    single = [k for b in mixed.val_dataloader() for k in _keys(b)]
    ranks = _ranks(mixed, monkeypatch, "val")
    split = [k for r in ranks for b in r for k in _keys(b)]
    assert sorted(split) == sorted(single)
    assert len(split) == sum(len(d) for d in mixed.datasets("val"))


def test_two_ranks_train_on_disjoint_batches_in_the_same_order_for_the_same_seed(
    mixed, monkeypatch
):
    first = _ranks(mixed, monkeypatch, "train")
    again = _ranks(mixed, monkeypatch, "train")
    ids = [[tuple(_keys(b)) for b in r] for r in first]
    assert ids == [[tuple(_keys(b)) for b in r] for r in again]
    assert not set(ids[0]) & set(ids[1])
    assert len(ids[0]) == len(ids[1]) > 0


def test_duplicate_source_names_are_refused(tmp_path):
    world = write_world(tmp_path / "world")
    a = member(world, tmp_path, "same", {1: "water", 2: "tree_cover", 3: "built_up"})
    with pytest.raises(ValueError, match=r"Sources \['same'\] appear in several datamodules"):
        MixedDataModule([a, a])


def test_source_weights_reach_across_members_by_source_name(tmp_path):
    world = write_world(tmp_path / "world")
    a = member(world, tmp_path, "optical", {1: "water", 2: "tree_cover", 3: "built_up"})
    b = member(world, tmp_path, "terrain", {1: "water"}, input="dem", sensor="dem")
    module = MixedDataModule([a, b], temperature=1.0, source_weights={"terrain": 3.0})
    assert module.source_weight_list() == [1.0, 3.0]
    with pytest.raises(ValueError, match=r"names \['terain'\].*\['optical', 'terrain'\]"):
        MixedDataModule([a, b], source_weights={"terain": 2.0})


@pytest.mark.slow
def test_joint_config_trains_one_model_on_several_torchgeo_datasets(tmp_path):
    import yaml
    from torchgeo_fakes import write_l8_biome, write_loveda, write_oscd, write_potsdam

    from stsun_lightning.cli import build_cli

    writers = {
        "PotsdamDataModule": write_potsdam,
        "LoveDADataModule": write_loveda,
        "OSCDDataModule": write_oscd,
        "L8BiomeDataModule": write_l8_biome,
    }
    config = yaml.safe_load((Path(__file__).parents[2] / "configs" / "joint.yaml").read_text())
    for spec in config["data"]["init_args"]["datamodules"]:
        name = spec["class_path"].rsplit(".", 1)[1]
        spec["init_args"].update(root=str(writers.pop(name)(tmp_path / name)), patch_size=32)
        if "eval_patch_size" in spec["init_args"]:
            spec["init_args"]["eval_patch_size"] = 32
    assert not writers  # the config mixes exactly these four datasets
    config["data"]["init_args"].update(batch_size=2, num_workers=0)
    config["model"]["model"] = "stsun_tiny"
    config["trainer"].update(
        accelerator="cpu", fast_dev_run=4, default_root_dir=str(tmp_path / "run"), callbacks=[]
    )
    path = tmp_path / "joint.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = build_cli(["fit", "--config", str(path)])
    assert cli.trainer.state.finished
    assert set(cli.model.sources) == {"potsdam", "loveda", "oscd", "l8_biome"}
    vocab = cli.datamodule.vocabularies["categories"]
    assert vocab.count("building") == 1 and vocab.count("tree_cover") == 1
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
