"""Whole scenes to predict, cut into overlapping windows that a DataLoader reads in order.

A datamodule that can predict whole scenes lists them as :class:`PredictionJob` s (a scene,
how to read it, what to predict) and inherits :class:`ScenePredictionMixin`, whose
``predict_dataloader`` serves the windows of every pending job, row band by row band.
:class:`~stsun_lightning.predict.callback.GeoTiffPredictionWriter` blends them back into
rasters as they arrive, so memory is bounded by a row band, never by the scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from stsun_lightning.batch import Batch
from stsun_lightning.data.datasets.items import window_batch
from stsun_lightning.data.datasets.scenes import Scene
from stsun_lightning.data.sources import SourceInfo
from stsun_lightning.data.spec import OutputKindName
from stsun_lightning.errors import ConfigError

__all__ = ["PredictionJob", "SceneWindowDataset", "WindowRef", "window_starts"]


@dataclass(frozen=True)
class PredictionJob:
    """One scene to predict.

    Attributes:
        scene: the scene: its inputs as one series, and the extent the outputs cover.
        source: the task and the categories (or variables) to predict, by name.
        outputs: "state" (at the last date), "change" (first to last date),
            "aggregate" (over the series) or "per_date" (one map per date).
        stem: output path relative to the writer's folder, without suffix.
    """

    scene: Scene
    source: SourceInfo
    outputs: OutputKindName
    stem: str

    @property
    def map_names(self) -> list[str]:
        """One name per output map (To): the dates for "per_date", else ``[outputs]``."""
        if self.outputs == "per_date":
            return [
                f.day.isoformat() if f.day else f"date_{i}"
                for i, f in enumerate(self.scene.series.frames)
            ]
        return [self.outputs]

    @property
    def channel_names(self) -> list[str]:
        """The categories (classification) or variables (regression) predicted."""
        return list(self.source.categories or self.source.variables)

    @property
    def height(self) -> int:
        """Rows of the output grid."""
        return self.scene.extent.height

    @property
    def width(self) -> int:
        """Columns of the output grid."""
        return self.scene.extent.width

    def profile(self) -> dict[str, Any]:
        """``crs``, ``transform``, ``height`` and ``width`` of the output grid."""
        return self.scene.extent.profile()


@dataclass(frozen=True)
class WindowRef:
    """Where a window lies: its job and its top-left pixel."""

    job: int
    row: int
    col: int


class SceneWindowDataset(Dataset[Batch]):
    """Windows of several scenes, each a one-item :class:`Batch`, in writing order.

    Windows of a job come row band by row band, left to right; jobs come one after the
    other. Each is read through its scene's series, exactly as training reads patches.

    Args:
        jobs: the scenes to predict.
        vocabularies: ``{"tasks", "categories", "variables"}`` names that batch rows index.
        window: window side in pixels.
        overlap: pixels shared by neighbouring windows (blended by the writer).
    """

    def __init__(
        self,
        jobs: list[PredictionJob],
        vocabularies: dict[str, list[str]],
        window: int,
        overlap: int,
    ) -> None:
        if not 0 <= overlap < window:
            raise ConfigError(f"Prediction overlap must be in [0, window={window}), got {overlap}.")
        self.jobs, self.window, self.overlap = jobs, window, overlap
        self.windows: list[WindowRef] = []
        self.job_starts: list[int] = []
        self._rows: list[tuple[int, list[int], bool]] = []
        for index, job in enumerate(jobs):
            self.job_starts.append(len(self.windows))
            stride = window - overlap
            for row in window_starts(job.height, window, stride):
                for col in window_starts(job.width, window, stride):
                    self.windows.append(WindowRef(index, row, col))
            source = job.source
            names = source.categories if source.is_classification else source.variables
            kind = "categories" if source.is_classification else "variables"
            self._rows.append(
                (
                    vocabularies["tasks"].index(source.task),
                    [vocabularies[kind].index(n) for n in names],
                    source.is_classification,
                )
            )

    def __len__(self) -> int:
        return len(self.windows)

    def bounds(self, index: int) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of window ``index`` in its scene's grid CRS."""
        ref = self.windows[index]
        extent = self.jobs[ref.job].scene.extent
        return extent.window_bounds(ref.row, ref.col, self.window, self.window)

    def __getitem__(self, index: int) -> Batch:
        ref = self.windows[index]
        job = self.jobs[ref.job]
        scene = job.scene
        window = scene.series.read(self.bounds(index))
        task_row, rows, classification = self._rows[ref.job]
        return window_batch(
            [scene.series.band_metadata],
            scene.gsd_m,
            scene.series.dates,
            window.image,
            window.valid,
            task_row,
            job.outputs,
            rows,
            classification,
            job.source.name,
            None,
            window.time_mask,
            window.band_mask,
        )


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows covering ``length`` pixels.

    The last window ends at the raster's edge (it is shifted back, not padded), so
    every window except on rasters smaller than one window lies fully inside.

    Args:
        length: raster size along one axis.
        window: window size.
        stride: distance between window starts (window - overlap), > 0.

    Returns:
        Sorted, unique starts.
    """
    if stride <= 0:
        raise ConfigError(
            f"Window stride must be > 0 (overlap smaller than the window), got {stride}."
        )
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return [*starts, length - window]
