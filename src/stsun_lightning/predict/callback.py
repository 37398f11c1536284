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
from stsun_lightning.predict.fingerprint import model_fingerprint
from stsun_lightning.predict.layers import (
    LayerFormat,
    OutputSettings,
    ProbabilityFormat,
    output_layers,
)
from stsun_lightning.predict.outputs import SceneOutputs
from stsun_lightning.predict.uncertainty import UncertaintyKind

__all__ = ["GeoTiffPredictionWriter"]

log = logging.getLogger(__name__)


class GeoTiffPredictionWriter(BasePredictionWriter):
    """Writes whole-scene predictions as Cloud-Optimized GeoTIFFs, window by window.

    Use with a datamodule that predicts whole scenes (one with ``prediction_jobs``, such
    as :class:`~stsun_lightning.data.RasterPredictionDataModule` or
    :class:`~stsun_lightning.data.SpectralWorldDataModule`). For each scene it writes
    ``<output_dir>/<stem>.tif``: a class map (smallest integer type, category names and
    a colour table by category name in the metadata) or float32 values (NaN nodata), one
    band per output map (one per date for ``outputs: per_date``); and, for class maps if
    asked, per-class probabilities in ``<stem>_probabilities.tif`` and one uncertainty
    band per output map in ``<stem>_uncertainty.tif``. The progress bar counts windows,
    and scenes written beside it. Each file is published atomically. Predictions are not
    also kept in memory (``return_predictions`` is turned off).

    Every file records what made it (task, categories or variables, outputs, the
    probability format or uncertainty kind, and a fingerprint of the weights: a hash of
    the model's state dict, see :mod:`~stsun_lightning.predict.fingerprint`). A rerun
    skips a scene whose files all exist with the same record and redoes every other one;
    ``overwrite`` redoes them all.

    Args:
        output_dir: folder of the outputs.
        probabilities: "none", "uint8" (``round(p × 254)``, 255 nodata, scale in the
            metadata) or "float16".
        uncertainty: "none", "entropy" (normalised by log K) or "margin" (1 − (p₁ − p₂)),
            both in [0, 1], 0 = certain; see :mod:`~stsun_lightning.predict.uncertainty`.
        uncertainty_format: "uint8" (scaled as uint8 probabilities) or "float16".
        overwrite: predict scenes again even where their outputs are current.
    """

    def __init__(
        self,
        output_dir: str | Path = "predictions",
        probabilities: ProbabilityFormat = "none",
        uncertainty: UncertaintyKind = "none",
        uncertainty_format: LayerFormat = "uint8",
        overwrite: bool = False,
    ) -> None:
        super().__init__(write_interval="batch")
        _check_choice("probabilities", probabilities, ("none", "uint8", "float16"))
        _check_choice("uncertainty", uncertainty, ("none", "entropy", "margin"))
        _check_choice("uncertainty_format", uncertainty_format, ("uint8", "float16"))
        self.output_dir = Path(output_dir)
        self.probabilities: ProbabilityFormat = probabilities
        self.uncertainty: UncertaintyKind = uncertainty
        self.uncertainty_format: LayerFormat = uncertainty_format
        self.overwrite = overwrite
        self._open: dict[int, SceneOutputs] = {}
        self._settings: OutputSettings | None = None
        self._run: tuple[L.Trainer, L.LightningModule] | None = None
        self.written: list[Path] = []
        self._scenes_done = 0

    def settings(self) -> OutputSettings:
        """What this run writes, with the fingerprint of the module's weights.

        Computed at first use, once the checkpoint is restored (Lightning restores it
        after ``setup`` and before building the predict dataloader).
        """
        if self._settings is None:
            if self._run is None:
                raise RuntimeError("GeoTiffPredictionWriter is used before its setup.")
            trainer, module = self._run
            self._settings = OutputSettings(
                self.probabilities, self.uncertainty, self.uncertainty_format,
                model=model_fingerprint(module), checkpoint=str(trainer.ckpt_path or ""),
            )  # fmt: skip
        return self._settings

    def difference(self, job: PredictionJob) -> str | None:
        """Why ``job`` must be predicted (a file missing or made otherwise), or None."""
        for name, layer in output_layers(self.output_dir, job, self.settings()).items():
            reason = layer.difference()
            if reason is not None:
                return f"its {name} {layer.path.name}: {reason}"
        return None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Check the datamodule, skip current scenes, keep no predictions in memory."""
        if stage != "predict":
            return
        datamodule = trainer.datamodule
        if not isinstance(datamodule, ScenePredictionMixin):
            raise TypeError(
                f"GeoTiffPredictionWriter needs a datamodule that predicts whole scenes "
                f"(with prediction_jobs()); got {type(datamodule).__name__}. Use "
                "stsun_lightning.data.RasterPredictionDataModule for rasters on disk."
            )
        self._run, self._settings = (trainer, pl_module), None
        if not self.overwrite:
            datamodule.skip_predictions(self._skip)
        trainer.predict_loop.return_predictions = False
        self.written = []
        self._scenes_done = 0

    def _skip(self, job: PredictionJob) -> bool:
        reason = self.difference(job)
        if reason is None:
            log.info("Skipping %s: its outputs are current.", job.stem)
            return True
        log.info("Predicting %s: %s.", job.stem, reason)
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
                    self.settings(),
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


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}.")
