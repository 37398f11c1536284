"""Prediction over whole rasters: sliding windows, smooth blending, streamed COG outputs."""

from stsun_lightning.predict.scene import PredictionRequest, ScenePredictor
from stsun_lightning.predict.windows import RowBandAccumulator, blend_weights, window_starts
from stsun_lightning.predict.writer import OutputRaster

__all__ = [
    "OutputRaster",
    "PredictionRequest",
    "RowBandAccumulator",
    "ScenePredictor",
    "blend_weights",
    "window_starts",
]
