"""One datamodule over several: one model trained on many datasets at once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from torch.utils.data import Dataset

from stsun_lightning.batch import Batch
from stsun_lightning.data.datamodules.base import BatchFormat, Split, StsunDataModule
from stsun_lightning.data.record import SourceRecord
from stsun_lightning.errors import ConfigError

__all__ = ["MixedDataModule"]


class MixedDataModule(StsunDataModule):
    """Mixes the sources of several datamodules of the project.

    Batches stay homogeneous per source; sources are drawn by a temperature over their
    sizes; a category name is one row for every member (the members number their
    rows by the joint vocabulary, set before their ``setup``); under DDP each rank gets
    its own share of batches, none twice, in the same order for the same seed (see
    :class:`~stsun_lightning.data.samplers.sources.SourceBatchSampler`). The members' own batch
    sizes, workers and temperatures are not used: the mixture's are.

    Args:
        datamodules: the members (any :class:`StsunDataModule`; their source names
            must differ).
        batch_size: items per batch.
        num_workers: DataLoader worker processes.
        train_batches_per_epoch: batches per training epoch over all ranks and sources
            (default: every training item once, on average).
        temperature: source-mixing temperature (1 = by size, larger = more uniform).
        seed: seed of the sampling order.
        batch_format: ``"stsun"`` or ``"torchgeo"``.
        source_weights: multipliers of some sources' shares of the training batches, by
            name, over all members' sources (see :class:`StsunDataModule`).

    Raises:
        ConfigError: no member, or two members with a source of the same name.
    """

    def __init__(
        self,
        datamodules: Sequence[StsunDataModule],
        batch_size: int = 8,
        num_workers: int = 0,
        train_batches_per_epoch: int | None = None,
        temperature: float = 2.0,
        seed: int = 0,
        batch_format: BatchFormat = "stsun",
        source_weights: dict[str, float] | None = None,
    ) -> None:
        super().__init__(
            batch_size,
            num_workers,
            train_batches_per_epoch,
            temperature,
            seed,
            batch_format,
            source_weights=source_weights,
        )
        if not datamodules:
            raise ConfigError("MixedDataModule needs at least one datamodule.")
        self.members = list(datamodules)
        self.source_infos = [s for m in self.members for s in m.source_infos]
        repeated = [n for n, c in Counter(s.name for s in self.source_infos).items() if c > 1]
        if repeated:
            raise ConfigError(
                f"Sources {repeated} appear in several datamodules; give each dataset its "
                "own name (e.g. the datamodules' `name` argument)."
            )
        self.source_weight_list()

    def prepare_data(self) -> None:
        """Let every member download or generate its data."""
        for member in self.members:
            member.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        """Give every member the joint vocabulary, then set it up."""
        for member in self.members:
            member.vocabularies = self.vocabularies
            member.setup(stage)

    def source_records(self) -> dict[str, SourceRecord]:
        """Every member's sources' records."""
        return {n: r for member in self.members for n, r in member.source_records().items()}

    def load_data_record(self, record: Mapping[str, Any] | None) -> None:
        """Give a checkpoint's record to every member."""
        super().load_data_record(record)
        for member in self.members:
            member.load_data_record(record)

    def datasets(self, split: Split) -> list[Dataset[Batch]]:
        """Every member's per-source datasets, in member order."""
        return [d for member in self.members for d in member.datasets(split)]
