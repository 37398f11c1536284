"""The output rasters of one scene, filled window by window as predictions arrive."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stsun_lightning.data.datasets.windows import PredictionJob
from stsun_lightning.predict.layers import (
    UNIT_NODATA,
    UNIT_SCALE,
    OutputSettings,
    output_layers,
)
from stsun_lightning.predict.memory import release_free_memory
from stsun_lightning.predict.uncertainty import uncertainty
from stsun_lightning.predict.windows import RowBandAccumulator
from stsun_lightning.predict.writer import OutputRaster

__all__ = ["SceneOutputs", "chunk_columns", "encode_unit"]

_CHUNK_BYTES = 8 * 2**20  # finished rows are blended, encoded and written ~8 MiB at a time
_TILE = 256  # column chunks are whole tiles of the temporary files


def chunk_columns(channels: int, rows: int, width: int) -> int:
    """Columns blended and written at once: about 8 MiB of float32 sums, whole tiles.

    The chunk's size is bounded whatever the number of channels (a per-date map of many
    dates and classes has thousands), at least one tile wide.
    """
    columns = _CHUNK_BYTES // max(4 * channels * rows, 1)
    return min(width, max(_TILE, columns // _TILE * _TILE))


def encode_unit(values: np.ndarray, seen: np.ndarray, dtype: str) -> np.ndarray:
    """(C, n, w) values in [0, 1] stored as ``dtype``; pixels not ``seen`` are nodata.

    uint8 stores ``round(v × 254)`` with 255 nodata; float16 stores the value, NaN nodata.
    """
    if dtype == "uint8":
        stored = np.rint(np.clip(values, 0, 1) * UNIT_SCALE).astype(np.uint8)
        stored[:, ~seen] = UNIT_NODATA
        return stored
    return np.where(seen, values, np.nan).astype(np.float16)


class SceneOutputs:
    """Blends the windows of one job and streams finished rows to its output rasters.

    Windows must arrive in the order of
    :class:`~stsun_lightning.data.datasets.windows.SceneWindowDataset` (row band by row
    band, left to right); memory holds one row band of weighted sums, and finished rows
    are blended, encoded and written in chunks of columns of bounded size.

    Args:
        job: the scene and what is predicted.
        folder: output folder.
        window: window side.
        overlap: overlap between windows.
        settings: which files to write (:func:`~stsun_lightning.predict.layers.output_layers`).
    """

    def __init__(
        self,
        job: PredictionJob,
        folder: Path,
        window: int,
        overlap: int,
        settings: OutputSettings | None = None,
    ) -> None:
        settings = settings or OutputSettings()
        self.job = job
        self.maps, self.channels = len(job.map_names), len(job.channel_names)
        self.classification = job.source.is_classification
        self.uncertainty = settings.uncertainty
        self.accumulator = RowBandAccumulator(
            self.maps * self.channels, job.height, job.width, window, overlap
        )
        self.windows_in_band = 0
        grid = job.profile()
        self.layers = output_layers(folder, job, settings)
        self.rasters: dict[str, OutputRaster] = {}
        try:
            for name, layer in self.layers.items():
                self.rasters[name] = OutputRaster(layer, grid)
        except BaseException:
            self.abort()
            raise

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
        step = chunk_columns(self.maps * self.channels, n, width)
        for col0 in range(0, width, step):
            col1 = min(col0 + step, width)
            blended, weight = self.accumulator.blended(col0, col1)
            self._write(
                top, col0, blended.reshape(self.maps, self.channels, n, col1 - col0), weight > 0
            )
        self.accumulator.advance()
        release_free_memory()  # the band's buffers, freed, back to the system
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
        if probabilities is not None:
            flat = blended.reshape(-1, *seen.shape)
            probabilities.write_rows(top, encode_unit(flat, seen, probabilities.dtype), col)
        doubt = self.rasters.get("uncertainty")
        if doubt is not None:
            # From the blended probabilities: what the written map and probabilities say.
            measure = uncertainty(blended, self.uncertainty, axis=1)  # (To, n, w)
            doubt.write_rows(top, encode_unit(measure, seen, doubt.dtype), col)

    def abort(self) -> None:
        """Drop the temporary files; nothing appears at the target paths."""
        for raster in self.rasters.values():
            raster.abort()
