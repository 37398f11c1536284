"""Whole-scene prediction for any datamodule: ``predict_dataloader`` over pending jobs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from torch.utils.data import DataLoader, SequentialSampler

from stsun_lightning.batch import collate_batches
from stsun_lightning.data.datasets.scene_statistics import scene_statistics, tile_windows
from stsun_lightning.data.datasets.scenes import Scene
from stsun_lightning.data.datasets.windows import PredictionJob, SceneWindowDataset
from stsun_lightning.data.io.statistics import Statistics, given_statistics
from stsun_lightning.data.record import SourceRecord, choose_source
from stsun_lightning.data.samplers.jobs import JobBatchSampler
from stsun_lightning.data.spec import InputSpec

__all__ = ["ScenePredictionMixin", "StatisticsChoice", "prediction_statistics"]

StatisticsChoice = dict[str, dict[str, list[float]]] | Literal["checkpoint", "rasters"]
"""Where prediction's band statistics come from: typed in (per input ``{mean, std}``,
physical units), the checkpoint's (what training used), or the rasters being predicted."""


def prediction_statistics(
    choice: StatisticsChoice | Mapping[str, Any],
    specs: Mapping[str, InputSpec],
    scenes: Sequence[Scene],
    checkpoint_sources: Mapping[str, SourceRecord],
    own: Sequence[str] = (),
    wanted: str | None = None,
) -> Statistics:
    """The band statistics to predict ``scenes`` with.

    Args:
        choice: ``"checkpoint"``, ``"rasters"`` or statistics typed in.
        specs: the inputs.
        scenes: the scenes to predict (read for ``"rasters"``).
        checkpoint_sources: the loaded checkpoint's record.
        own: the datamodule's own source names (tried first in the record).
        wanted: a source of the record named by the user.

    Raises:
        ConfigError: the checkpoint has no statistics for an input or band (naming it,
            and the two other choices).
    """
    if isinstance(choice, Mapping):
        return given_statistics(choice, {n: s.bands for n, s in specs.items()})
    if choice == "rasters":
        return scene_statistics([(s, b) for s in scenes for b in tile_windows(s, 256)])
    name = choose_source(checkpoint_sources, specs, wanted, own)
    return checkpoint_sources[name].statistics_for(specs, name)


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
        predicted and written whole by exactly one rank, with Lightning's
        ``use_distributed_sampler`` on or off (:class:`JobBatchSampler`). Each rank checks
        only its own jobs for :meth:`skip_predictions`, so a scene another rank is
        finishing never moves a job from one rank to another.
        """
        jobs = self.prediction_jobs()
        trainer = getattr(self, "trainer", None)
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        jobs = jobs[rank::world_size]
        skip = self._skip_prediction
        jobs = [j for j in jobs if not (skip and skip(j))]
        dataset = SceneWindowDataset(
            jobs, self.vocabularies, self.predict_window, self.predict_overlap
        )
        sampler = JobBatchSampler(
            SequentialSampler(dataset), self.predict_batch_size, job_starts=dataset.job_starts,
            rank=rank, world_size=world_size,
        )  # fmt: skip
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate_batches,
            num_workers=self.predict_num_workers,
        )
