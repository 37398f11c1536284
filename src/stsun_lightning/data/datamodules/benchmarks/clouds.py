"""Wrappers of TorchGeo's Landsat cloud-mask benchmarks: L7 Irish and L8 Biome.

Both are TorchGeo ``GeoDataset`` s (whole Landsat scenes and their manual masks, read
through a common CRS). Evaluation covers each held-out scene with TorchGeo's
``GriddedPatchSampler``. Training has ``samples_per_scene`` items per training scene,
each a window of the scene's bounding box at a place drawn afresh every epoch from
``(seed, epoch, index)`` (as every training dataset of the project), so a rerun or a
resumed run sees the same patches, every epoch others, and each DDP rank its own share.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torchgeo.datasets import L7Irish, L8Biome
from torchgeo.samplers import GriddedPatchSampler

from stsun_lightning.data.datamodules.base import Split
from stsun_lightning.data.datamodules.benchmarks.base import TorchGeoDataModule
from stsun_lightning.data.datamodules.benchmarks.readers import (
    Example,
    SampleReader,
    Window,
    apply_table,
    label_table,
)
from stsun_lightning.data.io.files import days_since_epoch
from stsun_lightning.data.samplers.epochs import item_rng

__all__ = ["CLOUD_CATEGORIES", "L7IrishDataModule", "L8BiomeDataModule", "LandsatCloudDataModule"]

CLOUD_CATEGORIES = ("cloud_shadow", "clear", "thin_cloud", "cloud")
"""TorchGeo's mask classes 1-4 in order; 0 (fill) is ignored."""

GeoSlice = tuple[slice, slice, slice]


_MASK_TABLE = label_table({i + 1: i for i in range(len(CLOUD_CATEGORIES))})
"""TorchGeo's mask values -> category indices (built once, not per patch)."""
_PREVIEW_STREAM = 17  # where a training item's statistics preview is read


def _patch_example(sample: dict[str, Any], date: float, patch_size: int) -> Example:
    """One frame of TorchGeo's sample; fill (all bands 0) is missing data, its label ignored."""
    image = sample["image"].float()  # (C, H, W)
    image = torch.where((image == 0).all(0), float("nan"), image)
    target = apply_table(_MASK_TABLE, sample["mask"])
    example = Example(image[None], target, torch.tensor([date], dtype=torch.float64))
    # Exact size, whatever the rounding of the warp.
    return example.crop((0, 0, patch_size, patch_size))


class _PatchReader(SampleReader):
    """Patches of a Landsat GeoDataset at fixed locations (the evaluation grid).

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

    def __len__(self) -> int:
        return len(self.slices)

    def load(self, index: int) -> dict[str, Any]:
        """TorchGeo's sample at patch ``index``."""
        return self.dataset[self.slices[index]]

    def convert(self, sample: dict[str, Any], index: int) -> Example:
        """One frame, cropped to the patch."""
        return _patch_example(sample, self.patch_dates[index], self.patch_size)

    def shape(self, index: int) -> tuple[int, int]:
        """Every patch is ``patch_size`` square."""
        return self.patch_size, self.patch_size


class _SceneWindowReader(SampleReader):
    """Windows anywhere in some scenes of a Landsat GeoDataset (the training items).

    Item ``i`` is the ``i % samples_per_scene``-th item of scene ``scenes[i //
    samples_per_scene]``; its size is the scene's bounding box in pixels at the
    dataset's resolution, and :meth:`read_window` reads one window of it through
    TorchGeo (only that window is read), so the caller chooses where.

    Args:
        dataset: the TorchGeo GeoDataset (image and mask).
        scenes: rows of ``dataset.index``.
        samples_per_scene: items per scene.
        patch_size: side of the statistics preview window.
        seed: seed of where the statistics preview of each item lies.
    """

    def __init__(
        self, dataset: Any, scenes: list[int], samples_per_scene: int, patch_size: int, seed: int
    ) -> None:
        super().__init__(dataset)
        index = dataset.index
        self.samples_per_scene = samples_per_scene
        self.patch_size = patch_size
        self.seed = seed
        self.res_x, self.res_y = (float(r) for r in dataset.res)
        self.bounds: list[tuple[float, float, float, float]] = []
        self.times: list[slice] = []
        self.scene_dates: list[float] = []
        for scene in scenes:
            interval: pd.Interval = index.index[scene]
            self.bounds.append(tuple(float(v) for v in index.geometry.iloc[scene].bounds))
            self.times.append(slice(interval.left, interval.right))
            self.scene_dates.append(days_since_epoch(interval.left.date()))

    def __len__(self) -> int:
        return len(self.bounds) * self.samples_per_scene

    def convert(self, sample: dict[str, Any], index: int) -> Example:
        """Not used: items are read by window only."""
        raise TypeError("Training scenes are read by window (read_window), never whole.")

    def shape(self, index: int) -> tuple[int, int]:
        """(rows, cols) of the bounding box of item ``index``'s scene."""
        minx, miny, maxx, maxy = self.bounds[index // self.samples_per_scene]
        return round((maxy - miny) / self.res_y), round((maxx - minx) / self.res_x)

    def read_window(self, index: int, window: Window) -> Example:
        """The (row, col, height, width) window of item ``index``'s scene (square).

        Args:
            index: the item.
            window: its (row, col, height, width) in the scene's pixels from the top left
                corner of its bounding box; it may reach past the scene (read as fill).

        Returns:
            An example of (1, C, height, height).
        """
        row, col, height, width = window
        if height != width:
            raise ValueError(f"Landsat cloud windows are square, got {height} x {width}.")
        scene = index // self.samples_per_scene
        minx, _, _, maxy = self.bounds[scene]
        x0, y1 = minx + col * self.res_x, maxy - row * self.res_y
        query = (
            slice(x0, x0 + width * self.res_x),
            slice(y1 - height * self.res_y, y1),
            self.times[scene],
        )
        return _patch_example(self.dataset[query], self.scene_dates[scene], height)

    def preview(self, index: int, stride: int) -> torch.Tensor:
        """(1, C, h, w) raw values at every ``stride``-th pixel of one patch of the item.

        The patch lies where ``(seed, index)`` says, the same in every run, so the
        statistics stay cacheable.
        """
        rows, cols = self.shape(index)
        p = self.patch_size
        rng = item_rng(self.seed, _PREVIEW_STREAM, 0, index)
        row, col = int(rng.integers(max(rows - p, 0) + 1)), int(rng.integers(max(cols - p, 0) + 1))
        return self.read_window(index, (row, col, p, p)).image[..., ::stride, ::stride]


class LandsatCloudDataModule(TorchGeoDataModule):
    """Base of the Landsat cloud-mask wrappers: scenes split by seed, patches by sampler.

    Neither dataset has splits: scenes are shuffled by ``seed`` and ``val_fraction``
    and ``test_fraction`` of them (at least one each when there are three or more)
    held out. Training has ``samples_per_scene`` items per training scene, each a window
    placed anew every epoch inside the scene's bounding box; evaluation covers each held-out scene with a grid of non-overlapping patches.
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
        """Windows of some scenes: drawn per epoch (training) or a grid (evaluation).

        Args:
            dataset: the TorchGeo dataset.
            scenes: rows of ``dataset.index``.
            random: ``samples_per_scene`` training items per scene, each placed by the
                dataset per epoch; or a grid of ``eval_patch_size`` patches covering
                each scene.

        Returns:
            The reader; each patch's time slice selects its own scene.
        """
        if random:
            return _SceneWindowReader(
                dataset, scenes, self.samples_per_scene, self.patch_size, self.seed
            )
        index = dataset.index
        patch = self.eval_patch_size
        slices: list[GeoSlice] = []
        dates: list[float] = []
        for scene in scenes:
            geometry = index.geometry.iloc[scene]
            interval: pd.Interval = index.index[scene]
            when = slice(interval.left, interval.right)
            locations = list(GriddedPatchSampler(dataset, size=patch, roi=geometry))
            slices += [(x, y, when) for x, y in locations]
            dates += [days_since_epoch(interval.left.date())] * len(locations)
        return _PatchReader(dataset, slices, dates, patch)


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
