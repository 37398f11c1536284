"""Whole scenes to predict, cut into overlapping windows that a DataLoader reads in order.

A datamodule that can predict whole scenes lists them as :class:`PredictionJob` s (a scene,
how to read it, what to predict) and inherits :class:`ScenePredictionMixin`, whose
``predict_dataloader`` serves the windows of every pending job, row band by row band.
:class:`~stsun_lightning.predict.callback.GeoTiffPredictionWriter` blends them back into
rasters as they arrive, so memory is bounded by a row band, never by the scene.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from rasterio.windows import Window
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler

from stsun_lightning.data.batch import Batch, collate_batches
from stsun_lightning.data.scenes import Scene, SceneReader, scene_batch
from stsun_lightning.data.sources import SourceInfo
from stsun_lightning.predict.windows import window_starts

__all__ = [
    "JobBatchSampler",
    "OutputKindName",
    "PredictionJob",
    "ScenePredictionMixin",
    "SceneWindowDataset",
    "WindowRef",
]

OutputKindName = Literal["state", "change", "aggregate", "per_date"]


@dataclass(frozen=True)
class PredictionJob:
    """One scene to predict.

    Attributes:
        scene: the scene (its rasters share one grid).
        reader: reads normalised windows of the scene.
        source: the task and the categories (or variables) to predict, by name.
        outputs: "state" (at the last date), "change" (first to last date),
            "aggregate" (over the series) or "per_date" (one map per date).
        stem: output path relative to the writer's folder, without suffix.
    """

    scene: Scene
    reader: SceneReader
    source: SourceInfo
    outputs: OutputKindName
    stem: str

    @property
    def map_names(self) -> list[str]:
        """One name per output map (To): the dates for "per_date", else ``[outputs]``."""
        if self.outputs == "per_date":
            return [d.isoformat() if d else f"date_{i}" for i, d in enumerate(self.scene.dates)]
        return [self.outputs]

    @property
    def channel_names(self) -> list[str]:
        """The categories (classification) or variables (regression) predicted."""
        return list(self.source.categories or self.source.variables)


@dataclass(frozen=True)
class WindowRef:
    """Where a window lies: its job and its top-left pixel."""

    job: int
    row: int
    col: int


class SceneWindowDataset(Dataset[Batch]):
    """Windows of several scenes, each a one-item :class:`Batch`, in writing order.

    Windows of a job come row band by row band, left to right; jobs come one after the
    other. Windows at the right and bottom edges reach past the raster; what lies
    outside is invalid.

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
            raise ValueError(f"Prediction overlap must be in [0, window={window}), got {overlap}.")
        self.jobs, self.window, self.overlap = jobs, window, overlap
        self.windows: list[WindowRef] = []
        self.job_starts: list[int] = []
        self._rows: list[tuple[int, list[int], bool]] = []
        for index, job in enumerate(jobs):
            self.job_starts.append(len(self.windows))
            stride = window - overlap
            for row in window_starts(job.scene.height, window, stride):
                for col in window_starts(job.scene.width, window, stride):
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

    def __getitem__(self, index: int) -> Batch:
        ref = self.windows[index]
        job = self.jobs[ref.job]
        image, valid = job.reader.read(
            job.scene, Window(ref.col, ref.row, self.window, self.window)
        )
        task_row, rows, classification = self._rows[ref.job]
        return scene_batch(
            job.scene, image, valid, task_row, job.outputs, rows, classification, job.source.name
        )


class JobBatchSampler(BatchSampler):
    """Consecutive windows in batches of ``batch_size`` that never mix two jobs.

    Batches must be homogeneous (one scene: one T, C, task and category set), so a batch
    ends early at the last window of a job.

    Args:
        sampler: the window indices, in order.
        batch_size: windows per batch at most.
        drop_last: must be False (every window is predicted).
        job_starts: index of the first window of each job.
    """

    def __init__(
        self,
        sampler: Sampler[int],
        batch_size: int,
        drop_last: bool = False,
        job_starts: Sequence[int] = (),
    ) -> None:
        if drop_last:
            raise ValueError("Prediction never drops windows: drop_last must be False.")
        super().__init__(sampler, batch_size, drop_last)
        self.job_starts = frozenset(job_starts)

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        for index in self.sampler:
            if batch and (len(batch) == self.batch_size or index in self.job_starts):
                yield batch
                batch = []
            batch.append(index)
        if batch:
            yield batch

    def __len__(self) -> int:
        return sum(1 for _ in iter(self))


class ScenePredictionMixin(ABC):
    """Gives a datamodule a ``predict_dataloader`` over the windows of whole scenes.

    The datamodule implements :meth:`prediction_jobs` and sets ``vocabularies`` and the
    ``predict_*`` attributes. A writer callback may call :meth:`skip_predictions` before
    the dataloader is built, so that scenes already written are not read again.
    """

    vocabularies: dict[str, list[str]]
    predict_window: int = 256
    predict_overlap: int = 64
    predict_batch_size: int = 4
    predict_num_workers: int = 0
    _skip_prediction: Callable[[PredictionJob], bool] | None = None

    @abstractmethod
    def prediction_jobs(self) -> list[PredictionJob]:
        """The scenes to predict, with how to read them and what to predict."""

    def skip_predictions(self, skip: Callable[[PredictionJob], bool]) -> None:
        """Leave out the jobs for which ``skip(job)`` is true (e.g. outputs complete)."""
        self._skip_prediction = skip

    def predict_dataloader(self) -> DataLoader:
        """Windows of every pending job, in order (never shuffled: the writer streams).

        Under DDP each rank takes every ``world_size``-th job, so every scene is read,
        predicted and written by exactly one rank.
        """
        jobs = self.prediction_jobs()
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.world_size > 1:
            jobs = jobs[trainer.global_rank :: trainer.world_size]
        skip = self._skip_prediction
        jobs = [j for j in jobs if not (skip and skip(j))]
        dataset = SceneWindowDataset(
            jobs, self.vocabularies, self.predict_window, self.predict_overlap
        )
        sampler = JobBatchSampler(
            SequentialSampler(dataset), self.predict_batch_size, job_starts=dataset.job_starts
        )
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate_batches,
            num_workers=self.predict_num_workers,
        )
