"""Scenes of aligned GeoTIFFs (inputs per date, and a label) read as patches.

A scene is a set of rasters on one grid: for each input (a sensor and its bands) one
multi-band GeoTIFF per date, and optionally a label raster. Patches are read window by
window with rasterio; file handles are opened lazily in each process, never shared
with DataLoader workers forked after they were opened.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import rasterio.errors
import torch
from rasterio.windows import Window
from torch import Tensor
from torch.utils.data import Dataset

from stsun_lightning.data.batch import Batch, OutputKind
from stsun_lightning.data.sensors import Sensor
from stsun_lightning.data.sources import SourceInfo

__all__ = [
    "BandStatistics",
    "Handles",
    "Scene",
    "SceneInput",
    "ScenePatchDataset",
    "SceneReader",
    "augment_patch",
    "days_since_epoch",
    "label_lookup",
    "label_target",
    "scene_batch",
    "target_tensor",
    "window_batch",
]

_EPOCH = date(1970, 1, 1)


def days_since_epoch(day: date | None) -> float:
    """Days from 1970-01-01 to ``day``; NaN for an unknown date (None)."""
    return float("nan") if day is None else float((day - _EPOCH).days)


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


@dataclass
class BandStatistics:
    """Per-band normalisation: ``(value * scale - mean) / std`` for each input's bands."""

    mean: dict[str, list[float]] = field(default_factory=dict)
    std: dict[str, list[float]] = field(default_factory=dict)
    scale: dict[str, float] = field(default_factory=dict)


def _close_all(datasets: dict[Any, Any]) -> None:
    for dataset in datasets.values():
        dataset.close()
    datasets.clear()


class Handles:
    """Open rasterio datasets of this process (re-opened after a fork).

    Handles inherited through ``fork`` are never used: a DataLoader worker opens its
    own (shared handles return wrong pixels or crash). They are closed by a finaliser
    that runs at exit, before the interpreter tears down the modules GDAL needs to
    close them cleanly.

    Args:
        opener: opens a path (default: ``rasterio.open``); must be picklable.
    """

    def __init__(self, opener: Callable[[str], Any] | None = None) -> None:
        self.opener = opener
        self.pid = -1
        self.open: dict[Any, Any] = {}
        self._finalizer = weakref.finalize(self, _close_all, self.open)

    def get(self, path: Any) -> Any:
        """The open dataset of ``path`` in this process."""
        if self.pid != os.getpid():
            self.pid, self.open = os.getpid(), {}
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, _close_all, self.open)
        if path not in self.open:
            if self.opener is not None:
                self.open[path] = self.opener(str(path))
            else:
                try:
                    self.open[path] = rasterio.open(path)
                except rasterio.errors.RasterioIOError as error:
                    raise OSError(f"Cannot open raster {path}: {error}") from None
        return self.open[path]

    def __getstate__(self) -> dict:
        return {"opener": self.opener}  # never pickle open handles into worker processes

    def __setstate__(self, state: dict) -> None:
        self.__init__(state.get("opener"))


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
        """
        shape = (int(window.height), int(window.width))
        frames, valid = [], np.ones(shape, dtype=bool)
        for t in range(len(scene.dates)):
            bands = []
            for name, scene_input in scene.inputs.items():
                reader = self.handles.get(scene_input.files[t])
                raw = reader.read(window=window, masked=True, boundless=True).astype(np.float32)
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


def label_lookup(
    classes: dict[int, str], ignore_values: tuple[float, ...], categories: tuple[str, ...]
) -> dict[int, int]:
    """Label value -> index into ``categories`` (-1 for ignored values)."""
    lut = {int(v): categories.index(name) for v, name in classes.items()}
    lut.update({int(v): -1 for v in ignore_values})
    return lut


def label_target(
    raw: np.ndarray,
    lut: dict[int, int] | None,
    ignore_values: tuple[float, ...],
    path: Path,
    source: str,
) -> np.ndarray:
    """Raw label values as a target.

    Args:
        raw: (..., h, w) label values as stored.
        lut: value -> class index (-1 = ignore) for class labels; None for values.
        ignore_values: values that mean "no label" (for value labels).
        path: the label file (named in errors).
        source: the source name (named in errors).

    Returns:
        int64 class indices (-1 = ignore), or float32 values (NaN = ignore).

    Raises:
        ValueError: a value that is neither a declared class nor ignored, naming the
            value, the file and the declared values.
    """
    if lut is None:
        return np.where(np.isin(raw, ignore_values), np.nan, raw).astype(np.float32)
    values = np.asarray(raw).astype(np.int64, copy=False)
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    lookup = np.full(high - low + 1, -2, dtype=np.int64)  # -2: undeclared
    for value, index in lut.items():
        if low <= value <= high:
            lookup[value - low] = index
    target = lookup[values - low]
    if bool((target == -2).any()):
        value = int(values[target == -2][0])
        raise ValueError(
            f"Label value {value} in {path} is not a declared class of source "
            f"{source!r} (declared values: {sorted(lut)}); declare it or add it to ignore_values."
        )
    return target


def augment_patch(
    seed: tuple[int, ...], image: np.ndarray, valid: np.ndarray, target: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The same random flip and 90° rotation (drawn from ``seed``) of a patch's arrays.

    Args:
        seed: seed of the draw (e.g. ``(seed, index)``), so a patch is reproducible.
        image: (..., h, w).
        valid: (h, w).
        target: (..., h', w') or None.
    """
    rng = np.random.default_rng(seed)
    k, flip = int(rng.integers(4)), bool(rng.integers(2))

    def apply(a: np.ndarray) -> np.ndarray:
        a = np.rot90(a, k, axes=(-2, -1))
        return np.ascontiguousarray(a[..., ::-1] if flip else a)

    return apply(image), apply(valid), None if target is None else apply(target)


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


def window_batch(
    metadata: list[dict[str, Tensor]],
    gsd_m: float,
    dates: list[float],
    image: np.ndarray,
    valid: np.ndarray,
    task_row: int,
    outputs: Literal["state", "change", "aggregate", "per_date"],
    rows: list[int],
    classification: bool,
    source: str,
    target: np.ndarray | None = None,
    time_mask: np.ndarray | None = None,
) -> Batch:
    """A one-item batch of a window.

    Args:
        metadata: per input, its bands' metadata (``Sensor.metadata(bands)``), in the
            order of the image's channels.
        gsd_m: metres per pixel.
        dates: (T,) days since 1970-01-01 of each frame, NaN where unknown.
        image: (T, C, h, w) normalised values.
        valid: (h, w) bool.
        task_row: row of the task vocabulary.
        outputs: "state" (at the last real frame), "change" (first to last real frame),
            "aggregate", or "per_date" (a state at every frame: To = T).
        rows: category rows (classification) or variable rows (regression).
        classification: whether ``rows`` are categories.
        source: source name.
        target: labels (long, -1 ignored) as (h', w') or (To, h', w'); values (float,
            NaN ignored) as (h', w'), (To, h', w') or (To, V, h', w'); or None.
        time_mask: (T,) bool real frames (default: all).

    Returns:
        The batch, B = 1, To = 1 (T for "per_date").
    """
    t = len(dates)
    real = np.ones(t, dtype=bool) if time_mask is None else np.asarray(time_mask, dtype=bool)
    frames = np.flatnonzero(real)
    first, last = (int(frames[0]), int(frames[-1])) if frames.size else (0, t - 1)
    if outputs == "per_date":
        slots = [[float(OutputKind.STATE), float(i), float(i)] for i in range(t)]
    else:
        kind, ref_a, ref_b = {
            "state": (OutputKind.STATE, last, last),
            "change": (OutputKind.CHANGE, first, last),
            "aggregate": (OutputKind.AGGREGATE, -1, -1),
        }[outputs]
        slots = [[float(kind), float(ref_a), float(ref_b)]]
    fields: dict[str, object] = dict(
        image=torch.from_numpy(image)[None],
        wavelength_nm=torch.cat([m["wavelength_nm"] for m in metadata])[None],
        bandwidth_nm=torch.cat([m["bandwidth_nm"] for m in metadata])[None],
        modality=torch.cat([m["modality"] for m in metadata])[None],
        band_mask=torch.ones(1, image.shape[1], dtype=torch.bool),
        gsd_m=torch.tensor([gsd_m], dtype=torch.float32),
        dates=torch.tensor([dates], dtype=torch.float32),
        time_mask=torch.from_numpy(real)[None],
        valid_mask=torch.from_numpy(valid)[None],
        task=torch.tensor([task_row]),
        outputs=torch.tensor([slots]),
        source=[source],
    )
    if classification:
        fields["categories"] = torch.tensor([rows])
        fields["category_mask"] = torch.ones(1, len(rows), dtype=torch.bool)
    else:
        fields["variables"] = torch.tensor([rows])
    fields["target"] = target_tensor(target, classification)
    return Batch(**fields)


def target_tensor(target: np.ndarray | None, classification: bool) -> Tensor | None:
    """A one-item batch's target from a window's labels (see :func:`window_batch`).

    Returns:
        (1, To, h', w') classes or (1, To, V, h', w') values, or None.
    """
    if target is None:
        return None
    if target.ndim == 2:
        target = target[None]  # (To = 1, h', w')
    if not classification and target.ndim == 3:
        target = target[:, None]  # (To, V = 1, h', w')
    return torch.from_numpy(target)[None]
