"""Wrappers of TorchGeo's time-series benchmarks: PASTIS and Fields of The World."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torchgeo.datasets import PASTIS, FieldsOfTheWorld

from stsun_lightning.data.datamodules.benchmarks.base import TorchGeoDataModule
from stsun_lightning.data.datamodules.benchmarks.readers import (
    Example,
    SampleReader,
    TableReader,
    apply_table,
    label_table,
    unknown_dates,
    yyyymmdd_days,
)

__all__ = [
    "FTW_CATEGORIES",
    "PASTIS_CATEGORIES",
    "FTWDataModule",
    "PastisDataModule",
    "pastis_dates",
]

# --- PASTIS ------------------------------------------------------------------------------

PASTIS_CATEGORIES = (
    "non_agricultural_land",
    "meadow",
    "soft_winter_wheat",
    "maize",
    "winter_barley",
    "winter_rapeseed",
    "spring_barley",
    "sunflower",
    "grapevine",
    "beet",
    "winter_triticale",
    "winter_durum_wheat",
    "fruits_vegetables_flowers",
    "potatoes",
    "leguminous_fodder",
    "soybean",
    "orchard",
    "mixed_cereal",
    "sorghum",
)
"""PASTIS label values 0-18 in order (19, void, is ignored)."""


def pastis_dates(root: Path) -> dict[int, list[float]]:
    """Acquisition dates of every PASTIS patch, from ``PASTIS-R/metadata.geojson``.

    Returns:
        ``ID_PATCH`` -> days since 1970-01-01 of each Sentinel-2 frame, in frame order.
    """
    path = root / PASTIS.directory / "metadata.geojson"
    features = json.loads(path.read_text()).get("features", [])
    dates: dict[int, list[float]] = {}
    for feature in features:
        properties = feature.get("properties", {})
        raw = properties.get("dates-S2")
        if raw is None or "ID_PATCH" not in properties:
            continue
        table = json.loads(raw) if isinstance(raw, str) else raw
        ordered = sorted(table.items(), key=lambda kv: int(kv[0]))
        dates[int(properties["ID_PATCH"])] = [yyyymmdd_days(v) for _, v in ordered]
    return dates


class _PastisReader(SampleReader):
    def __init__(self, dataset: PASTIS, dates: dict[int, list[float]]) -> None:
        super().__init__(dataset)
        self.table = label_table({i: i for i in range(len(PASTIS_CATEGORIES))})
        self.frame_dates = dates

    def convert(self, sample: dict[str, Any], index: int) -> Example:
        image = sample["image"].float()  # (T, C, H, W)
        t = image.shape[0]
        known = self.frame_dates.get(int(self.dataset.idxs[index]))
        dates = torch.tensor(known, dtype=torch.float64) if known and len(known) == t else None
        return Example(
            image,
            apply_table(self.table, sample["mask"]),
            unknown_dates(t) if dates is None else dates,
        )

    def shape(self, index: int) -> tuple[int, int]:
        labels = np.load(self.dataset.files[index]["semantic"], mmap_mode="r")
        return int(labels.shape[-2]), int(labels.shape[-1])


class PastisDataModule(TorchGeoDataModule):
    """PASTIS: Sentinel-2 L2A time series of French farmland, one crop-type map each.

    Reads TorchGeo's :class:`~torchgeo.datasets.PASTIS` (``root/PASTIS-R``, semantic
    mode). Each series is one item of ``num_frames`` frames (longer series are
    subsampled: at random in training, evenly spaced in evaluation; shorter ones are
    padded with missing frames), with each frame's date from ``metadata.geojson``.
    The target is one map over the whole series (an aggregate output slot).

    Args:
        root: folder holding ``PASTIS-R``.
        bands: Sentinel-2 bands to read (default: all ten of PASTIS).
        num_frames: frames per item.
        train_folds: folds of the training split (PASTIS has five).
        val_folds: folds of the validation split.
        test_folds: folds of the test split.
        **kwargs: arguments of :class:`TorchGeoDataModule`.
    """

    source_name = "pastis"
    task = "time_series_segmentation"
    category_names = PASTIS_CATEGORIES
    output_mode = "aggregate"
    gsd_m = 10.0

    def __init__(
        self,
        root: str = "data/pastis",
        bands: list[str] | None = None,
        num_frames: int = 32,
        train_folds: list[int] | None = None,
        val_folds: list[int] | None = None,
        test_folds: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root=root, **kwargs)
        self.save_hyperparameters()
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}.")
        self.bands = tuple(bands or PASTIS.s2_bands)
        self.frames_per_item = num_frames
        self.folds = {
            "train": tuple(train_folds or (1, 2, 3)),
            "val": tuple(val_folds or (4,)),
            "test": tuple(test_folds or (5,)),
        }
        self._dates: dict[int, list[float]] | None = None

    def band_inputs(self) -> list[tuple[str, tuple[str, ...]]]:
        """Sentinel-2 L2A bands."""
        return [("sentinel2_l2a", self.bands)]

    def num_frames(self) -> int:
        """Every item has ``num_frames`` frames."""
        return self.frames_per_item

    def torchgeo_dataset(self, split: str) -> PASTIS:
        """PASTIS over the split's folds."""
        return PASTIS(
            str(self.root),
            folds=self.folds[split],
            bands=self.bands,
            download=False,
            checksum=False,
        )

    def reader(self, dataset: PASTIS) -> SampleReader:
        """Frames with their dates; void (19) ignored."""
        if self._dates is None:
            self._dates = pastis_dates(self.root)
        return _PastisReader(dataset, self._dates)


# --- Fields of The World -----------------------------------------------------------------

FTW_CATEGORIES = {
    "2-class": ("non_field", "field"),
    "3-class": ("non_field", "field", "field_boundary"),
}
"""FTW's semantic targets: value 0 background, 1 field, 2 field boundary; 3 (unlabeled,
in the presence-only countries) is ignored."""


class _FTWReader(TableReader):
    def frames(self, image: torch.Tensor) -> torch.Tensor:
        # TorchGeo stacks window B (end of season) before window A (start): put A first.
        return image.reshape(2, -1, *image.shape[-2:]).flip(0)


class FTWDataModule(TorchGeoDataModule):
    """Fields of The World: two Sentinel-2 L2A dates per chip, field boundaries.

    Reads TorchGeo's :class:`~torchgeo.datasets.FieldsOfTheWorld` (one folder per
    country with ``s2_images/window_a``, ``window_b``, ``label_masks`` and
    ``chips_<country>.parquet``; reading the parquet index needs ``pyarrow``). Each chip
    is two frames, start of season (window A) then end of season (window B), of the
    R, G, B, NIR bands; the target is one map over both (an aggregate output slot).
    FTW gives no acquisition dates per chip: NaN.

    Args:
        root: folder holding the country folders.
        countries: countries to read (default: every country folder found in ``root``).
        target: ``"3-class"`` (with field boundaries) or ``"2-class"``.
        **kwargs: arguments of :class:`TorchGeoDataModule`.
    """

    source_name = "ftw"
    task = "time_series_segmentation"
    category_names = FTW_CATEGORIES["3-class"]
    output_mode = "aggregate"
    gsd_m = 10.0

    def __init__(
        self,
        root: str = "data/ftw",
        countries: list[str] | None = None,
        target: Literal["2-class", "3-class"] = "3-class",
        **kwargs: Any,
    ) -> None:
        super().__init__(root=root, **kwargs)
        self.save_hyperparameters()
        if target not in FTW_CATEGORIES:
            raise ValueError(f"target must be '2-class' or '3-class', got {target!r}.")
        self.target = target
        self.countries = list(countries) if countries else None
        self.category_names = FTW_CATEGORIES[target]
        self.source_infos = [self.source_info()]

    def chosen_countries(self) -> list[str]:
        """The countries given, or those with a folder in ``root``."""
        if self.countries:
            return self.countries
        found = [c for c in FieldsOfTheWorld.valid_countries if (self.root / c).is_dir()]
        if not found:
            raise FileNotFoundError(
                f"No Fields of The World country folder in {self.root} (expected e.g. "
                f"{self.root / 'austria'}); download the countries first."
            )
        return found

    def band_inputs(self) -> list[tuple[str, tuple[str, ...]]]:
        """Sentinel-2 L2A R, G, B, NIR."""
        return [("sentinel2_l2a", ("B04", "B03", "B02", "B08"))]

    def torchgeo_dataset(self, split: str) -> FieldsOfTheWorld:
        """FTW's split of the chosen countries."""
        return FieldsOfTheWorld(
            str(self.root),
            split=split,
            target=self.target,
            countries=self.chosen_countries(),
            download=False,
            checksum=False,
        )

    def reader(self, dataset: FieldsOfTheWorld) -> SampleReader:
        """Two frames (A, B); unlabeled (3) ignored."""
        classes = len(FTW_CATEGORIES[self.target])
        return _FTWReader(dataset, label_table({i: i for i in range(classes)}), "mask")
