"""Predict a whole scene of any size with sliding windows, streamed to a GeoTIFF."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from tqdm.auto import tqdm

from stsun_lightning.data.batch import collate_batches
from stsun_lightning.data.scenes import Scene, SceneReader, scene_batch
from stsun_lightning.models import Stsun
from stsun_lightning.predict.windows import RowBandAccumulator
from stsun_lightning.predict.writer import (
    CLASS_NODATA,
    OutputRaster,
    category_colormap,
    class_dtype,
)

__all__ = ["PredictionRequest", "ScenePredictor"]

log = logging.getLogger(__name__)


@dataclass
class PredictionRequest:
    """What to predict: a task, and the categories or variables by name.

    Attributes:
        task: task name (a row of the model's task vocabulary).
        categories: category names to predict over (any subset of the vocabulary).
        variables: regression variables to predict (instead of categories).
        outputs: "state" (at the last date), "change" (first to last) or "aggregate".
    """

    task: str
    categories: list[str] = field(default_factory=list)
    variables: list[str] = field(default_factory=list)
    outputs: Literal["state", "change", "aggregate"] = "state"

    def __post_init__(self) -> None:
        if bool(self.categories) == bool(self.variables):
            raise ValueError(
                "A prediction request names either categories or variables (exactly one of them)."
            )


class ScenePredictor:
    """Runs a network over a scene window by window and writes a COG.

    Args:
        model: the network (put in eval mode here).
        window: window side in pixels.
        overlap: overlap between neighbouring windows in pixels (blended smoothly).
        batch_size: windows per forward pass.
        device: where the network runs.
        progress: show a progress bar over windows.
    """

    def __init__(
        self,
        model: Stsun,
        window: int = 256,
        overlap: int = 64,
        batch_size: int = 4,
        device: str | torch.device = "cpu",
        progress: bool = True,
    ) -> None:
        if not 0 <= overlap < window:
            raise ValueError(f"Overlap must be in [0, window={window}), got {overlap}.")
        self.model = model.eval().to(device)
        self.window, self.overlap, self.batch_size = window, overlap, batch_size
        self.device = torch.device(device)
        self.progress = progress

    def predict(
        self,
        scene: Scene,
        reader: SceneReader,
        request: PredictionRequest,
        output: str | Path,
        overwrite: bool = False,
    ) -> Path:
        """Predict ``scene`` into ``output`` (skipped when it exists, unless ``overwrite``).

        Class requests write a class map (values are positions in ``request.categories``,
        the names and a colour table in the file); value requests write one float32
        band per variable (NaN nodata).

        Returns:
            The output path.
        """
        output = Path(output)
        if output.exists() and not overwrite:
            log.info("Skipping %s: already complete.", output)
            return output
        classification = bool(request.categories)
        vocabulary = (
            self.model.category_embedding if classification else self.model.variable_embedding
        )
        names = request.categories or request.variables
        rows = vocabulary.vocabulary.indices(names)
        task_row = self.model.task_embedding.vocabulary.index(request.task)
        with rasterio.open(next(iter(scene.inputs.values())).files[0]) as reference:
            profile = {"crs": reference.crs, "transform": reference.transform}
            height, width = reference.height, reference.width
        profile.update(height=height, width=width)
        raster = self._open_output(output, profile, names, classification)
        accumulator = RowBandAccumulator(len(names), height, width, self.window, self.overlap)
        total = len(accumulator.row_starts) * len(accumulator.col_starts)
        with (
            raster,
            tqdm(total=total, desc=output.name, disable=not self.progress, unit="window") as bar,
        ):
            for row, cols in accumulator.bands():
                for start in range(0, len(cols), self.batch_size):
                    chunk = cols[start : start + self.batch_size]
                    windows = [
                        reader.read(scene, Window(c, row, self.window, self.window)) for c in chunk
                    ]
                    batch = collate_batches(
                        [scene_batch(scene, im, va, task_row, request.outputs, rows, classification, "predict")
                         for im, va in windows]
                    )  # fmt: skip
                    with torch.no_grad():
                        out = self.model(batch.to(self.device))
                    pred = out.logits.softmax(2) if classification else out.values
                    pred = pred[:, 0].float().cpu().numpy()
                    for col, p, (_, valid) in zip(chunk, pred, windows, strict=True):
                        accumulator.add(col, p, valid)
                    bar.update(len(chunk))
                top, blended, weight = accumulator.finish_band()
                raster.write_rows(top, self._encode(blended, weight > 0, classification, raster))
        return output

    @staticmethod
    def _open_output(
        output: Path, profile: dict, names: list[str], classification: bool
    ) -> OutputRaster:
        if classification:
            dtype = class_dtype(len(names))
            return OutputRaster(
                output, profile, 1, dtype, CLASS_NODATA[dtype], ["class"],
                tags={"CATEGORIES": ",".join(f"{i}:{n}" for i, n in enumerate(names))},
                colormap=category_colormap(len(names)) if dtype == "uint8" else None,
            )  # fmt: skip
        return OutputRaster(
            output, profile, len(names), "float32", float("nan"), list(names),
            tags={"VARIABLES": ",".join(names)}, resampling="average",
        )  # fmt: skip

    @staticmethod
    def _encode(
        blended: np.ndarray, seen: np.ndarray, classification: bool, raster: OutputRaster
    ) -> np.ndarray:
        """(K or V, n, width) blended predictions -> what the file stores."""
        if classification:
            classes = blended.argmax(0).astype(raster.dtype)
            classes[~seen] = raster.nodata
            return classes[None]
        return np.where(seen[None], blended, np.nan).astype(np.float32)
