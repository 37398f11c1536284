"""The epoch travels with every index, so an item can be drawn from (seed, epoch, index).

A training item that is random (a crop, a flip, a subset of frames) is drawn from its
seed, its epoch and its index alone. That makes every epoch see other crops, a rerun see
the same ones, and a run resumed mid-epoch draw exactly the items it would have drawn.
The epoch cannot be set on the datasets: DataLoader workers are persistent, so what the
main process sets on a dataset after they started never reaches them. So
:class:`~stsun_lightning.data.samplers.sources.SourceBatchSampler` yields
:class:`EpochIndex` keys, and :class:`EpochConcatDataset` hands each dataset of the
concatenation its own key: an :class:`EpochDataset` gets the epoch, any other dataset
the plain index.
"""

from __future__ import annotations

import bisect
from abc import abstractmethod
from typing import NamedTuple, TypeVar

import numpy as np
from torch.utils.data import ConcatDataset, Dataset

__all__ = ["EpochConcatDataset", "EpochDataset", "EpochIndex", "item_rng", "split_key"]

T_co = TypeVar("T_co", covariant=True)


class EpochIndex(NamedTuple):
    """Which item, and in which epoch: the key of a training item.

    Attributes:
        epoch: the epoch the item is drawn for.
        index: the item's position in its dataset (or in the concatenation).
    """

    epoch: int
    index: int


def split_key(key: int | EpochIndex) -> tuple[int, int]:
    """``(epoch, index)`` of a key; a plain index is epoch 0."""
    if isinstance(key, EpochIndex):
        return int(key.epoch), int(key.index)
    return 0, int(key)


def item_rng(seed: int, stream: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of one item's draw: a function of its arguments only.

    Args:
        seed: the datamodule's seed.
        stream: which draw (crops, flips...), so two draws of one item are independent.
        epoch: the item's epoch.
        index: the item's index.
    """
    return np.random.default_rng((seed, stream, epoch, index))


class EpochDataset(Dataset[T_co]):
    """A dataset whose items may depend on the epoch: ``dataset[EpochIndex(e, i)]``.

    ``dataset[i]`` is item ``i`` of epoch 0. Subclasses implement :meth:`item` and
    ``__len__``.
    """

    @abstractmethod
    def __len__(self) -> int:
        """Items per epoch."""

    @abstractmethod
    def item(self, epoch: int, index: int) -> T_co:
        """Item ``index`` as drawn for ``epoch``."""

    def __getitem__(self, key: int | EpochIndex) -> T_co:
        epoch, index = split_key(key)
        if not 0 <= index < len(self):
            raise IndexError(f"Index {index} out of range for {len(self)} items.")
        return self.item(epoch, index)


class EpochConcatDataset(ConcatDataset[T_co]):
    """Datasets as one, indexed by global :class:`EpochIndex` keys (or plain indices).

    Key ``EpochIndex(e, offset_s + i)`` is item ``i`` of dataset ``s``: drawn for epoch
    ``e`` if that dataset is an :class:`EpochDataset`, else its plain item ``i``.
    """

    def __getitem__(self, key: int | EpochIndex) -> T_co:  # type: ignore[override]
        epoch, index = split_key(key)
        if not 0 <= index < len(self):
            raise IndexError(f"Index {index} out of range for {len(self)} items.")
        which = bisect.bisect_right(self.cumulative_sizes, index)
        local = index - (self.cumulative_sizes[which - 1] if which else 0)
        dataset = self.datasets[which]
        if isinstance(dataset, EpochDataset):
            return dataset[EpochIndex(epoch, local)]
        return dataset[local]
