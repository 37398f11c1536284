"""Batches of prediction windows that never mix two scenes, correct under DDP."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from torch.utils.data import BatchSampler, DistributedSampler, Sampler

__all__ = ["JobBatchSampler"]


class JobBatchSampler(BatchSampler):
    """Consecutive windows in batches of ``batch_size`` that never mix two jobs.

    Batches must be homogeneous (one scene: one T, C, task and category set), so a batch
    ends early at the last window of a job.

    Under DDP every scene is predicted whole by one rank: the datamodule gives each rank
    its own jobs (every ``world_size``-th, see
    :class:`~stsun_lightning.data.ScenePredictionMixin`) and this sampler serves every
    window of them, in order. With Lightning's default ``use_distributed_sampler=True``,
    Lightning rebuilds this sampler around a ``DistributedSampler`` that would deal this
    rank's windows out again, one in ``world_size``, splitting each scene over the ranks
    and dropping the rest of it; such a sampler is recognised here and every window of the
    dataset is served instead, so both settings predict the same windows.

    Args:
        sampler: the window indices, in order (a ``DistributedSampler`` from Lightning is
            replaced by every index of its dataset, as above).
        batch_size: windows per batch at most.
        drop_last: must be False (every window is predicted).
        job_starts: index of the first window of each job.
        rank: the rank whose jobs the dataset holds.
        world_size: ranks; the dataset holds every ``world_size``-th job.
    """

    def __init__(
        self,
        sampler: Sampler[int],
        batch_size: int,
        drop_last: bool = False,
        job_starts: Sequence[int] = (),
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if drop_last:
            raise ValueError("Prediction never drops windows: drop_last must be False.")
        if isinstance(sampler, DistributedSampler) and (
            sampler.rank != rank or sampler.num_replicas != world_size
        ):
            raise ValueError(
                f"The prediction windows were split for rank {rank} of {world_size}, but the "
                f"DistributedSampler is for rank {sampler.rank} of {sampler.num_replicas}: "
                "build the predict dataloader inside trainer.predict, or set the Trainer's "
                "use_distributed_sampler=False."
            )
        super().__init__(sampler, batch_size, drop_last)
        self.job_starts = frozenset(job_starts)
        self.rank, self.world_size = rank, world_size

    def _indices(self) -> Iterator[int]:
        if isinstance(self.sampler, DistributedSampler):
            # Lightning's sampler over the sequential one this was built with: its dataset
            # stands for that sampler (len = every window of this rank's jobs).
            return iter(range(len(self.sampler.dataset)))  # type: ignore[arg-type]
        return iter(self.sampler)

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        for index in self._indices():
            if batch and (len(batch) == self.batch_size or index in self.job_starts):
                yield batch
                batch = []
            batch.append(index)
        if batch:
            yield batch

    def __len__(self) -> int:
        return sum(1 for _ in iter(self))
