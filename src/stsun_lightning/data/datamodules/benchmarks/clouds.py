"""Wrappers of TorchGeo's Landsat cloud-mask benchmarks: L7 Irish and L8 Biome.

Both are TorchGeo ``GeoDataset`` s (whole Landsat scenes and their manual masks, read
through a common CRS), so patches are located with TorchGeo's samplers: random patches
inside each training scene, a grid over each evaluation scene. The locations are drawn
once, from the seed, into a fixed list; the project's rank-aware batch sampler then
draws from that list, so every DDP rank sees its own share.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torchgeo.datasets import L7Irish, L8Biome
from torchgeo.samplers import GriddedPatchSampler, RandomPatchSampler

from stsun_lightning.data.datamodules.base import Split
from stsun_lightning.data.datamodules.benchmarks.base import TorchGeoDataModule
from stsun_lightning.data.datamodules.benchmarks.readers import (
    Example,
    SampleReader,
    apply_table,
    label_table,
)
from stsun_lightning.data.io.files import days_since_epoch

__all__ = ["CLOUD_CATEGORIES", "L7IrishDataModule", "L8BiomeDataModule", "LandsatCloudDataModule"]

CLOUD_CATEGORIES = ("cloud_shadow", "clear", "thin_cloud", "cloud")
"""TorchGeo's mask classes 1-4 in order; 0 (fill) is ignored."""

GeoSlice = tuple[slice, slice, slice]


class _PatchReader(SampleReader):
    """Patches of a Landsat GeoDataset at fixed locations.

    Args:
        dataset: the TorchGeo GeoDataset (image and mask).
        slices: the patches' (x, y, t) slices; t selects one scene.
        dates: (N,) days since 1970-01-01 of each patch's scene.
        patch_size: side of a patch in pixels.
    """

    def __init__(
        self, dataset: Any, slices: list[GeoSlice], dates: list[float], patch_size: int
    ) -> None:
        super().__init__(dataset)
        self.slices = slices
        self.patch_dates = dates
        self.patch_size = patch_size
        self.table = label_table({i + 1: i for i in range(len(CLOUD_CATEGORIES))})

    def __len__(self) -> int:
        return len(self.slices)

    def load(self, index: int) -> dict[str, Any]:
        """TorchGeo's sample at patch ``index``."""
        return self.dataset[self.slices[index]]

    def convert(self, sample: dict[str, Any], index: int) -> Example:
        """One frame; fill (all bands 0) is missing data, and its label ignored."""
        image = sample["image"].float()  # (C, H, W)
        image = torch.where((image == 0).all(0), float("nan"), image)
        target = apply_table(self.table, sample["mask"])
        p = self.patch_size
        example = Example(
            image[None], target, torch.tensor([self.patch_dates[index]], dtype=torch.float64)
        )
        return example.crop((0, 0, p, p))  # exact size, whatever the rounding of the warp

    def shape(self, index: int) -> tuple[int, int]:
        """Every patch is ``patch_size`` square."""
        return self.patch_size, self.patch_size


class LandsatCloudDataModule(TorchGeoDataModule):
    """Base of the Landsat cloud-mask wrappers: scenes split by seed, patches by sampler.

    Neither dataset has splits: scenes are shuffled by ``seed`` and ``val_fraction``
    and ``test_fraction`` of them (at least one each when there are three or more)
    held out. Training draws ``samples_per_scene`` random patches inside each training
    scene; evaluation covers each held-out scene with a grid of non-overlapping patches.
    Each patch is one frame dated by its scene's file name; the target is the state at
    that frame.

    Args:
        root: folder of the downloaded dataset.
        test_fraction: share of the scenes held out for testing.
        samples_per_scene: random training patches per training scene.
        **kwargs: arguments of :class:`TorchGeoDataModule`.
    """

    task = "cloud_mask"
    category_names = CLOUD_CATEGORIES
    output_mode = "state"
    gsd_m = 30.0
    native_splits = ()
    torchgeo_class: ClassVar[type]
    sensor: ClassVar[str]
    band_map: ClassVar[dict[str, str]]
    """TorchGeo's band names -> the sensor registry's, in TorchGeo's order."""

    def __init__(
        self,
        root: str,
        test_fraction: float = 0.2,
        samples_per_scene: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(root=root, **kwargs)
        if not 0.0 <= test_fraction < 1.0 or self.val_fraction + test_fraction >= 1.0:
            raise ValueError(
                f"test_fraction must be in [0, 1) and leave scenes for training, got "
                f"test_fraction={test_fraction}, val_fraction={self.val_fraction}."
            )
        self.test_fraction = test_fraction
        self.samples_per_scene = samples_per_scene

    def band_inputs(self) -> list[tuple[str, tuple[str, ...]]]:
        """All of the dataset's bands, by their registry names."""
        return [(self.sensor, tuple(self.band_map.values()))]

    def torchgeo_dataset(self, split: str) -> Any:
        """The whole dataset (image and mask, in TorchGeo's default CRS)."""
        if "all" not in self._torchgeo:
            self._torchgeo["all"] = self.torchgeo_class(
                str(self.root), download=False, checksum=False
            )
        return self._torchgeo["all"]

    def reader(self, dataset: Any) -> SampleReader:
        """A grid of evaluation patches over every scene of ``dataset``."""
        return self.patch_reader(dataset, list(range(len(dataset.index))), random=False)

    def scene_splits(self, count: int) -> dict[str, list[int]]:
        """Scene indices of each split, shuffled by ``seed``."""
        order = np.random.default_rng(self.seed).permutation(count).tolist()
        held = count >= 3

        def share(fraction: float) -> int:
            return max(round(count * fraction), 1 if held and fraction > 0 else 0)

        n_val, n_test = share(self.val_fraction), share(self.test_fraction)
        return {
            "val": sorted(order[:n_val]),
            "test": sorted(order[n_val : n_val + n_test]),
            "train": sorted(order[n_val + n_test :]),
        }

    def split_samples(self, split: Split) -> tuple[SampleReader, list[int]] | None:
        """A reader over the patch locations of ``split`` and all its indices."""
        if split not in self._readers:
            dataset = self.torchgeo_dataset(split)
            scenes = self.scene_splits(len(dataset.index))[split]
            if not scenes:
                return None
            self._readers[split] = self.patch_reader(dataset, scenes, random=split == "train")
        reader = self._readers[split]
        return (reader, list(range(len(reader)))) if len(reader) else None

    def patch_reader(self, dataset: Any, scenes: list[int], random: bool) -> SampleReader:
        """Patches of some scenes: random (``samples_per_scene`` each) or a grid.

        Args:
            dataset: the TorchGeo dataset.
            scenes: rows of ``dataset.index``.
            random: random training patches of ``patch_size``, or a grid of
                ``eval_patch_size`` patches covering each scene.

        Returns:
            The reader; each patch's time slice selects its own scene.
        """
        index = dataset.index
        patch = self.patch_size if random else self.eval_patch_size
        slices: list[GeoSlice] = []
        dates: list[float] = []
        for scene in scenes:
            geometry = index.geometry.iloc[scene]
            interval: pd.Interval = index.index[scene]
            when = slice(interval.left, interval.right)
            if random:
                locations = self._random_locations(dataset, geometry, scene)
            else:
                locations = list(GriddedPatchSampler(dataset, size=patch, roi=geometry))
            slices += [(x, y, when) for x, y in locations]
            dates += [days_since_epoch(interval.left.date())] * len(locations)
        return _PatchReader(dataset, slices, dates, patch)

    def _random_locations(
        self, dataset: Any, geometry: Any, scene: int
    ) -> list[tuple[slice, slice]]:
        """``samples_per_scene`` random patches inside one scene (a grid if it is too small)."""
        patch = self.patch_size
        sampler = RandomPatchSampler(
            dataset,
            size=patch,
            length=self.samples_per_scene,
            roi=geometry,
            generator=np.random.default_rng((self.seed, scene)),
        )
        if sampler.series.is_empty.all() or sampler.series.area.sum() <= 0:
            return list(GriddedPatchSampler(dataset, size=patch, roi=geometry))
        return list(sampler)


class L7IrishDataModule(LandsatCloudDataModule):
    """L7 Irish: Landsat 7 ETM+ scenes of nine biomes with manual cloud masks.

    Reads TorchGeo's :class:`~torchgeo.datasets.L7Irish` (``root/<biome>/<path_row>/``
    with one 9-band ``L71*.TIF`` per scene and its ``L7_*_newmask2015.TIF``). Both
    thermal gains (B61, B62) are the registry's band B6.

    Args:
        root: folder holding the biome folders.
        **kwargs: arguments of :class:`LandsatCloudDataModule`.
    """

    source_name = "l7_irish"
    torchgeo_class = L7Irish
    sensor = "landsat7_etm"
    band_map: ClassVar[dict[str, str]] = {
        "B10": "B1",
        "B20": "B2",
        "B30": "B3",
        "B40": "B4",
        "B50": "B5",
        "B61": "B6",
        "B62": "B6",
        "B70": "B7",
        "B80": "B8",
    }

    def __init__(self, root: str = "data/l7_irish", **kwargs: Any) -> None:
        super().__init__(root=root, **kwargs)
        self.save_hyperparameters()


class L8BiomeDataModule(LandsatCloudDataModule):
    """L8 Biome: Landsat 8 OLI/TIRS scenes of eight biomes with manual cloud masks.

    Reads TorchGeo's :class:`~torchgeo.datasets.L8Biome` (``root/<biome>/<scene>/``
    with one 11-band ``LC8*.TIF`` per scene and its ``*_fixedmask.TIF``).

    Args:
        root: folder holding the biome folders.
        **kwargs: arguments of :class:`LandsatCloudDataModule`.
    """

    source_name = "l8_biome"
    torchgeo_class = L8Biome
    sensor = "landsat8_oli_tirs"
    band_map: ClassVar[dict[str, str]] = {f"B{i}": f"B{i}" for i in range(1, 12)}

    def __init__(self, root: str = "data/l8_biome", **kwargs: Any) -> None:
        super().__init__(root=root, **kwargs)
        self.save_hyperparameters()
