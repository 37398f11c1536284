"""Patches of a series of inputs and labels, each a one-item batch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import shapely
import torch
from torch.utils.data import Dataset

from stsun_lightning.batch import Batch
from stsun_lightning.data.datasets.items import (
    label_lookup,
    label_target,
    target_tensor,
    window_batch,
)
from stsun_lightning.data.datasets.series import GeoTiffSeries
from stsun_lightning.data.io.files import gsd_metres
from stsun_lightning.data.sources import SourceInfo
from stsun_lightning.data.spec import LabelSpec
from stsun_lightning.data.transforms.augment import augment_patch

__all__ = ["GeoTiffPatchDataset"]


class GeoTiffPatchDataset(Dataset[Batch]):
    """Patches of a :class:`GeoTiffSeries`, each a one-item :class:`Batch`.

    Args:
        series: the inputs and labels.
        labels: the labels' spec.
        source: the source (task, categories or variables).
        vocabularies: the model's name lists (rows of tasks, categories, variables).
        corners: (left, top) of each patch in grid coordinates.
        patch_size: side of a patch in pixels.
        augment: random flips and 90° rotations.
        seed: seed of the augmentation.
    """

    def __init__(
        self,
        series: GeoTiffSeries,
        labels: LabelSpec,
        source: SourceInfo,
        vocabularies: dict[str, list[str]],
        corners: list[tuple[float, float]],
        patch_size: int,
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        self.series, self.labels, self.source = series, labels, source
        self.corners, self.patch_size = corners, patch_size
        self.augment, self.seed = augment, seed
        self.task_row = vocabularies["tasks"].index(source.task)
        names = source.categories if source.is_classification else source.variables
        self.rows = [
            vocabularies["categories" if source.is_classification else "variables"].index(n)
            for n in names
        ]
        self.lut = (
            label_lookup(labels.classes or {}, labels.ignore_values, source.categories)
            if source.is_classification
            else None
        )
        centre = shapely.box(*self.bounds(0)).centroid if corners else None
        latitude = centre.y if centre is not None and series.grid.crs.is_geographic else 0.0
        self.gsd_m = gsd_metres(series.grid.crs, series.grid.res[0], latitude)
        self._template: Batch | None = None  # an item with every frame real
        labels_index = series.labels.index if series.labels is not None else None
        self._label_path = (
            Path(labels_index.filepath.iloc[0]) if labels_index is not None else Path()
        )  # named in label errors

    def __len__(self) -> int:
        return len(self.corners)

    def bounds(self, index: int) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of patch ``index``."""
        left, top = self.corners[index]
        rx, ry = self.series.grid.res
        return left, top - self.patch_size * ry, left + self.patch_size * rx, top

    def __getitem__(self, index: int) -> Batch:
        bounds = self.bounds(index)
        image, valid, time_mask = self.series.read(bounds)
        target = self._target(bounds)
        if target is not None:  # no label where the inputs have no data
            target[..., ~valid] = -1 if self.lut is not None else np.nan
        if self.augment:
            image, valid, target = augment_patch((self.seed, 7, index), image, valid, target)
        if self._template is not None and time_mask.all():
            # Only the window's arrays differ from the template (metadata, dates, rows).
            return dataclasses.replace(
                self._template,
                image=torch.from_numpy(image)[None],
                valid_mask=torch.from_numpy(valid)[None],
                target=target_tensor(target, self.source.is_classification),
            )
        batch = window_batch(
            self.series.metadata,
            self.gsd_m,
            self.series.dates,
            image,
            valid,
            self.task_row,
            self.labels.outputs,  # type: ignore[arg-type]
            self.rows,
            self.source.is_classification,
            self.source.name,
            target,
            time_mask,
        )
        if time_mask.all():
            self._template = batch
        return batch

    def _target(self, bounds: tuple[float, float, float, float]) -> np.ndarray | None:
        """(To, h, w) classes (-1 = ignore) or (To, V, h, w) values (NaN = ignore)."""
        dataset = self.series.labels
        if dataset is None:
            return None
        if self.labels.outputs == "per_date":
            raw = dataset.read(bounds, self.series.days)  # (T, V, h, w)
        else:
            raw = dataset.read_latest(bounds)[None]  # (1, V, h, w)
        path = self._label_path
        if self.lut is None:
            return label_target(raw, None, self.labels.ignore_values, path, self.source.name)
        target = np.full(raw.shape, -1, dtype=np.int64)
        known = np.isfinite(raw)
        target[known] = label_target(
            raw[known].astype(np.int64), self.lut, (), path, self.source.name
        )
        return target[:, 0]
