"""Sliding windows over a raster, blended smoothly, accumulated one row band at a time.

Memory is bounded by one band of rows (window height × raster width), never by the
raster: a row of the output is final, and written, as soon as no later window covers it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from stsun_lightning.data.datasets.windows import window_starts

__all__ = ["RowBandAccumulator", "blend_weights"]


def blend_weights(window: int, overlap: int) -> np.ndarray:
    """(window, window) weights that ramp up linearly over ``overlap`` pixels from each edge.

    Overlapping windows are averaged with these weights, so each window's least
    reliable pixels (near its border, with the least context) count least and no seam
    shows. Weights stay > 0, so a pixel covered by one window keeps its prediction.
    """
    ramp = np.minimum(1.0, (np.arange(window, dtype=np.float32) + 0.5) / max(overlap, 1))
    ramp = np.minimum(ramp, ramp[::-1])
    return np.outer(ramp, ramp).astype(np.float32)


class RowBandAccumulator:
    """Weighted sums of window predictions for the rows of the current row band.

    Args:
        channels: predicted channels per pixel (K classes or V values).
        height: raster rows.
        width: raster columns.
        window: window side.
        overlap: overlap between windows.
    """

    def __init__(self, channels: int, height: int, width: int, window: int, overlap: int) -> None:
        self.height, self.width, self.window = height, width, window
        self.row_starts = window_starts(height, window, window - overlap)
        self.col_starts = window_starts(width, window, window - overlap)
        self.weights = blend_weights(window, overlap)
        rows = min(window, height)
        self.sums = np.zeros((channels, rows, width), dtype=np.float32)
        self.total = np.zeros((rows, width), dtype=np.float32)
        self.band = 0

    def add(self, col: int, prediction: np.ndarray, valid: np.ndarray) -> None:
        """Add one window of the current row band.

        Args:
            col: the window's first column.
            prediction: (channels, window, window), clipped to the raster where it reaches past.
            valid: (window, window) bool; invalid pixels add nothing.
        """
        rows = min(prediction.shape[1], self.sums.shape[1])
        cols = min(prediction.shape[2], self.width - col)
        weight = self.weights[:rows, :cols] * valid[:rows, :cols]
        self.sums[:, :rows, col : col + cols] += prediction[:, :rows, :cols] * weight
        self.total[:rows, col : col + cols] += weight

    def final_rows(self) -> tuple[int, int]:
        """The rows of the current band that no later window covers: (first row, count)."""
        top = self.row_starts[self.band]
        last = self.band == len(self.row_starts) - 1
        return top, (self.height - top) if last else self.row_starts[self.band + 1] - top

    def blended(self, col0: int, col1: int) -> tuple[np.ndarray, np.ndarray]:
        """Blended predictions of the final rows, columns ``col0:col1``.

        Read in column chunks, so no copy of the whole row band is ever made.

        Returns:
            (channels, n, col1 - col0) float32 blended values and their (n, col1 - col0)
            total weight (0 where no valid pixel was seen).
        """
        _, n = self.final_rows()
        total = self.total[:n, col0:col1]
        return self.sums[:, :n, col0:col1] / np.maximum(total, 1e-12), total.copy()

    def advance(self) -> None:
        """Drop the final rows: keep the rows the next band overlaps, zero the rest, in place."""
        _, n = self.final_rows()
        keep = self.sums.shape[1] - n
        if keep > 0:
            self.sums[:, :keep] = self.sums[:, n : n + keep].copy()
            self.total[:keep] = self.total[n : n + keep].copy()
        self.sums[:, max(keep, 0) :] = 0.0
        self.total[max(keep, 0) :] = 0.0
        self.band += 1

    def bands(self) -> Iterator[tuple[int, list[int]]]:
        """(row start, column starts) of each row band, in order."""
        for row in self.row_starts:
            yield row, self.col_starts
