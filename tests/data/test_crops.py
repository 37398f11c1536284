"""Training crops and flips drawn afresh every epoch, the same for the same seed and epoch.

Crops of :class:`RandomCrops` and :func:`block_crops` alone, then the training datasets
of the GeoTIFF, SpectralWorld and benchmark datamodules, read in persistent DataLoader
workers as training reads them.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import shapely
import torch
from geotiffs import four_band_datamodule, write_world
from rasterio.crs import CRS
from torchgeo_fakes import write_levir_cd

from stsun_lightning.batch import collate_batches
from stsun_lightning.data.datamodules.benchmarks import LEVIRCDDataModule
from stsun_lightning.data.datamodules.world import SpectralWorldDataModule
from stsun_lightning.data.datasets.patches import PatchRef
from stsun_lightning.data.io.grid import Grid
from stsun_lightning.data.samplers.crops import CROP_ATTEMPTS, CropArea, RandomCrops
from stsun_lightning.data.samplers.epochs import EpochIndex
from stsun_lightning.data.samplers.split import block_crops
from stsun_lightning.errors import ConfigError

RES = (10.0, 10.0)


def _crops(crops: RandomCrops, epoch: int) -> list[PatchRef]:
    return [crops.draw(epoch, i) for i in range(len(crops))]


def test_each_epoch_draws_other_crops_the_same_for_the_same_seed_and_epoch():
    areas = [CropArea(0, 0.0, 640.0, 64, 64, RES), CropArea(1, 1000.0, 640.0, 48, 64, RES)]
    crops = RandomCrops(areas, 16, 40, seed=3)
    first, second = _crops(crops, 0), _crops(crops, 1)
    assert len(set(first) & set(second)) < 4  # of 40, among 2 × ~2000 corners
    again = RandomCrops(areas, 16, 40, seed=3)  # another process builds its own
    assert _crops(again, 1) == second and _crops(again, 0) == first
    assert _crops(RandomCrops(areas, 16, 40, seed=4), 0) != first
    with pytest.raises(IndexError, match="Crop 40 out of range for 40"):
        crops.draw(0, 40)


def test_crops_lie_on_pixels_of_their_area_and_each_full_area_gets_its_share():
    areas = [CropArea(s, 100.0 * s, 500.0, 20 + s, 20, RES) for s in range(3)]
    crops = RandomCrops(areas, 8, 30, seed=0)
    for epoch in range(3):
        drawn = _crops(crops, epoch)
        assert Counter(ref.scene for ref in drawn) == {0: 10, 1: 10, 2: 10}
        for ref in drawn:
            area = areas[ref.scene]
            col, row = (ref.left - area.left) / 10, (area.top - ref.top) / 10
            assert col == int(col) and row == int(row)  # on the grid's pixel edges
            assert 0 <= col <= area.width - 8 and 0 <= row <= area.height - 8


def test_crops_stay_in_the_data_and_are_uniform_over_its_corners():
    # An L-shaped area of 6 × 6 px whose top-right 3 × 3 px have no data; 2-px crops.
    full = shapely.box(0, 0, 60, 60)
    data = full.difference(shapely.box(30, 30, 60, 60))
    crops = RandomCrops([CropArea(0, 0.0, 60.0, 6, 6, RES, data)], 2, 100, seed=1)
    hits = Counter((ref.left, ref.top) for e in range(30) for ref in _crops(crops, e))
    valid = {
        (10.0 * c, 60.0 - 10.0 * r)
        for r in range(5)
        for c in range(5)
        if data.contains(shapely.box(10 * c, 60 - 10 * r - 20, 10 * c + 20, 60 - 10 * r))
    }
    assert set(hits) == valid  # every valid corner, and no other
    mean = sum(hits.values()) / len(valid)
    assert all(0.6 * mean < n < 1.4 * mean for n in hits.values()), hits


def test_a_crop_that_finds_no_data_takes_a_fallback_or_says_why():
    sliver = shapely.box(0, 0, 5, 60)  # half a pixel wide: no 2-px crop fits
    area = CropArea(0, 0.0, 60.0, 6, 6, RES, sliver)
    fallback = [PatchRef(0, 0.0, 60.0)]
    assert _crops(RandomCrops([area], 2, 3, fallback=fallback), 0) == fallback * 3
    with pytest.raises(RuntimeError, match=f"{CROP_ATTEMPTS} random corners all left the data"):
        RandomCrops([area], 2, 3).draw(0, 0)
    with pytest.raises(ValueError, match="No crop area holds a patch of 8 px"):
        RandomCrops([area], 8, 3)


def test_block_crops_lie_wholly_inside_one_block_and_the_region():
    grid = Grid(CRS.from_epsg(32632), RES, (0.0, 0.0))
    blocks = [shapely.box(0, 0, 160, 160), shapely.box(160, 0, 320, 160)]
    region = shapely.Polygon([(0, 0), (320, 0), (320, 100), (200, 160), (0, 160)])
    crops = block_crops(blocks, region, grid, 4, 200, seed=2)
    assert crops.areas[0].data is None and crops.areas[1].data is not None
    boxes = [shapely.box(r.left, r.top - 40, r.left + 40, r.top) for r in _crops(crops, 0)]
    assert all(region.contains(b) for b in boxes)
    assert all(any(block.contains(b) for block in blocks) for b in boxes)
    assert sum(1 for b in boxes if blocks[1].contains(b)) > 40  # the ragged block is used


# --- The datamodules' training datasets ----------------------------------------------


def test_geotiff_training_crops_change_every_epoch_and_evaluation_grids_do_not(tmp_path):
    world = write_world(tmp_path / "world")
    dm = four_band_datamodule(world, tmp_path)
    train = dm.datasets("train")[0]
    epochs = [[train.bounds(EpochIndex(e, i)) for i in range(len(train))] for e in range(3)]
    assert len(set(epochs[0]) & set(epochs[1])) < 4 and epochs[1] != epochs[2]
    blocks = shapely.union_all(dm.blocks["train"])
    assert all(blocks.contains(shapely.box(*b)) for bounds in epochs for b in bounds)
    same = four_band_datamodule(world, tmp_path).datasets("train")[0]  # a rerun, or a resumed run
    assert [same.bounds(EpochIndex(1, i)) for i in range(len(same))] == epochs[1]
    for split in ("val", "test"):
        grid = dm.datasets(split)[0]
        assert len(grid) > 0
        assert [grid.bounds(EpochIndex(5, i)) for i in range(len(grid))] == [
            grid.bounds(i) for i in range(len(grid))
        ]


def test_flips_are_drawn_per_epoch_and_item(tmp_path):
    world = write_world(tmp_path / "world")
    flipped = four_band_datamodule(world, tmp_path).datasets("train")[0]
    plain = four_band_datamodule(world, tmp_path, augment=False).datasets("train")[0]
    turns: dict[int, set[int]] = {i: set() for i in range(6)}
    for epoch in range(6):
        for i in turns:
            key = EpochIndex(epoch, i)
            assert plain.bounds(key) == flipped.bounds(key)  # flips leave the crop alone
            a = plain[key].image[0].nan_to_num(-1)
            b = flipped[key].image[0].nan_to_num(-1)
            variants = [torch.rot90(a, k, (-2, -1)) for k in range(4)]
            variants += [v.flip(-1) for v in variants]
            matches = [k for k, v in enumerate(variants) if torch.equal(v, b)]
            assert matches, (epoch, i)
            turns[i].add(matches[0])
            assert torch.equal(flipped[key].image, flipped[key].image)  # reproducible
    assert all(len(seen) > 1 for seen in turns.values())  # other flips in other epochs


def test_persistent_workers_read_the_crops_of_the_epoch_the_sampler_is_in(tmp_path):
    world = write_world(tmp_path / "world")
    dm = four_band_datamodule(world, tmp_path, num_workers=2, train_batches_per_epoch=4)
    loader, (train,) = dm.train_dataloader(), dm.datasets("train")
    assert loader.persistent_workers
    seen = []
    for epoch in (0, 1, 2):  # the same workers serve every epoch
        loader.batch_sampler.sampler.set_epoch(epoch)  # as Lightning does
        keys = list(loader.batch_sampler)
        read = list(loader)
        assert len(read) == len(keys) == 4
        for batch, batch_keys in zip(read, keys, strict=True):
            expected = collate_batches([loader.dataset[k] for k in batch_keys])
            assert torch.equal(batch.image.nan_to_num(-9), expected.image.nan_to_num(-9))
            assert torch.equal(batch.target, expected.target)
        seen.append({train.bounds(k) for batch_keys in keys for k in batch_keys})
    assert len(seen[0] & seen[1]) < 4 and len(seen[1] & seen[2]) < 4  # of 16 each


@pytest.fixture(scope="module")
def world_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("spectral_world")


def test_spectral_world_draws_fresh_windows_per_scene_every_epoch(world_root):
    options = dict(
        root=str(world_root),
        source_names=["canopy_height"],
        scene_size=64,
        scenes_per_source=3,
        patch_size=16,
        samples_per_scene=6,
    )
    train = SpectralWorldDataModule(**options).datasets("train")[0]
    assert len(train) == 12  # two training scenes
    drawn = [[train.patch(e, i) for i in range(len(train))] for e in range(2)]
    assert all(Counter(r.scene for r in refs) == {0: 6, 1: 6} for refs in drawn)
    assert len(set(drawn[0]) & set(drawn[1])) < 3
    again = SpectralWorldDataModule(**options).datasets("train")[0]
    assert [again.patch(1, i) for i in range(len(again))] == drawn[1]
    key = EpochIndex(1, 3)
    assert torch.equal(again[key].target.nan_to_num(-1), train[key].target.nan_to_num(-1))


def test_benchmark_crops_come_from_seed_epoch_and_item_not_the_global_rng(tmp_path):
    root = write_levir_cd(tmp_path / "levir", size=48)
    dm = LEVIRCDDataModule(root=str(root), patch_size=16, batch_size=2)
    dm.setup("fit")
    train = dm.datasets("train")[0]

    def image(epoch: int, index: int) -> torch.Tensor:
        return train[EpochIndex(epoch, index)].image.nan_to_num(-9)

    torch.manual_seed(0)
    first = [image(0, i) for i in range(len(train))]
    torch.manual_seed(1)  # another model, another number of random calls before
    assert all(torch.equal(a, image(0, i)) for i, a in enumerate(first))
    second = [image(1, i) for i in range(len(train))]
    assert sum(torch.equal(a, b) for a, b in zip(first, second, strict=True)) < len(train) / 2
    other_seed = LEVIRCDDataModule(root=str(root), patch_size=16, batch_size=2, seed=9)
    other_seed.setup("fit")
    assert not torch.equal(other_seed.datasets("train")[0][EpochIndex(0, 0)].image, first[0])
    evaluation = dm.datasets("val")[0]
    if len(evaluation):
        assert torch.equal(
            evaluation[EpochIndex(4, 0)].image.nan_to_num(-9),
            evaluation[0].image.nan_to_num(-9),
        )


def test_the_world_draws_weighted_sources_more_often_and_names_a_misspelt_one(world_root):
    options = dict(
        root=str(world_root),
        source_names=["canopy_height", "s2_clouds"],
        scene_size=64,
        scenes_per_source=3,
        patch_size=16,
        samples_per_scene=6,
        train_batches_per_epoch=600,
    )
    datamodule = SpectralWorldDataModule(**options, source_weights={"s2_clouds": 3.0})
    datamodule.setup("fit")
    sampler = datamodule.train_dataloader().batch_sampler
    clouds = [s.name for s in datamodule.source_infos].index("s2_clouds")
    starts = sampler.offsets[clouds], sampler.offsets[clouds] + sampler.sizes[clouds]
    drawn = [starts[0] <= batch[0].index < starts[1] for batch in sampler]
    assert abs(sum(drawn) / len(drawn) - 0.75) < 0.05
    assert datamodule.val_dataloader().batch_sampler.weights is None
    with pytest.raises(ConfigError, match=r"names \['s2_cloud'\].*'canopy_height', 's2_clouds'"):
        SpectralWorldDataModule(**options, source_weights={"s2_cloud": 2.0})
    with pytest.raises(ConfigError, match=re.escape("finite numbers > 0, got {'s2_clouds': -1.0}")):
        SpectralWorldDataModule(**options, source_weights={"s2_clouds": -1.0})
