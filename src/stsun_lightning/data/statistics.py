"""Per-band normalisation statistics, computed once from training scenes and cached."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import rasterio

from stsun_lightning.data.scenes import BandStatistics, Scene
from stsun_lightning.io import write_json_atomic

__all__ = ["compute_statistics", "load_or_compute_statistics"]


def compute_statistics(
    scenes: list[Scene], scales: dict[str, float], stride: int = 4
) -> BandStatistics:
    """Mean and standard deviation of each input's bands over ``scenes``.

    Args:
        scenes: training scenes (all with the same inputs and bands).
        scales: per input, the factor from stored values to physical ones
            (e.g. 1e-4 for reflectance stored as uint16 × 10000).
        stride: read every ``stride``-th pixel in each direction (GDAL decimated read).

    Returns:
        The statistics; a band without any valid value gets mean 0 and std 1.
    """
    sums: dict[str, list[np.ndarray]] = {}
    for scene in scenes:
        for name, scene_input in scene.inputs.items():
            for path in scene_input.files:
                with rasterio.open(path) as src:
                    shape = (src.count, max(src.height // stride, 1), max(src.width // stride, 1))
                    data = src.read(out_shape=shape, masked=True).astype(np.float64) * scales[name]
                values = data.reshape(shape[0], -1)
                sums.setdefault(name, []).append(values.filled(np.nan))
    stats = BandStatistics(scale=dict(scales))
    for name, chunks in sums.items():
        values = np.concatenate(chunks, 1)
        mean = np.nanmean(values, 1)
        std = np.nanstd(values, 1)
        stats.mean[name] = np.nan_to_num(mean, nan=0.0).tolist()
        stats.std[name] = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0).tolist()
    return stats


def load_or_compute_statistics(
    cache: Path, scenes: list[Scene], scales: dict[str, float]
) -> BandStatistics:
    """Statistics from ``cache`` if it was computed from the same files, else computed and cached.

    The cache is keyed by the files' names, sizes and modification times, and written
    atomically, so an interrupted run never leaves a partial cache.
    """
    key_source = sorted(
        f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
        for s in scenes
        for i in s.inputs.values()
        for p in i.files
    )
    key = hashlib.sha256(json.dumps([key_source, scales], sort_keys=True).encode()).hexdigest()
    if cache.exists():
        try:
            stored = json.loads(cache.read_text())
            if stored.get("key") == key:
                return BandStatistics(mean=stored["mean"], std=stored["std"], scale=stored["scale"])
        except (json.JSONDecodeError, KeyError):
            pass  # unreadable: recompute below
    stats = compute_statistics(scenes, scales)
    write_json_atomic(
        cache, {"key": key, "mean": stats.mean, "std": stats.std, "scale": stats.scale}
    )
    return stats
