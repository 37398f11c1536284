"""Per-band normalisation statistics in physical units, computed once and cached.

Statistics are the mean and standard deviation of each band's physical values (stored
value × the input's ``scale``), over the pixels the reader would give the network: the
same nodata rule, the same grid, the training area only. They are what a checkpoint
carries (see :mod:`stsun_lightning.data.record`), so prediction normalises exactly as
training did.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stsun_lightning.data.io.files import RasterFile
from stsun_lightning.errors import ConfigError
from stsun_lightning.io import write_json_atomic

__all__ = [
    "InputStatistics",
    "MomentAccumulator",
    "Statistics",
    "cached_statistics",
    "files_key",
    "given_statistics",
]


@dataclass(frozen=True)
class InputStatistics:
    """Mean and standard deviation of each band of one input, in physical units.

    Attributes:
        bands: band names, in the input's order.
        mean: per band.
        std: per band (> 0).
    """

    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if not len(self.bands) == len(self.mean) == len(self.std):
            raise ConfigError(
                f"Statistics need one mean and one std per band ({', '.join(self.bands)}), "
                f"got {len(self.mean)} means and {len(self.std)} stds."
            )

    def select(self, bands: Sequence[str], what: str) -> InputStatistics:
        """The statistics of ``bands`` (by name, in that order).

        Args:
            bands: the bands wanted.
            what: names these statistics in the error (e.g. "the checkpoint's input 's2'").

        Raises:
            ConfigError: a band these statistics do not have, naming it and the ones
                they have.
        """
        index = {b: i for i, b in enumerate(self.bands)}
        missing = [b for b in bands if b not in index]
        if missing:
            raise ConfigError(
                f"{what} has no statistics for band(s) {missing} (it has {list(self.bands)}). "
                "Give them under 'statistics', or set statistics: rasters to compute them "
                "from the rasters being read."
            )
        rows = [index[b] for b in bands]
        return InputStatistics(
            tuple(bands), tuple(self.mean[i] for i in rows), tuple(self.std[i] for i in rows)
        )

    def to_dict(self) -> dict[str, list[Any]]:
        """Plain data (for JSON caches and checkpoints)."""
        return {"bands": list(self.bands), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputStatistics:
        """The statistics saved by :meth:`to_dict`."""
        return cls(
            tuple(str(b) for b in data["bands"]),
            tuple(float(v) for v in data["mean"]),
            tuple(float(v) for v in data["std"]),
        )


Statistics = dict[str, InputStatistics]
"""Statistics of each input, by input name."""


class MomentAccumulator:
    """Exact running mean and variance per band, merged chunk by chunk (Chan et al.).

    Args:
        bands: number of bands C.
    """

    def __init__(self, bands: int) -> None:
        self.count = np.zeros(bands, dtype=np.float64)
        self.mean = np.zeros(bands, dtype=np.float64)
        self.m2 = np.zeros(bands, dtype=np.float64)

    def add(self, values: np.ndarray) -> None:
        """Add (..., C, h, w) values; NaN and inf (no data) are skipped."""
        flat = np.moveaxis(values, -3, 0).reshape(values.shape[-3], -1).astype(np.float64)
        for band, row in enumerate(flat):
            finite = row[np.isfinite(row)]
            if not finite.size:
                continue
            n, mean = float(finite.size), float(finite.mean())
            m2 = float(((finite - mean) ** 2).sum())
            total = self.count[band] + n
            delta = mean - self.mean[band]
            self.mean[band] += delta * n / total
            self.m2[band] += m2 + delta**2 * self.count[band] * n / total
            self.count[band] = total

    def result(self, bands: Sequence[str]) -> InputStatistics:
        """Mean and std per band; a band without any value gets mean 0 and std 1."""
        std = np.sqrt(self.m2 / np.maximum(self.count, 1))
        std = np.where((self.count > 0) & (std > 1e-8), std, 1.0)
        mean = np.where(self.count > 0, self.mean, 0.0)
        return InputStatistics(tuple(bands), tuple(map(float, mean)), tuple(map(float, std)))


def files_key(paths: Iterable[Path | RasterFile], extra: object) -> str:
    """A key of files' names, sizes and modification times (and ``extra``), for caches.

    A remote file (a GDAL virtual path such as ``/vsicurl/...``) is keyed by its name.
    """
    listing = sorted(_file_key(p.path if isinstance(p, RasterFile) else p) for p in paths)
    return hashlib.sha256(json.dumps([listing, extra], sort_keys=True).encode()).hexdigest()


def _file_key(path: str | Path) -> str:
    if str(path).startswith("/vsi"):
        return str(path)
    stat = Path(path).stat()
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"


def cached_statistics(cache: Path, key: str, compute: Callable[[], Statistics]) -> Statistics:
    """Statistics from ``cache`` when stored under ``key``, else computed and cached.

    The cache is written atomically, so an interrupted run never leaves a partial one.
    """
    if cache.exists():
        try:
            stored = json.loads(cache.read_text())
            if stored.get("key") == key:
                return {n: InputStatistics.from_dict(s) for n, s in stored["inputs"].items()}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            pass  # unreadable or of an older format: recompute below
    statistics = compute()
    write_json_atomic(
        cache, {"key": key, "inputs": {n: s.to_dict() for n, s in statistics.items()}}
    )
    return statistics


def given_statistics(
    given: Mapping[str, Mapping[str, Sequence[float]]], bands: Mapping[str, Sequence[str]]
) -> Statistics:
    """Statistics typed in a config: per input ``{mean: [...], std: [...]}``, one per band.

    Raises:
        ConfigError: an input without statistics, or with the wrong number of values,
            naming the input and its bands.
    """
    statistics: Statistics = {}
    for name, names in bands.items():
        spec = given.get(name) or {}
        mean, std = list(spec.get("mean", ())), list(spec.get("std", ()))
        if len(mean) != len(names) or len(std) != len(names):
            raise ConfigError(
                f"statistics[{name!r}] needs 'mean' and 'std' with {len(names)} values, one per "
                f"band ({', '.join(names)}), in physical units (after 'scale')."
            )
        if any(s <= 0 for s in std):
            raise ConfigError(f"statistics[{name!r}].std must be > 0, got {std}.")
        statistics[name] = InputStatistics(tuple(names), tuple(mean), tuple(std))
    return statistics
