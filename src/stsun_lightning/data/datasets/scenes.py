"""Scenes of aligned GeoTIFFs (inputs per date, and a label) read as patches.

A scene is a set of rasters on one grid: for each input (a sensor and its bands) one
multi-band GeoTIFF per date, and optionally a label raster. Patches are read window by
window with rasterio; file handles are opened lazily in each process, never shared
with DataLoader workers forked after they were opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio.errors
from rasterio.windows import Window
from torch.utils.data import Dataset

from stsun_lightning.batch import Batch
from stsun_lightning.data.datasets.items import label_lookup, label_target, window_batch
from stsun_lightning.data.io.files import days_since_epoch
from stsun_lightning.data.io.handles import Handles
from stsun_lightning.data.io.statistics import BandStatistics
from stsun_lightning.data.sensors import Sensor
from stsun_lightning.data.sources import SourceInfo
from stsun_lightning.data.transforms.augment import augment_patch
from stsun_lightning.errors import unreadable_file_error

__all__ = ["Scene", "SceneInput", "ScenePatchDataset", "SceneReader", "scene_batch"]


@dataclass(frozen=True)
class SceneInput:
    """One input of a scene: a sensor, the bands in the files, and one file per date."""

    sensor: Sensor
    bands: tuple[str, ...]
    files: tuple[Path, ...]


@dataclass(frozen=True)
class Scene:
    """Aligned rasters of one place.

    Attributes:
        name: scene name.
        gsd_m: metres per pixel of the grid.
        dates: acquisition date of each frame (None where unknown).
        inputs: inputs by name, each with one file per date.
        label: label raster, or None.
        height: rows of the grid.
        width: columns of the grid.
    """

    name: str
    gsd_m: float
    dates: tuple[date | None, ...]
    inputs: dict[str, SceneInput]
    label: Path | None
    height: int
    width: int


class SceneReader:
    """Reads normalised windows of a scene's inputs, from any process.

    Args:
        statistics: band normalisation of each input.
    """

    def __init__(self, statistics: BandStatistics) -> None:
        self.statistics = statistics
        self.handles = Handles()
        # Per input: (scale, mean (C, 1, 1), std (C, 1, 1)), built once, not per window.
        self._normalisation = {
            name: (
                np.float32(statistics.scale[name]),
                np.asarray(statistics.mean[name], np.float32)[:, None, None],
                np.asarray(statistics.std[name], np.float32)[:, None, None],
            )
            for name in statistics.mean
        }

    def read(self, scene: Scene, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read one window of every input and date.

        Windows may reach past the raster's edges; what lies outside is invalid.

        Args:
            scene: the scene.
            window: the window in the scene's grid.

        Returns:
            image (T, C, h, w) float32 normalised (NaN where invalid) and valid (h, w) bool,
            True where every band of every date has data.

        Raises:
            InputFileError: a file that cannot be read (corrupt or truncated), naming it.
        """
        shape = (int(window.height), int(window.width))
        frames, valid = [], np.ones(shape, dtype=bool)
        for t in range(len(scene.dates)):
            bands = []
            for name, scene_input in scene.inputs.items():
                path = scene_input.files[t]
                try:
                    raw = self.handles.get(path).read(window=window, masked=True, boundless=True)
                except rasterio.errors.RasterioIOError as error:
                    raise unreadable_file_error(path, error, input_name=name) from None
                raw = raw.astype(np.float32)
                data = raw.filled(np.nan)
                valid &= ~np.ma.getmaskarray(raw).any(0) & np.isfinite(data).all(0)
                scale, mean, std = self._normalisation[name]
                bands.append((data * scale - mean) / std)
            frames.append(np.concatenate(bands, 0))
        return np.stack(frames), valid


class ScenePatchDataset(Dataset[Batch]):
    """Patches of scenes of one source, each a one-item :class:`Batch`.

    Args:
        scenes: the scenes (all of one source).
        source: what the source offers (task, categories or variables).
        vocabularies: ``{"tasks", "categories", "variables"}`` name lists of the model.
        label_classes: label value -> category name (class labels only).
        ignore_values: label values that mean "no label".
        outputs: ``"state"`` (state at the last date), ``"change"`` (first to last date)
            or ``"aggregate"``.
        statistics: band normalisation of each input.
        patch_size: side of a patch in pixels.
        mode: ``"random"`` windows (``samples_per_scene`` of them per scene, augmented
            by flips and rotations) or a ``"grid"`` of non-overlapping windows.
        samples_per_scene: random windows per scene.
        seed: seed of the random windows.
        augment: random flips and 90° rotations (random mode only).
    """

    def __init__(
        self,
        scenes: list[Scene],
        source: SourceInfo,
        vocabularies: dict[str, list[str]],
        label_classes: dict[int, str],
        ignore_values: tuple[float, ...],
        outputs: Literal["state", "change", "aggregate"],
        statistics: BandStatistics,
        patch_size: int,
        mode: Literal["random", "grid"] = "random",
        samples_per_scene: int = 64,
        seed: int = 0,
        augment: bool = True,
    ) -> None:
        self.scenes = scenes
        self.source = source
        self.patch_size = patch_size
        self.outputs = outputs
        self.augment = augment and mode == "random"
        self.seed = seed
        self.task_row = vocabularies["tasks"].index(source.task)
        self.category_rows = [vocabularies["categories"].index(c) for c in source.categories]
        self.variable_rows = [vocabularies["variables"].index(v) for v in source.variables]
        self.label_lut = (
            self._label_lut(label_classes, ignore_values) if source.is_classification else None
        )
        self.ignore_values = ignore_values
        self.windows = self._windows(mode, samples_per_scene)
        self.reader = SceneReader(statistics)

    def _label_lut(self, classes: dict[int, str], ignore: tuple[float, ...]) -> dict[int, int]:
        return label_lookup(classes, ignore, self.source.categories)

    def _windows(self, mode: str, samples_per_scene: int) -> list[tuple[int, int, int]]:
        p = self.patch_size
        windows = []
        for i, scene in enumerate(self.scenes):
            if mode == "grid":
                windows += [
                    (i, r, c)
                    for r in range(0, scene.height - p + 1, p)
                    for c in range(0, scene.width - p + 1, p)
                ]
            else:
                rng = np.random.default_rng((self.seed, i))
                rows = rng.integers(0, scene.height - p + 1, samples_per_scene)
                cols = rng.integers(0, scene.width - p + 1, samples_per_scene)
                windows += [(i, int(r), int(c)) for r, c in zip(rows, cols, strict=True)]
        return windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> Batch:
        scene_index, row, col = self.windows[index]
        scene = self.scenes[scene_index]
        window = Window(col, row, self.patch_size, self.patch_size)
        image, valid = self.reader.read(scene, window)
        target = self._read_label(scene, window)
        if target is not None:  # no label where the input has no data
            target[~valid] = -1 if self.label_lut is not None else np.nan
        if self.augment:
            image, valid, target = augment_patch((self.seed, 7, index), image, valid, target)
        return self._batch(scene, image, valid, target)

    def _read_label(self, scene: Scene, window: Window) -> np.ndarray | None:
        if scene.label is None:
            return None
        raw = self.reader.handles.get(scene.label).read(1, window=window)
        return label_target(raw, self.label_lut, self.ignore_values, scene.label, self.source.name)

    def _batch(
        self, scene: Scene, image: np.ndarray, valid: np.ndarray, target: np.ndarray | None
    ) -> Batch:
        rows = self.category_rows if self.source.is_classification else self.variable_rows
        return scene_batch(
            scene,
            image,
            valid,
            self.task_row,
            self.outputs,
            rows,
            self.source.is_classification,
            self.source.name,
            target,
        )


def scene_batch(
    scene: Scene,
    image: np.ndarray,
    valid: np.ndarray,
    task_row: int,
    outputs: Literal["state", "change", "aggregate", "per_date"],
    rows: list[int],
    classification: bool,
    source: str,
    target: np.ndarray | None = None,
) -> Batch:
    """A one-item batch of a window of ``scene`` (see :func:`window_batch`)."""
    return window_batch(
        [si.sensor.metadata(si.bands) for si in scene.inputs.values()],
        scene.gsd_m,
        [days_since_epoch(d) for d in scene.dates],
        image,
        valid,
        task_row,
        outputs,
        rows,
        classification,
        source,
        target,
    )
