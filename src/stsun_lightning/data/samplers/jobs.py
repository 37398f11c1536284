"""Batches of prediction windows that never mix two scenes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from torch.utils.data import BatchSampler, Sampler

__all__ = ["JobBatchSampler"]


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
