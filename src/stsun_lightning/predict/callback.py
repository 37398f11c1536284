"""``stsun predict`` to files: a prediction writer that streams windows into COGs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_warn

from stsun_lightning.batch import Batch
from stsun_lightning.data.datamodules.prediction import ScenePredictionMixin
from stsun_lightning.data.datasets.windows import PredictionJob, SceneWindowDataset
from stsun_lightning.models import StsunOutput
from stsun_lightning.predict.outputs import ProbabilityFormat, SceneOutputs, output_paths

__all__ = ["GeoTiffPredictionWriter"]

log = logging.getLogger(__name__)


class GeoTiffPredictionWriter(BasePredictionWriter):
    """Writes whole-scene predictions as Cloud-Optimized GeoTIFFs, window by window.

    Use with a datamodule that predicts whole scenes (one with ``prediction_jobs``, such
    as :class:`~stsun_lightning.predict.RasterPredictionDataModule` or
    :class:`~stsun_lightning.data.SpectralWorldDataModule`). For each scene it writes
    ``<output_dir>/<stem>.tif``: a class map (smallest integer type, category names and
    a colour table in the metadata) or float32 values (NaN nodata), one band per output
    map (one per date for ``outputs: per_date``); and, if asked, per-class
    probabilities in ``<stem>_probabilities.tif``. The progress bar counts windows, and
    scenes written beside it. Each file is published atomically;
    scenes whose files exist are skipped unless ``overwrite``. Predictions are not also
    kept in memory (``return_predictions`` is turned off).

    Args:
        output_dir: folder of the outputs.
        probabilities: "none", "uint8" (``round(p × 254)``, 255 nodata, scale in the
            metadata) or "float16".
        overwrite: predict scenes again even where their outputs exist.
    """

    def __init__(
        self,
        output_dir: str | Path = "predictions",
        probabilities: ProbabilityFormat = "none",
        overwrite: bool = False,
    ) -> None:
        super().__init__(write_interval="batch")
        if probabilities not in ("none", "uint8", "float16"):
            raise ValueError(
                f"probabilities must be 'none', 'uint8' or 'float16', got {probabilities!r}."
            )
        self.output_dir = Path(output_dir)
        self.probabilities: ProbabilityFormat = probabilities
        self.overwrite = overwrite
        self._open: dict[int, SceneOutputs] = {}
        self.written: list[Path] = []
        self._scenes_done = 0

    def is_complete(self, job: PredictionJob) -> bool:
        """Whether every output of ``job`` exists (files only appear once complete)."""
        return all(
            p.exists() for p in output_paths(self.output_dir, job, self.probabilities).values()
        )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Check the datamodule, skip complete scenes, keep no predictions in memory."""
        if stage != "predict":
            return
        datamodule = trainer.datamodule
        if not isinstance(datamodule, ScenePredictionMixin):
            raise TypeError(
                f"GeoTiffPredictionWriter needs a datamodule that predicts whole scenes "
                f"(with prediction_jobs()); got {type(datamodule).__name__}. Use "
                "stsun_lightning.predict.RasterPredictionDataModule for rasters on disk."
            )
        if not self.overwrite:
            datamodule.skip_predictions(self._skip)
        trainer.predict_loop.return_predictions = False
        self.written = []
        self._scenes_done = 0

    def _skip(self, job: PredictionJob) -> bool:
        if self.is_complete(job):
            log.info("Skipping %s: its outputs are complete.", job.stem)
            return True
        return False

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: StsunOutput,
        batch_indices: list[int] | None,
        batch: Batch,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Blend the batch's windows into their scene's rasters; publish finished scenes."""
        loaders = trainer.predict_dataloaders
        loader = loaders[dataloader_idx] if isinstance(loaders, list | tuple) else loaders
        dataset: SceneWindowDataset = loader.dataset
        if batch_indices is None:
            raise RuntimeError("GeoTiffPredictionWriter needs the window indices of each batch.")
        if prediction.logits is not None:
            maps = prediction.logits.float().softmax(2)
        else:
            maps = prediction.values.float()
        maps_np = maps.cpu().numpy()
        valid = batch.valid_mask.cpu().numpy()
        for item, index in enumerate(batch_indices):
            ref = dataset.windows[index]
            outputs = self._open.get(ref.job)
            if outputs is None:
                outputs = SceneOutputs(
                    dataset.jobs[ref.job], self.output_dir, dataset.window, dataset.overlap,
                    self.probabilities,
                )  # fmt: skip
                self._open[ref.job] = outputs
            if outputs.add(ref.col, maps_np[item], self._label_grid(valid[item], maps_np[item])):
                self.written += outputs.paths
                del self._open[ref.job]
                self._scenes_done += 1
        self._show_files(trainer, len(dataset.jobs))

    def _show_files(self, trainer: L.Trainer, total: int) -> None:
        """Scenes written so far, beside the progress bar over windows."""
        try:
            bar = getattr(trainer.progress_bar_callback, "predict_progress_bar", None)
        except TypeError:  # Lightning's bar before it is created
            return
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(scenes=f"{self._scenes_done}/{total}", refresh=False)

    @staticmethod
    def _label_grid(valid: np.ndarray, prediction: np.ndarray) -> np.ndarray:
        """The validity mask on the prediction's grid (the input grid when not resized)."""
        if valid.shape == prediction.shape[-2:]:
            return valid
        raise ValueError(
            f"Prediction grid {prediction.shape[-2:]} differs from the input window {valid.shape}: "
            "whole-scene prediction writes on the input grid."
        )

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Report scenes that did not receive all their windows (nothing half-written)."""
        unfinished = list(self._open.values())
        self._abort()
        if unfinished:
            names = ", ".join(o.job.stem for o in unfinished)
            rank_zero_warn(
                f"Prediction ended before these scenes were complete: {names}. Nothing was "
                "written for them (limit_predict_batches or fast_dev_run cut them short?)."
            )
        log.info("Wrote %d prediction files to %s.", len(self.written), self.output_dir)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Drop the temporary files of unfinished scenes."""
        self._abort()

    def _abort(self) -> None:
        for outputs in self._open.values():
            outputs.abort()
        self._open = {}

    def state_dict(self) -> dict[str, Any]:
        """Nothing to save: complete outputs on disk are the state."""
        return {}
