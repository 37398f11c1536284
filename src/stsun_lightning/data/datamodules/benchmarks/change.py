"""Wrappers of TorchGeo's change-detection benchmarks: OSCD and LEVIR-CD."""

from __future__ import annotations

from typing import Any

import torch
from torchgeo.datasets import LEVIRCD, OSCD

from stsun_lightning.data.datamodules.benchmarks.base import TorchGeoDataModule
from stsun_lightning.data.datamodules.benchmarks.readers import (
    GOOGLE_EARTH_RGB,
    SampleReader,
    TableReader,
    google_earth_sensor,
    label_table,
    unknown_dates,
    yyyymmdd_days,
)

__all__ = ["CHANGE_CATEGORIES", "LEVIRCDDataModule", "OSCDDataModule"]

# --- OSCD --------------------------------------------------------------------------------

CHANGE_CATEGORIES = ("no_change", "change")


class _OSCDReader(TableReader):
    def dates(self, index: int, t: int) -> torch.Tensor:
        found = [yyyymmdd_days(d) for d in self.dataset.files[index]["dates"]]
        return torch.tensor(found, dtype=torch.float64) if len(found) == t else unknown_dates(t)


class OSCDDataModule(TorchGeoDataModule):
    """OSCD: pairs of Sentinel-2 L1C images of 24 cities, urban change between them.

    Reads TorchGeo's :class:`~torchgeo.datasets.OSCD` (the ``Onera Satellite Change
    Detection dataset - Images`` / ``- Train Labels`` / ``- Test Labels`` folders). Each
    city is two frames (13 bands, 10 m) with the dates of its ``dates.txt``; the target
    is the change between them. OSCD has train and test cities: ``val_fraction`` of the
    training cities form the validation split.

    Args:
        root: folder holding the OSCD folders.
        bands: Sentinel-2 bands to read (default: all 13).
        **kwargs: arguments of :class:`TorchGeoDataModule`.
    """

    source_name = "oscd"
    task = "change_detection"
    category_names = CHANGE_CATEGORIES
    output_mode = "change"
    gsd_m = 10.0
    native_splits = ("train", "test")

    def __init__(
        self, root: str = "data/oscd", bands: list[str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(root=root, **kwargs)
        self.save_hyperparameters()
        self.bands = tuple(bands or OSCD.all_bands)

    def band_inputs(self) -> list[tuple[str, tuple[str, ...]]]:
        """Sentinel-2 L1C bands."""
        return [("sentinel2_l1c", self.bands)]

    def torchgeo_dataset(self, split: str) -> OSCD:
        """OSCD's train or test cities."""
        return OSCD(str(self.root), split=split, bands=self.bands, download=False, checksum=False)

    def reader(self, dataset: OSCD) -> SampleReader:
        """Two frames with their dates; 0 no change, 1 change."""
        return _OSCDReader(dataset, label_table({0: 0, 1: 1}), "images1")


# --- LEVIR-CD ----------------------------------------------------------------------------


class LEVIRCDDataModule(TorchGeoDataModule):
    """LEVIR-CD: pairs of 0.5 m Google Earth RGB images of Texas, building change.

    Reads TorchGeo's :class:`~torchgeo.datasets.LEVIRCD` (``root/A``, ``root/B``,
    ``root/label`` with its train, val and test images). Acquisition dates
    (2002-2018) are not given per pair: both frames' dates are unknown (NaN).

    Args:
        root: folder holding ``A``, ``B`` and ``label``.
        **kwargs: arguments of :class:`TorchGeoDataModule`.
    """

    source_name = "levir_cd"
    task = "change_detection"
    category_names = CHANGE_CATEGORIES
    output_mode = "change"
    gsd_m = 0.5

    def __init__(self, root: str = "data/levir_cd", **kwargs: Any) -> None:
        super().__init__(root=root, **kwargs)
        self.save_hyperparameters()
        google_earth_sensor()

    def band_inputs(self) -> list[tuple[str, tuple[str, ...]]]:
        """Google Earth RGB."""
        return [(GOOGLE_EARTH_RGB, ("R", "G", "B"))]

    def torchgeo_dataset(self, split: str) -> LEVIRCD:
        """LEVIR-CD's split."""
        return LEVIRCD(str(self.root), split=split, download=False, checksum=False)

    def reader(self, dataset: LEVIRCD) -> SampleReader:
        """Two frames of unknown dates; 0 no change, 1 change."""
        return TableReader(dataset, label_table({0: 0, 1: 1}), "image1")
