"""The frame rule: which acquisitions of which input make up each frame of a series.

One rule for training, evaluation and prediction. Frames are the union of every input's
dates, where another input's acquisition at most ``tolerance_days`` after a frame's first
date joins that frame (one input's own dates never merge); each frame carries its date. An input without an acquisition at a frame is
absent there (its bands are masked at that frame, never filled). Static files (no
date: a DEM) join every frame. Dated labels keep the frames within the tolerance of
their dates; labels with one band per date (``per_date``) make one frame per label
date, each with every input's acquisitions within the tolerance of it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stsun_lightning.errors import ConfigError, RasterMismatchError

__all__ = ["Frame", "FrameRule"]


@dataclass(frozen=True)
class Frame:
    """One frame of a series.

    Attributes:
        day: the frame's date (None when no input has a date: static inputs only).
        members: per input, the dates of its acquisitions in this frame, nearest to
            ``day`` first (where they overlap, the nearest wins); an input missing
            from ``members`` has no acquisition at this frame.
    """

    day: dt.date | None
    members: Mapping[str, tuple[dt.date, ...]] = field(default_factory=dict)

    def dates_of(self, name: str) -> tuple[dt.date, ...]:
        """The dates of input ``name`` in this frame (empty: absent here)."""
        return tuple(self.members.get(name, ()))


@dataclass(frozen=True)
class FrameRule:
    """How acquisitions are grouped into frames (saved in checkpoints).

    Attributes:
        tolerance_days: another input's acquisition this many days or fewer after a
            frame's first date joins that frame; with dated labels, frames within this
            many days of the labels' dates are kept.
    """

    tolerance_days: int = 0

    def __post_init__(self) -> None:
        if self.tolerance_days < 0:
            raise ConfigError(f"date_tolerance_days must be >= 0, got {self.tolerance_days}.")

    def frames(
        self,
        input_days: Mapping[str, Sequence[dt.date]],
        label_days: Sequence[dt.date] = (),
        per_date: bool = False,
    ) -> list[Frame]:
        """The frames of inputs with these acquisition dates.

        Args:
            input_days: per input, the dates of its files (static files excluded).
            label_days: the dates of dated label files (empty: undated labels, or none).
            per_date: labels hold one map per date: one frame per label date.

        Returns:
            The frames in date order; one undated frame when no input has a date.

        Raises:
            ConfigError: dated labels that no input acquisition meets within the
                tolerance, naming both date ranges and the tolerance.
        """
        slack = dt.timedelta(days=self.tolerance_days)
        every = sorted({d for days in input_days.values() for d in days})
        if per_date:
            if not label_days:
                raise ConfigError(
                    "labels.outputs 'per_date' needs dated label files (one per date)."
                )
            anchors = sorted(set(label_days))
            frames = [self._frame(day, day, day + slack, input_days, slack) for day in anchors]
            if not any(f.members for f in frames):
                raise self._no_overlap(anchors, every)
            return frames
        if not every:
            return [Frame(None, {})]
        # In date order, an acquisition joins the latest frame if that frame started at
        # most ``tolerance_days`` before it and holds none of its input yet; otherwise it
        # starts a frame. One input's own dates never merge, so its series stays whole.
        acquisitions = sorted((d, name) for name, days in input_days.items() for d in set(days))
        starts: list[dt.date] = []
        members: list[dict[str, tuple[dt.date, ...]]] = []
        for day, name in acquisitions:
            if starts and day - starts[-1] <= slack and name not in members[-1]:
                members[-1][name] = (day,)
            else:
                starts.append(day)
                members.append({name: (day,)})
        frames = [Frame(s, m) for s, m in zip(starts, members, strict=True)]
        if label_days:
            low, high = min(label_days) - slack, max(label_days) + slack
            frames = [f for f in frames if f.day is not None and low <= f.day <= high]
            if not frames:
                raise self._no_overlap(sorted(label_days), every)
        return frames

    @staticmethod
    def _frame(
        day: dt.date,
        first: dt.date,
        last: dt.date,
        input_days: Mapping[str, Sequence[dt.date]],
        before: dt.timedelta,
    ) -> Frame:
        """The frame dated ``day`` holding every acquisition in [first - before, last]."""
        members = {}
        for name, days in input_days.items():
            inside = sorted(
                {d for d in days if first - before <= d <= last},
                key=lambda d: (abs((d - day).days), d),
            )
            if inside:
                members[name] = tuple(inside)
        return Frame(day, members)

    def _no_overlap(
        self, label_days: Sequence[dt.date], days: Sequence[dt.date]
    ) -> RasterMismatchError:
        inputs = f"{days[0]}..{days[-1]}" if days else "undated (static files only)"
        return RasterMismatchError(
            f"Inputs and labels do not intersect in time: labels are dated "
            f"{label_days[0]}..{label_days[-1]}, inputs {inputs} "
            f"(date_tolerance_days={self.tolerance_days})."
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint."""
        return {"tolerance_days": self.tolerance_days}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FrameRule:
        """The rule saved by :meth:`to_dict`."""
        return cls(int(data.get("tolerance_days", 0)))
