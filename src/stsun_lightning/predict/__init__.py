"""Prediction over whole rasters: sliding windows, smooth blending, streamed COG outputs.

``stsun predict --config configs/predict.yaml --ckpt_path model.ckpt`` runs a datamodule
that lists whole scenes (:class:`RasterPredictionDataModule` for rasters on disk, or
any datamodule with :class:`ScenePredictionMixin`) with a
:class:`GeoTiffPredictionWriter` callback.
"""

from stsun_lightning.predict.callback import GeoTiffPredictionWriter
from stsun_lightning.predict.jobs import (
    JobBatchSampler,
    PredictionJob,
    ScenePredictionMixin,
    SceneWindowDataset,
)
from stsun_lightning.predict.outputs import SceneOutputs
from stsun_lightning.predict.rasters import RasterPredictionDataModule, group_scenes
from stsun_lightning.predict.windows import RowBandAccumulator, blend_weights, window_starts
from stsun_lightning.predict.writer import OutputRaster

__all__ = [
    "GeoTiffPredictionWriter",
    "JobBatchSampler",
    "OutputRaster",
    "PredictionJob",
    "RasterPredictionDataModule",
    "RowBandAccumulator",
    "SceneOutputs",
    "ScenePredictionMixin",
    "SceneWindowDataset",
    "blend_weights",
    "group_scenes",
    "window_starts",
]
