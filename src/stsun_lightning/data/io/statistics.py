"""Per-band normalisation statistics, computed once from training scenes and cached."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
import rasterio.errors

from stsun_lightning.errors import unreadable_file_error
from stsun_lightning.io import write_json_atomic

if TYPE_CHECKING:
    from stsun_lightning.data.datasets.scenes import Scene

__all__ = [
    "BandStatistics",
    "cached_statistics",
    "compute_band_statistics",
    "compute_statistics",
    "files_key",
    "load_or_compute_statistics",
]


FileBands = tuple[Path, tuple[int | None, ...]]
"""A file and, for each of its bands in order, the input band it holds (None: unused)."""

_SAMPLES_PER_FILE = 250_000


def compute_band_statistics(
    files: dict[str, list[FileBands]],
    band_counts: dict[str, int],
    scales: dict[str, float],
    stride: int | None = None,
) -> BandStatistics:
    """Mean and standard deviation of each input's bands over its files.

    Args:
        files: per input, its files with the input band each file band holds (a
            multi-band file holds ``(0, 1, ..., C-1)``, a single-band file ``(k,)``).
        band_counts: per input, its number of bands C.
        scales: per input, the factor from stored values to physical ones
            (e.g. 1e-4 for reflectance stored as uint16 × 10000).
        stride: read every ``stride``-th pixel in each direction (GDAL decimated read);
            default: about 250 000 pixels per file.

    Returns:
        The statistics; a band without any valid value gets mean 0 and std 1.

    Raises:
        InputFileError: a file that cannot be read, naming it and its input.
    """
    chunks: dict[tuple[str, int], list[np.ndarray]] = {}
    for name, entries in files.items():
        for path, positions in entries:
            try:
                with rasterio.open(path) as src:
                    step = stride or max(
                        1, int((src.height * src.width / _SAMPLES_PER_FILE) ** 0.5)
                    )
                    shape = (src.count, max(src.height // step, 1), max(src.width // step, 1))
                    data = src.read(out_shape=shape, masked=True).astype(np.float64)
            except rasterio.errors.RasterioError as error:
                raise unreadable_file_error(path, error, input_name=name) from None
            values = (data * scales[name]).filled(np.nan).reshape(shape[0], -1)
            for band, position in enumerate(positions):
                if position is not None:
                    chunks.setdefault((name, position), []).append(values[band])
    stats = BandStatistics(scale=dict(scales))
    for name, count in band_counts.items():
        mean, std = [], []
        for position in range(count):
            parts = chunks.get((name, position))
            values = np.concatenate(parts) if parts else np.array([np.nan])
            finite = values[np.isfinite(values)]
            mean.append(float(finite.mean()) if finite.size else 0.0)
            spread = float(finite.std()) if finite.size else 1.0
            std.append(spread if spread > 1e-8 else 1.0)
        stats.mean[name], stats.std[name] = mean, std
    return stats


def compute_statistics(
    scenes: list[Scene], scales: dict[str, float], stride: int = 4
) -> BandStatistics:
    """Mean and standard deviation of each input's bands over ``scenes``.

    Args:
        scenes: training scenes (all with the same inputs and bands).
        scales: per input, the factor from stored values to physical ones.
        stride: read every ``stride``-th pixel in each direction (GDAL decimated read).

    Returns:
        The statistics (see :func:`compute_band_statistics`).
    """
    files: dict[str, list[FileBands]] = {}
    counts: dict[str, int] = {}
    for scene in scenes:
        for name, scene_input in scene.inputs.items():
            counts[name] = len(scene_input.bands)
            positions = tuple(range(len(scene_input.bands)))
            files.setdefault(name, []).extend((p, positions) for p in scene_input.files)
    return compute_band_statistics(files, counts, scales, stride)


def files_key(paths: list[Path], extra: object) -> str:
    """A key of files' names, sizes and modification times (and ``extra``), for caches."""
    listing = sorted(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths)
    return hashlib.sha256(json.dumps([listing, extra], sort_keys=True).encode()).hexdigest()


def cached_statistics(
    cache: Path, key: str, compute: Callable[[], BandStatistics]
) -> BandStatistics:
    """Statistics from ``cache`` when stored under ``key``, else computed and cached.

    The cache is written atomically, so an interrupted run never leaves a partial one.
    """
    if cache.exists():
        try:
            stored = json.loads(cache.read_text())
            if stored.get("key") == key:
                return BandStatistics(mean=stored["mean"], std=stored["std"], scale=stored["scale"])
        except (json.JSONDecodeError, KeyError):
            pass  # unreadable: recompute below
    stats = compute()
    write_json_atomic(
        cache, {"key": key, "mean": stats.mean, "std": stats.std, "scale": stats.scale}
    )
    return stats


def load_or_compute_statistics(
    cache: Path, scenes: list[Scene], scales: dict[str, float]
) -> BandStatistics:
    """Statistics from ``cache`` if it was computed from the same files, else computed and cached.

    The cache is keyed by the files' names, sizes and modification times.
    """
    paths = [p for s in scenes for i in s.inputs.values() for p in i.files]
    key = files_key(paths, scales)
    return cached_statistics(cache, key, lambda: compute_statistics(scenes, scales))


@dataclass
class BandStatistics:
    """Per-band normalisation: ``(value * scale - mean) / std`` for each input's bands."""

    mean: dict[str, list[float]] = field(default_factory=dict)
    std: dict[str, list[float]] = field(default_factory=dict)
    scale: dict[str, float] = field(default_factory=dict)
