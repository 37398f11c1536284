"""What the reader did, as a checkpoint carries it: statistics and the frame rule.

Per source, its inputs' band statistics (physical units) and the frame rule.

A datamodule gives its record (``data_record()``); the task stores it in the checkpoint
under ``"stsun_data"``; whatever datamodule later evaluates or predicts with that
checkpoint takes it back (``load_data_record()``), so it normalises exactly as training
did. The record is plain data (dicts, lists, strings, numbers), which
``torch.load(weights_only=True)`` accepts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from stsun_lightning.data.datasets.frames import FrameRule
from stsun_lightning.data.io.statistics import InputStatistics, Statistics
from stsun_lightning.data.spec import InputSpec
from stsun_lightning.errors import ConfigError

__all__ = [
    "RECORD_FORMAT",
    "DataRecordMixin",
    "InputRecord",
    "SourceRecord",
    "choose_source",
    "parse_record",
    "record_to_dict",
]

RECORD_FORMAT = 1
"""Version of the record's layout."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputRecord:
    """One input as training read it.

    Attributes:
        sensor: the sensor's name.
        statistics: its bands' names and statistics in physical units.
        scale: the factor from stored to physical values it was read with.
    """

    sensor: str
    statistics: InputStatistics
    scale: float = 1.0


@dataclass(frozen=True)
class SourceRecord:
    """One source as training read it.

    Attributes:
        inputs: by input name.
        frames: the frame rule.
    """

    inputs: Mapping[str, InputRecord]
    frames: FrameRule = field(default_factory=FrameRule)

    @classmethod
    def of(
        cls, specs: Mapping[str, InputSpec], statistics: Statistics, rule: FrameRule
    ) -> SourceRecord:
        """The record of inputs ``specs`` read with ``statistics`` and ``rule``."""
        return cls(
            {n: InputRecord(s.sensor.name, statistics[n], s.scale) for n, s in specs.items()},
            rule,
        )

    def statistics_for(self, specs: Mapping[str, InputSpec], source: str) -> Statistics:
        """Statistics of ``specs``' inputs and bands, matched by input name, else sensor.

        Args:
            specs: the inputs to normalise.
            source: this record's source name (for messages).

        Raises:
            ConfigError: an input or band the record has no statistics for, naming them
                and what the record has.
        """
        statistics: Statistics = {}
        for name, spec in specs.items():
            record = self.inputs.get(name)
            if record is None:
                same_sensor = [r for r in self.inputs.values() if r.sensor == spec.sensor.name]
                record = same_sensor[0] if len(same_sensor) == 1 else None
            if record is None:
                known = ", ".join(f"{n} ({r.sensor})" for n, r in self.inputs.items())
                raise ConfigError(
                    f"Input {name!r} (sensor {spec.sensor.name!r}): the checkpoint's source "
                    f"{source!r} has no statistics for it (it has inputs {known}). Name the "
                    "input as in training, set statistics: rasters to compute them from the "
                    "rasters being read, or give them under 'statistics'."
                )
            statistics[name] = record.statistics.select(
                spec.bands, f"Input {name!r} in the checkpoint's source {source!r}"
            )
            if not math.isclose(spec.scale, record.scale, rel_tol=1e-9):
                log.warning(
                    "Input %r is read with scale %g, but training read it with scale %g: the "
                    "checkpoint's statistics are in physical units, so this is right only if "
                    "the files store other units than training's did. Same product? Set "
                    "scale: %g.",
                    name, spec.scale, record.scale, record.scale,
                )  # fmt: skip
        return statistics

    def to_dict(self) -> dict[str, Any]:
        """Plain data."""
        return {
            "inputs": {
                n: {"sensor": r.sensor, "scale": r.scale, **r.statistics.to_dict()}
                for n, r in self.inputs.items()
            },
            "frames": self.frames.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SourceRecord:
        """The record saved by :meth:`to_dict`."""
        return cls(
            {
                n: InputRecord(
                    str(r["sensor"]), InputStatistics.from_dict(r), float(r.get("scale", 1.0))
                )
                for n, r in data["inputs"].items()
            },
            FrameRule.from_dict(data.get("frames", {})),
        )


def record_to_dict(sources: Mapping[str, SourceRecord]) -> dict[str, Any]:
    """A datamodule's record as plain data."""
    return {"format": RECORD_FORMAT, "sources": {n: s.to_dict() for n, s in sources.items()}}


def parse_record(data: Mapping[str, Any] | None) -> dict[str, SourceRecord]:
    """Sources of a record saved by :func:`record_to_dict` (empty for None).

    Raises:
        ConfigError: a record of an unknown format.
    """
    if not data:
        return {}
    if data.get("format") != RECORD_FORMAT:
        raise ConfigError(
            f"The checkpoint's data record has format {data.get('format')!r}; this version "
            f"reads format {RECORD_FORMAT}."
        )
    return {n: SourceRecord.from_dict(s) for n, s in data["sources"].items()}


def choose_source(
    sources: Mapping[str, SourceRecord],
    specs: Mapping[str, InputSpec],
    wanted: str | None,
    own: Sequence[str] = (),
) -> str:
    """Which recorded source to normalise ``specs`` like.

    Args:
        sources: the record's sources.
        specs: the inputs being read.
        wanted: a source named by the user, or None.
        own: names of the datamodule's own sources (tried first).

    Returns:
        The name of ``wanted``, else the datamodule's own source, else the only source,
        else the only one whose inputs and bands cover ``specs``.

    Raises:
        ConfigError: no source, an unknown ``wanted``, or several that fit.
    """
    if not sources:
        raise ConfigError(
            "The checkpoint carries no band statistics (trained before checkpoints carried "
            "them?): set statistics: rasters to compute them from the rasters being read, "
            "or give them under 'statistics'."
        )
    if wanted is not None:
        if wanted not in sources:
            raise ConfigError(
                f"statistics_source {wanted!r} is not a source of the checkpoint "
                f"(it has {sorted(sources)})."
            )
        return wanted
    for name in own:
        if name in sources:
            return name
    if len(sources) == 1:
        return next(iter(sources))
    fitting = []
    for name, record in sources.items():
        try:
            record.statistics_for(specs, name)
        except ConfigError:
            continue
        fitting.append(name)
    if len(fitting) == 1:
        return fitting[0]
    raise ConfigError(
        f"The checkpoint has statistics of several sources {sorted(sources)}, and "
        f"{'several' if fitting else 'none'} of them cover inputs {sorted(specs)}: name one "
        "with statistics_source."
    )


class DataRecordMixin:
    """Gives a datamodule ``data_record()`` and ``load_data_record()``.

    The task calls ``data_record()`` when it saves a checkpoint and
    ``load_data_record()`` when one is loaded, before any dataloader is built (see
    :mod:`stsun_lightning.tasks`). Subclasses list their sources' records in
    :meth:`source_records` and read :attr:`checkpoint_sources` when they normalise.
    """

    # Nothing loaded until ``load_data_record``; never mutated, only replaced.
    checkpoint_sources: Mapping[str, SourceRecord] = MappingProxyType({})

    def source_records(self) -> dict[str, SourceRecord]:
        """Per source, how it was read (statistics, frame rule); empty if nothing to record."""
        return {}

    def data_record(self) -> dict[str, Any]:
        """The record a checkpoint carries (plain data)."""
        return record_to_dict(self.source_records())

    def load_data_record(self, record: Mapping[str, Any] | None) -> None:
        """Take a checkpoint's record: its statistics win over ones computed here."""
        self.checkpoint_sources = parse_record(record)
