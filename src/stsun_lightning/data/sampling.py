"""Homogeneous batches from many sources, mixed by a temperature over their sizes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["SourceBatchSampler", "source_probabilities"]


def source_probabilities(sizes: Sequence[int], temperature: float) -> np.ndarray:
    """How often each source is drawn: proportional to ``size ** (1 / temperature)``.

    Temperature 1 samples in proportion to size, larger temperatures flatten towards
    uniform, so small sources are not drowned by large ones.

    Args:
        sizes: number of samples of each source.
        temperature: >= 1 in practice; must be > 0.

    Returns:
        (S,) probabilities summing to 1.
    """
    if temperature <= 0:
        raise ValueError(f"Sampling temperature must be > 0, got {temperature}.")
    weights = np.asarray(sizes, dtype=np.float64) ** (1.0 / temperature)
    if weights.sum() <= 0:
        raise ValueError(f"No source has any sample (sizes {list(sizes)}).")
    return weights / weights.sum()


class SourceBatchSampler(Sampler[list[int]]):
    """Yields batches of indices that all come from one source.

    Indices are global over a concatenation of sources (``offsets[s] + i``). Each epoch
    draws ``num_batches`` batches in total: the source of each batch by
    :func:`source_probabilities`, then its items without replacement within the source
    (reshuffled when exhausted). Under DDP every rank draws the same sequence from the
    same seed and keeps every ``world_size``-th batch, so ranks see disjoint batches.

    Args:
        sizes: samples per source.
        batch_size: items per batch.
        num_batches: batches per epoch over all ranks.
        temperature: source-mixing temperature.
        seed: base seed; the epoch is added (see :meth:`set_epoch`).
        shuffle: False gives each source's items in order, sources in turn (evaluation).
        rank: this process's rank (default: from torch.distributed, else 0).
        world_size: number of processes (default: from torch.distributed, else 1).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        batch_size: int,
        num_batches: int | None = None,
        temperature: float = 2.0,
        seed: int = 0,
        shuffle: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        self.sizes = [int(s) for s in sizes]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(int)
        self.batch_size = batch_size
        self.temperature = temperature
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        distributed = dist.is_available() and dist.is_initialized()
        self.rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        self.world_size = (
            world_size if world_size is not None else (dist.get_world_size() if distributed else 1)
        )
        full = sum(-(-s // batch_size) for s in self.sizes)
        self.num_batches = num_batches if num_batches is not None else full

    def set_epoch(self, epoch: int) -> None:
        """Draw a different (but reproducible) sequence each epoch."""
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        if not self.shuffle:
            return [
                list(range(offset + start, offset + min(start + self.batch_size, size)))
                for offset, size in zip(self.offsets, self.sizes, strict=True)
                for start in range(0, size, self.batch_size)
            ]
        rng = np.random.default_rng((self.seed, self.epoch))
        probabilities = source_probabilities(self.sizes, self.temperature)
        queues: list[list[int]] = [[] for _ in self.sizes]
        batches = []
        for source in rng.choice(len(self.sizes), size=self.num_batches, p=probabilities):
            batch = []
            while len(batch) < self.batch_size:
                if not queues[source]:
                    queues[source] = list(rng.permutation(self.sizes[source]))
                batch.append(int(self.offsets[source] + queues[source].pop()))
            batches.append(batch)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        usable = len(batches) - len(batches) % self.world_size if self.shuffle else len(batches)
        yield from batches[self.rank : usable : self.world_size]

    def __len__(self) -> int:
        total = len(self._all_batches()) if not self.shuffle else self.num_batches
        if self.shuffle:
            return total // self.world_size
        return len(range(self.rank, total, self.world_size))
