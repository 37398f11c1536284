"""Coarse training crops: a share of crops drawn f times larger and averaged to the patch.

:class:`RandomCrops` draws them inside the areas that hold them, the datasets read the
larger window and coarsen it (``PatchRef.factor``), and the GeoTIFF and SpectralWorld
datamodules offer it as ``coarsen`` / ``coarsen_factors``.
"""

from __future__ import annotations

from collections import Counter

import pytest
import shapely
import torch
from geotiffs import four_band_datamodule, write_world
from lightning import Trainer

from stsun_lightning.batch import collate_batches
from stsun_lightning.data.datamodules.world import SpectralWorldDataModule
from stsun_lightning.data.datasets.patches import PatchRef, ScenePatchDataset
from stsun_lightning.data.samplers.crops import CropArea, RandomCrops
from stsun_lightning.data.samplers.epochs import EpochIndex
from stsun_lightning.data.transforms.coarsen import coarsen_batch
from stsun_lightning.errors import ConfigError
from stsun_lightning.tasks.module import StsunTask

RES = (10.0, 10.0)
AREAS = [CropArea(0, 0.0, 640.0, 64, 64, RES), CropArea(1, 1000.0, 400.0, 40, 40, RES)]


def _crops(crops: RandomCrops, epoch: int = 0) -> list[PatchRef]:
    return [crops.draw(epoch, i) for i in range(len(crops))]


# The first crops of RandomCrops(AREAS, 16, 40, seed=3), drawn by the code before the
# option existed (commit 6a65c9f): coarsen=0 must keep every run's crops.
BEFORE_THE_OPTION = [
    (0, 460.0, 430.0), (1, 1040.0, 400.0), (0, 140.0, 450.0),
    (1, 1190.0, 300.0), (0, 440.0, 250.0), (1, 1230.0, 220.0),
]  # fmt: skip


def test_no_coarsening_draws_the_crops_drawn_without_the_option():
    plain = _crops(RandomCrops(AREAS, 16, 40, seed=3))
    assert _crops(RandomCrops(AREAS, 16, 40, seed=3, coarsen=0.0)) == plain
    assert {ref.factor for ref in plain} == {1}
    assert [(r.scene, r.left, r.top) for r in plain[:6]] == BEFORE_THE_OPTION


def test_a_checkpoint_of_a_task_with_the_removed_coarsen_option_loads(tmp_path):
    sources = {"s": {"task": "semantic_segmentation", "categories": ["water", "cropland"]}}
    task = StsunTask("stsun_tiny", sources=sources)
    checkpoint = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}
    checkpoint["pytorch-lightning_version"] = "2.6.6"
    task.on_save_checkpoint(checkpoint)
    checkpoint["hyper_parameters"].update(coarsen=0.5, coarsen_factors=[2, 3])
    torch.save(checkpoint, tmp_path / "old.ckpt")
    loaded = StsunTask.load_from_checkpoint(tmp_path / "old.ckpt", map_location="cpu")
    assert "coarsen" not in loaded.hparams
    weights = dict(task.named_parameters())
    assert all(torch.equal(v, weights[k]) for k, v in loaded.named_parameters())


def test_a_share_of_crops_is_drawn_larger_inside_the_areas_that_hold_them():
    crops = RandomCrops(AREAS, 16, 600, seed=0, coarsen=0.5, coarsen_factors=(2, 3))
    drawn = _crops(crops) + _crops(crops, 1)
    factors = Counter(ref.factor for ref in drawn)
    assert set(factors) == {1, 2, 3}
    assert 500 < factors[1] < 700 and 220 < factors[2] < 380 and 220 < factors[3] < 380
    for ref in drawn:
        area = AREAS[ref.scene]
        side = 16 * ref.factor
        col, row = (ref.left - area.left) / 10, (area.top - ref.top) / 10
        assert col == int(col) and row == int(row)
        assert 0 <= col <= area.width - side and 0 <= row <= area.height - side
    # 48 px crops fit only the 64 px area; the 40 px one still gets 16 and 32 px crops
    assert {ref.scene for ref in drawn if ref.factor == 3} == {0}
    assert {ref.scene for ref in drawn if ref.factor == 2} == {0, 1}
    again = RandomCrops(AREAS, 16, 600, seed=0, coarsen=0.5, coarsen_factors=(2, 3))
    assert _crops(again, 1) == drawn[600:]


def test_bad_coarsening_options_say_what_was_expected():
    with pytest.raises(ConfigError, match="factor 5 needs a crop area of 80 px a side"):
        RandomCrops(AREAS, 16, 10, coarsen=0.5, coarsen_factors=(2, 5))
    with pytest.raises(ValueError, match=r"in \[0, 1\], got 1.5"):
        RandomCrops(AREAS, 16, 10, coarsen=1.5)
    with pytest.raises(ConfigError, match=r"data.coarsen must be in \[0, 1\], got -1"):
        SpectralWorldDataModule(root="unused", coarsen=-1)
    with pytest.raises(ConfigError, match=r"data.coarsen_factors must be integers of at least 2"):
        SpectralWorldDataModule(root="unused", coarsen=0.5, coarsen_factors=[1])


def test_a_coarse_crop_is_its_larger_window_averaged_inside_the_training_blocks(tmp_path):
    world = write_world(tmp_path / "world")
    dm = four_band_datamodule(world, tmp_path, augment=False, coarsen=1.0, coarsen_factors=[2])
    train = dm.datasets("train")[0]
    blocks = shapely.union_all(dm.blocks["train"])
    gsd = float(dm.datasets("val")[0][0].gsd_m[0])
    for i in range(len(train)):
        key = EpochIndex(1, i)
        ref, item = train.patch(1, i), train[key]
        assert ref.factor == 2 and blocks.contains(shapely.box(*train.bounds(key)))
        assert item.image.shape[-2:] == (16, 16) and float(item.gsd_m[0]) == 2 * gsd
    ref = train.patch(1, 0)
    whole = ScenePatchDataset(
        train.scenes, train.source, dm.vocabularies, [PatchRef(ref.scene, ref.left, ref.top)],
        32, train.outputs,
    )[0]  # fmt: skip
    expected = coarsen_batch(whole, 2)
    got = train[EpochIndex(1, 0)]
    assert torch.allclose(got.image.nan_to_num(-9), expected.image.nan_to_num(-9))
    assert torch.equal(got.target, expected.target) and torch.equal(
        got.valid_mask, expected.valid_mask
    )
    for split in ("val", "test"):  # evaluation reads the patch itself
        assert all(float(item.gsd_m[0]) == gsd for item in dm.datasets(split)[0])


@pytest.mark.filterwarnings("ignore:.*does not have many workers")
def test_batches_of_fine_and_coarse_crops_train(tmp_path):
    world = write_world(tmp_path / "world")
    dm = four_band_datamodule(
        world, tmp_path, augment=False, coarsen=0.5, coarsen_factors=[2], train_batches_per_epoch=3
    )
    train = dm.datasets("train")[0]
    items = [train[EpochIndex(0, i)] for i in range(len(train))]
    assert {float(item.gsd_m[0]) for item in items} == {10.0, 20.0}
    batch = collate_batches(items[:8])  # one batch holds both GSDs
    assert batch.gsd_m.unique().tolist() == [10.0, 20.0]
    torch.manual_seed(0)
    task = StsunTask("stsun_tiny", sources=dm.sources)
    trainer = Trainer(
        max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(task, dm)
    assert trainer.global_step == 3
    assert all(torch.isfinite(p).all() for p in task.parameters())


def test_the_world_coarsens_training_crops_only(tmp_path):
    options = dict(
        root=str(tmp_path / "world"),
        source_names=["canopy_height"],
        scene_size=64,
        scenes_per_source=3,
        patch_size=16,
        samples_per_scene=6,
    )
    plain = SpectralWorldDataModule(**options)
    coarse = SpectralWorldDataModule(**options, coarsen=1.0, coarsen_factors=[3])
    gsd = float(plain.datasets("train")[0][EpochIndex(0, 0)].gsd_m[0])
    items = [coarse.datasets("train")[0][EpochIndex(0, i)] for i in range(12)]
    assert all(i.image.shape[-1] == 16 and float(i.gsd_m[0]) == 3 * gsd for i in items)
    assert all(float(i.gsd_m[0]) == gsd for i in coarse.datasets("val")[0])
