"""Homogeneous batches from many sources, mixed by a temperature over their sizes.

Under DDP every rank draws the same sequence of batches and keeps its own share, so the
ranks see disjoint data without Lightning's ``DistributedSampler`` (the CLI sets
``use_distributed_sampler: False``). Every index carries its epoch
(:class:`~stsun_lightning.data.samplers.epochs.EpochIndex`), so a dataset draws its
random crops of that epoch even in persistent workers. A run that dies mid-epoch
resumes at the batch it stopped at: :class:`ResumableDataLoader` counts the batches it
has handed out, and Lightning saves that count in the checkpoint and gives it back on
``--ckpt_path``; the batches after it, and the crops in them, are those the run would
have drawn.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from stsun_lightning.data.samplers.epochs import EpochIndex

__all__ = ["ResumableDataLoader", "SourceBatchSampler", "source_probabilities"]

log = logging.getLogger(__name__)


def source_probabilities(
    sizes: Sequence[int], temperature: float, weights: Sequence[float] | None = None
) -> np.ndarray:
    """How often each source is drawn: proportional to ``weight * size ** (1 / temperature)``.

    Temperature 1 samples in proportion to size, larger temperatures flatten towards
    uniform, so small sources are not drowned by large ones; a source's weight then
    scales its share (2 draws it twice as often as it would be, before renormalising).

    Args:
        sizes: number of samples of each source.
        temperature: >= 1 in practice; must be > 0.
        weights: (S,) multipliers of the sources' shares, each > 0 (default: all 1).

    Returns:
        (S,) probabilities summing to 1.
    """
    if temperature <= 0:
        raise ValueError(f"Sampling temperature must be > 0, got {temperature}.")
    factors = np.ones(len(sizes)) if weights is None else np.asarray(weights, dtype=np.float64)
    if factors.shape != (len(sizes),) or not (np.isfinite(factors).all() and (factors > 0).all()):
        raise ValueError(
            f"Source weights must be {len(sizes)} finite numbers > 0, got {list(factors)}."
        )
    shares = factors * np.asarray(sizes, dtype=np.float64) ** (1.0 / temperature)
    if shares.sum() <= 0:
        raise ValueError(f"No source has any sample (sizes {list(sizes)}).")
    return shares / shares.sum()


class SourceBatchSampler(Sampler[list[EpochIndex]]):
    """Yields batches of indices that all come from one source, each with its epoch.

    Indices are global over a concatenation of sources (``offsets[s] + i``), as
    ``EpochIndex(epoch, offsets[s] + i)`` keys of an
    :class:`~stsun_lightning.data.samplers.epochs.EpochConcatDataset`. Each epoch
    draws ``num_batches`` batches in total: the source of each batch by
    :func:`source_probabilities`, then its items without replacement within the source
    (reshuffled when exhausted). Under DDP every rank draws the same sequence from the
    same seed and keeps every ``world_size``-th batch, so ranks see disjoint batches; in
    training every rank gets the same number of batches (DDP steps together), so up to
    ``world_size - 1`` batches of an epoch are left out. :meth:`resume` makes the next
    pass over an epoch start after the batches a previous run already trained on.

    Args:
        sizes: samples per source.
        batch_size: items per batch.
        num_batches: batches per epoch over all ranks.
        temperature: source-mixing temperature.
        weights: multipliers of the sources' shares (see :func:`source_probabilities`).
        seed: base seed; the epoch is added (see :meth:`set_epoch`).
        shuffle: False gives each source's items in order, sources in turn (evaluation).
        rank: this process's rank (default: from torch.distributed, else 0).
        world_size: number of processes (default: from torch.distributed, else 1).

    Attributes:
        sampler: what Lightning calls ``set_epoch`` on. Lightning (2.6) sets the epoch of a
            loader's ``sampler`` and of its ``batch_sampler.sampler``, never of the batch
            sampler itself; without this every epoch would draw the same batches.
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
        weights: Sequence[float] | None = None,
    ) -> None:
        self.sizes = [int(s) for s in sizes]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(int)
        self.batch_size = batch_size
        self.temperature = temperature
        self.weights = None if weights is None else [float(w) for w in weights]
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
        self._resume_at: tuple[int, int] | None = None
        self.sampler = _EpochSetter(self)

    def set_epoch(self, epoch: int) -> None:
        """Draw a different (but reproducible) sequence each epoch."""
        self.epoch = epoch

    def resume(self, epoch: int, batches_done: int) -> None:
        """Skip this rank's first ``batches_done`` batches the next time ``epoch`` is drawn.

        Args:
            epoch: the epoch that was interrupted (also made the current epoch).
            batches_done: batches of that epoch this rank has already trained on.
        """
        self.epoch = epoch
        self._resume_at = (epoch, max(int(batches_done), 0))

    def start_position(self) -> int:
        """Batches of the current epoch the next pass skips (0 unless resuming it)."""
        if self._resume_at is not None and self._resume_at[0] == self.epoch:
            return self._resume_at[1]
        return 0

    def _all_batches(self) -> list[list[int]]:
        if not self.shuffle:
            return [
                list(range(offset + start, offset + min(start + self.batch_size, size)))
                for offset, size in zip(self.offsets, self.sizes, strict=True)
                for start in range(0, size, self.batch_size)
            ]
        rng = np.random.default_rng((self.seed, self.epoch))
        probabilities = source_probabilities(self.sizes, self.temperature, self.weights)
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

    def __iter__(self) -> Iterator[list[EpochIndex]]:
        start = self.start_position()
        self._resume_at = None  # once: later passes over the epoch start at its beginning
        epoch, batches = self.epoch, self._all_batches()
        usable = len(batches) - len(batches) % self.world_size if self.shuffle else len(batches)
        for batch in batches[self.rank : usable : self.world_size][start:]:
            yield [EpochIndex(epoch, i) for i in batch]

    def __len__(self) -> int:
        total = len(self._all_batches()) if not self.shuffle else self.num_batches
        if self.shuffle:
            return total // self.world_size
        return len(range(self.rank, total, self.world_size))


class _EpochSetter:
    """Passes ``set_epoch`` on to a :class:`SourceBatchSampler` (see its ``sampler``)."""

    def __init__(self, batch_sampler: SourceBatchSampler) -> None:
        self.batch_sampler = batch_sampler

    def set_epoch(self, epoch: int) -> None:
        """Set the batch sampler's epoch."""
        self.batch_sampler.set_epoch(epoch)


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`SourceBatchSampler` whose place in the epoch is saved.

    Lightning (2.6) saves the ``state_dict`` of a training loader that has one in the
    checkpoint's fit-loop state (``loops.fit_loop.state_dict.combined_loader``). The
    state is the epoch and the number of batches this loader has handed out in it; for a
    loader with a length Lightning fetches no batch ahead, so that is the number the run
    trained on. Workers that read ahead do not count: only batches returned do.

    Lightning gives the state back through ``load_state_dict`` only if it sets up the
    training data after restoring the loops, which it does not when
    ``configure_optimizers`` asks for ``trainer.estimated_stepping_batches`` (as
    :class:`~stsun_lightning.tasks.module.StsunTask` does); the task then restores it
    itself in ``on_train_start``. Loading the same state twice is harmless.

    Takes the arguments of :class:`~torch.utils.data.DataLoader`; ``batch_sampler`` must
    be a :class:`SourceBatchSampler` for the position to be restored (with any other
    batch sampler the loader behaves as a plain DataLoader and restarts the epoch).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch = 0
        self._handed_out = 0

    def __iter__(self) -> Iterator[Any]:
        """Iterate the base loader, counting the batches handed out in this epoch.

        The base iterator (and its workers, which read the sampler ahead) starts at the
        first ``next``, not here: Lightning creates the iterator before it sets the epoch
        and before a resumed run's position is restored.
        """
        return self._counted()

    def _counted(self) -> Iterator[Any]:
        sampler = self.batch_sampler
        if isinstance(sampler, SourceBatchSampler):
            self._epoch, self._handed_out = sampler.epoch, sampler.start_position()
        else:
            self._epoch, self._handed_out = 0, 0
        for batch in super().__iter__():
            self._handed_out += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """Epoch, batches handed out in it, and the world size they are counted in."""
        sampler = self.batch_sampler
        world_size = sampler.world_size if isinstance(sampler, SourceBatchSampler) else 1
        return {"epoch": self._epoch, "batches_done": self._handed_out, "world_size": world_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next pass over the saved epoch start after its saved batches.

        A run resumed on another number of processes keeps the same share of the epoch
        done (rounded down: a few batches may be seen twice).
        """
        sampler = self.batch_sampler
        if not isinstance(sampler, SourceBatchSampler):
            return
        done = int(state.get("batches_done", 0))
        saved_world = int(state.get("world_size", sampler.world_size))
        if saved_world != sampler.world_size:
            log.warning(
                "Resuming a run of %d processes on %d: %d batches per rank were done, "
                "continuing after %d.",
                saved_world,
                sampler.world_size,
                done,
                done * saved_world // sampler.world_size,
            )
            done = done * saved_world // sampler.world_size
        sampler.resume(int(state.get("epoch", 0)), done)
        self._epoch, self._handed_out = sampler.epoch, done
