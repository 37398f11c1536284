"""Prediction to files: sliding windows blended smoothly and streamed into COGs.

``stsun predict --config ... --ckpt_path model.ckpt`` runs any datamodule that predicts
whole scenes (:class:`~stsun_lightning.data.ScenePredictionMixin`: the GeoTIFF, raster
and SpectralWorld datamodules) with a :class:`GeoTiffPredictionWriter` callback. This
package depends on ``stsun_lightning.data``, never the reverse.
"""

from stsun_lightning.predict.callback import GeoTiffPredictionWriter
from stsun_lightning.predict.fingerprint import model_fingerprint
from stsun_lightning.predict.layers import Layer, OutputSettings, output_layers
from stsun_lightning.predict.outputs import SceneOutputs
from stsun_lightning.predict.uncertainty import margin, normalised_entropy
from stsun_lightning.predict.windows import RowBandAccumulator, blend_weights
from stsun_lightning.predict.writer import OutputRaster

__all__ = [
    "GeoTiffPredictionWriter",
    "Layer",
    "OutputRaster",
    "OutputSettings",
    "RowBandAccumulator",
    "SceneOutputs",
    "blend_weights",
    "margin",
    "model_fingerprint",
    "normalised_entropy",
    "output_layers",
]
