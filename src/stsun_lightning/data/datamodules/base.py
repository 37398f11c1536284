"""The base of every datamodule of the project: sources, vocabularies and loaders.

A datamodule of the project describes its sources (:class:`SourceInfo`), numbers their
names by one vocabulary, and after ``setup`` offers one dataset of one-item
:class:`Batch` items per source and split (:meth:`StsunDataModule.datasets`). The base
builds the loaders from those: batches homogeneous per source, sources mixed by a
temperature over their sizes, each DDP rank its own share (:class:`SourceBatchSampler`),
every index with its epoch, so a training dataset draws fresh random crops every epoch,
the same for the same seed and epoch (:class:`EpochConcatDataset`).

The same datamodule also serves a LightningModule that is not ours: with
``batch_format="torchgeo"`` its batches are plain mappings with TorchGeo's keys
(:func:`torchgeo_batch`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal

from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from stsun_lightning.batch import Batch, collate_batches
from stsun_lightning.data.record import DataRecordMixin
from stsun_lightning.data.samplers.epochs import EpochConcatDataset
from stsun_lightning.data.samplers.sources import ResumableDataLoader, SourceBatchSampler
from stsun_lightning.data.sources import SourceInfo, build_vocabularies
from stsun_lightning.errors import ConfigError

__all__ = ["BatchFormat", "StsunDataModule", "torchgeo_batch", "torchgeo_collate"]

BatchFormat = Literal["stsun", "torchgeo"]
Split = Literal["train", "val", "test"]


def torchgeo_batch(batch: Batch) -> dict[str, Any]:
    """The batch as a mapping with TorchGeo's keys, for LightningModules that are not ours.

    ``image`` is (B, C, H, W) when the batch has one frame (TorchGeo's convention for
    single images) and (B, T, C, H, W) for a time series, with missing values (NaN) set
    to 0; ``mask`` is the target: (B, H', W') long (-1 = ignore) or float (NaN = ignore)
    for one output slot, else (B, To, H', W'); every other field of :class:`Batch`
    keeps its name and shape (``valid_mask``, ``wavelength_nm``, ``dates``, ``source``,
    ``band_mask`` (B, T, C)...).

    Args:
        batch: a batch of the project.

    Returns:
        The mapping.
    """
    fields: dict[str, Any] = dict(batch.tensors())
    fields["source"] = list(batch.source)
    image = batch.image.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
    fields["image"] = image[:, 0] if image.shape[1] == 1 else image
    target = fields.pop("target", None)
    if target is not None:
        if target.dim() == 5 and target.shape[2] == 1:  # (B, To, V=1, H, W) values
            target = target[:, :, 0]
        fields["mask"] = target[:, 0] if target.shape[1] == 1 else target
    return fields


def torchgeo_collate(items: Sequence[Batch]) -> dict[str, Any]:
    """Collate one-item batches into a TorchGeo-style mapping (see :func:`torchgeo_batch`)."""
    return torchgeo_batch(collate_batches(items))


class StsunDataModule(DataRecordMixin, LightningDataModule, ABC):
    """Base of the project's datamodules.

    Subclasses set :attr:`source_infos` in ``__init__`` and implement :meth:`datasets`.
    :attr:`vocabularies` numbers category, task and variable names; a
    :class:`~stsun_lightning.data.datamodules.mixing.MixedDataModule` replaces it with the joint
    vocabulary of all its members before their ``setup``, so the same name is the same
    row everywhere.

    Args:
        batch_size: items per batch.
        num_workers: DataLoader worker processes.
        train_batches_per_epoch: batches per training epoch over all ranks and sources
            (default: every training item once).
        temperature: source-mixing temperature (1 = by size, larger = more uniform).
        seed: seed of the sampling order.
        batch_format: ``"stsun"`` (:class:`Batch`) or ``"torchgeo"`` (a mapping with
            TorchGeo's keys, for LightningModules that are not ours).
        source_weights: multipliers of some sources' shares of the training batches, by
            source name, each > 0 (the others 1; see
            :func:`~stsun_lightning.data.samplers.sources.source_probabilities`): a source
            that learns slower than the rest can be drawn more often.
    """

    source_infos: list[SourceInfo]

    def __init__(
        self,
        batch_size: int = 8,
        num_workers: int = 0,
        train_batches_per_epoch: int | None = None,
        temperature: float = 2.0,
        seed: int = 0,
        batch_format: BatchFormat = "stsun",
        source_weights: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        if batch_format not in ("stsun", "torchgeo"):
            raise ValueError(f"batch_format must be 'stsun' or 'torchgeo', got {batch_format!r}.")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_batches_per_epoch = train_batches_per_epoch
        self.temperature = temperature
        self.seed = seed
        self.batch_format = batch_format
        self.source_weights = dict(source_weights or {})
        self._vocabularies: dict[str, list[str]] | None = None

    @property
    def vocabularies(self) -> dict[str, list[str]]:
        """Task, category and variable names: what the rows of this module's batches mean."""
        if self._vocabularies is None:
            self._vocabularies = build_vocabularies(self.source_infos)
        return self._vocabularies

    @vocabularies.setter
    def vocabularies(self, value: dict[str, list[str]]) -> None:
        self._vocabularies = {k: list(v) for k, v in value.items()}

    @property
    def sources(self) -> dict[str, dict[str, Any]]:
        """The sources as plain data, for ``StsunTask(sources=...)`` (linked by the CLI)."""
        return {s.name: s.to_dict() for s in self.source_infos}

    @abstractmethod
    def datasets(self, split: Split) -> list[Dataset[Batch]]:
        """One dataset of one-item batches per source, in :attr:`source_infos` order.

        Called after ``setup``; a source without data in ``split`` gets an empty dataset.
        A dataset whose items are random (training crops, flips) is an
        :class:`~stsun_lightning.data.samplers.epochs.EpochDataset`: the loader gives it
        each item's epoch, and it draws the item from its seed, the epoch and the index.
        """

    def source_weight_list(self) -> list[float]:
        """:attr:`source_weights` as one multiplier per source, in :attr:`source_infos` order.

        Raises:
            ConfigError: a weight names no source of this datamodule, or is not > 0.
        """
        names = [s.name for s in self.source_infos]
        unknown = sorted(set(self.source_weights) - set(names))
        if unknown:
            raise ConfigError(
                f"data.source_weights names {unknown}, which are not sources of this "
                f"datamodule; its sources are {names}."
            )
        bad = {n: w for n, w in self.source_weights.items() if not 0 < float(w) < float("inf")}
        if bad:
            raise ConfigError(f"data.source_weights must be finite numbers > 0, got {bad}.")
        return [float(self.source_weights.get(n, 1.0)) for n in names]

    def loader(self, datasets: Sequence[Dataset[Batch]], shuffle: bool) -> DataLoader:
        """A loader over ``datasets`` (one per source) with homogeneous batches.

        Args:
            datasets: per-source datasets of one-item batches.
            shuffle: random batches mixed by temperature (training), or every item once
                in order, source by source (evaluation).

        Returns:
            The DataLoader over an :class:`EpochConcatDataset` of ``datasets``; under DDP
            each rank gets its own disjoint share.
        """
        sizes = [len(d) for d in datasets]  # type: ignore[arg-type]
        sampler = SourceBatchSampler(
            sizes,
            self.batch_size,
            num_batches=self.train_batches_per_epoch if shuffle else None,
            temperature=self.temperature,
            seed=self.seed,
            shuffle=shuffle,
            weights=self.source_weight_list() if shuffle else None,
        )
        return ResumableDataLoader(
            EpochConcatDataset(datasets),
            batch_sampler=sampler,
            collate_fn=torchgeo_collate if self.batch_format == "torchgeo" else collate_batches,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Random batches of the training split, sources mixed by temperature."""
        return self.loader(self.datasets("train"), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Every validation item once."""
        return self.loader(self.datasets("val"), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Every test item once."""
        return self.loader(self.datasets("test"), shuffle=False)
