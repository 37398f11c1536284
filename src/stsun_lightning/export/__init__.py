"""Export a trained network to ONNX and run the exported file (``stsun export``)."""

from stsun_lightning.export.command import export_model, served_from_checkpoint
from stsun_lightning.export.onnx import OnnxModel, export_onnx, graph_size, read_metadata
from stsun_lightning.export.served import ServedBand, ServedStsun, ServingSpec

__all__ = [
    "OnnxModel",
    "ServedBand",
    "ServedStsun",
    "ServingSpec",
    "export_model",
    "export_onnx",
    "graph_size",
    "read_metadata",
    "served_from_checkpoint",
]
