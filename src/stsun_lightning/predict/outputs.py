"""The output rasters of one scene, filled window by window as predictions arrive."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from stsun_lightning.data.datasets.windows import PredictionJob
from stsun_lightning.predict.windows import RowBandAccumulator
from stsun_lightning.predict.writer import (
    CLASS_NODATA,
    OutputRaster,
    category_colormap,
    class_dtype,
)

__all__ = ["PROBABILITY_SCALE", "ProbabilityFormat", "SceneOutputs", "output_paths"]

ProbabilityFormat = Literal["none", "uint8", "float16"]
PROBABILITY_SCALE = 254
"""uint8 probabilities store ``round(p * 254)``; 255 is nodata."""
_CHUNK_COLUMNS = 2048  # finished rows are encoded and written this many columns at a time


def output_paths(
    folder: Path, job: PredictionJob, probabilities: ProbabilityFormat
) -> dict[str, Path]:
    """The files written for ``job``: ``"map"`` and, if asked, ``"probabilities"``."""
    paths = {"map": folder / f"{job.stem}.tif"}
    if probabilities != "none" and job.source.is_classification:
        paths["probabilities"] = folder / f"{job.stem}_probabilities.tif"
    return paths


class SceneOutputs:
    """Blends the windows of one job and streams finished rows to its output rasters.

    Windows must arrive in the order of
    :class:`~stsun_lightning.data.datasets.windows.SceneWindowDataset` (row band by row band, left
    to right); memory holds one row band of weighted sums, and finished rows are encoded
    and written in chunks of columns.

    Args:
        job: the scene and what is predicted.
        folder: output folder.
        window: window side.
        overlap: overlap between windows.
        probabilities: also write per-class probabilities ("uint8" or "float16").
    """

    def __init__(
        self,
        job: PredictionJob,
        folder: Path,
        window: int,
        overlap: int,
        probabilities: ProbabilityFormat = "none",
    ) -> None:
        self.job = job
        self.maps, self.channels = len(job.map_names), len(job.channel_names)
        self.classification = job.source.is_classification
        self.accumulator = RowBandAccumulator(
            self.maps * self.channels, job.height, job.width, window, overlap
        )
        self.windows_in_band = 0
        grid = job.profile()
        paths = output_paths(folder, job, probabilities)
        self.rasters = {"map": self._map_raster(paths["map"], grid)}
        if "probabilities" in paths:
            self.rasters["probabilities"] = self._probability_raster(
                paths["probabilities"], grid, probabilities
            )

    def _map_raster(self, path: Path, grid: dict) -> OutputRaster:
        job, names = self.job, self.job.channel_names
        if self.classification:
            dtype = class_dtype(len(names))
            return OutputRaster(
                path, grid, self.maps, dtype, CLASS_NODATA[dtype], job.map_names,
                tags={"CATEGORIES": ",".join(f"{i}:{n}" for i, n in enumerate(names)),
                      "TASK": job.source.task, "OUTPUTS": job.outputs},
                colormap=category_colormap(len(names)) if dtype == "uint8" else None,
            )  # fmt: skip
        return OutputRaster(
            path, grid, self.maps * self.channels, "float32", float("nan"),
            [f"{m}:{v}" if self.maps > 1 else v for m in job.map_names for v in names],
            tags={"VARIABLES": ",".join(names), "TASK": job.source.task, "OUTPUTS": job.outputs},
            resampling="average",
        )  # fmt: skip

    def _probability_raster(self, path: Path, grid: dict, kind: ProbabilityFormat) -> OutputRaster:
        job, names = self.job, self.job.channel_names
        band_names = [f"{m}:{c}" if self.maps > 1 else c for m in job.map_names for c in names]
        tags = {"CATEGORIES": ",".join(names), "TASK": job.source.task, "OUTPUTS": job.outputs}
        if kind == "uint8":
            tags["SCALE"] = f"1/{PROBABILITY_SCALE}"
            return OutputRaster(
                path, grid, len(band_names), "uint8", 255, band_names, tags=tags,
                resampling="average", scale=1.0 / PROBABILITY_SCALE,
            )  # fmt: skip
        return OutputRaster(
            path, grid, len(band_names), "float16", float("nan"), band_names, tags=tags,
            resampling="average",
        )  # fmt: skip

    @property
    def paths(self) -> list[Path]:
        """The target paths of the output rasters."""
        return [r.target for r in self.rasters.values()]

    def add(self, col: int, prediction: np.ndarray, valid: np.ndarray) -> bool:
        """Add the next window; write the rows it completes.

        Args:
            col: the window's first column (its row is the current row band's).
            prediction: (To, K or V, h, w) class probabilities or values.
            valid: (h, w) bool, False where the input had no data.

        Returns:
            True once the last window of the scene was added and the files are published.
        """
        self.accumulator.add(col, prediction.reshape(-1, *prediction.shape[2:]), valid)
        self.windows_in_band += 1
        if self.windows_in_band < len(self.accumulator.col_starts):
            return False
        self.windows_in_band = 0
        top, n = self.accumulator.final_rows()
        width = self.job.width
        for col0 in range(0, width, _CHUNK_COLUMNS):
            col1 = min(col0 + _CHUNK_COLUMNS, width)
            blended, weight = self.accumulator.blended(col0, col1)
            self._write(
                top, col0, blended.reshape(self.maps, self.channels, n, col1 - col0), weight > 0
            )
        self.accumulator.advance()
        if self.accumulator.band < len(self.accumulator.row_starts):
            return False
        for raster in self.rasters.values():
            raster.close()
        return True

    def _write(self, top: int, col: int, blended: np.ndarray, seen: np.ndarray) -> None:
        """Encode (To, K or V, n, w) blended pixels at (top, col) into every raster."""
        if not self.classification:
            values = np.where(seen, blended, np.nan).astype(np.float32)
            self.rasters["map"].write_rows(top, values.reshape(-1, *seen.shape), col)
            return
        classes = self.rasters["map"]
        labels = blended.argmax(1).astype(classes.dtype)
        labels[:, ~seen] = classes.nodata
        classes.write_rows(top, labels, col)
        probabilities = self.rasters.get("probabilities")
        if probabilities is None:
            return
        flat = blended.reshape(-1, *seen.shape)
        if probabilities.dtype == "uint8":
            stored = np.rint(np.clip(flat, 0, 1) * PROBABILITY_SCALE).astype(np.uint8)
            stored[:, ~seen] = 255
        else:
            stored = np.where(seen, flat, np.nan).astype(np.float16)
        probabilities.write_rows(top, stored, col)

    def abort(self) -> None:
        """Drop the temporary files; nothing appears at the target paths."""
        for raster in self.rasters.values():
            raster.abort()
