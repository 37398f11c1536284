"""Data: sensors, the batch contract, and datasets."""

from stsun_lightning.data.batch import Batch, OutputKind, collate_batches
from stsun_lightning.data.datamodule import StsunDataModule
from stsun_lightning.data.examples import example_band_metadata, example_batch
from stsun_lightning.data.geotiff_datamodule import GeoTiffDataModule
from stsun_lightning.data.mixing import MixedDataModule
from stsun_lightning.data.sensors import (
    Band,
    Modality,
    Sensor,
    get_sensor,
    list_sensors,
    load_sensor_yaml,
    register_sensor,
)

__all__ = [
    "Band",
    "Batch",
    "GeoTiffDataModule",
    "MixedDataModule",
    "Modality",
    "OutputKind",
    "Sensor",
    "StsunDataModule",
    "collate_batches",
    "example_band_metadata",
    "example_batch",
    "get_sensor",
    "list_sensors",
    "load_sensor_yaml",
    "register_sensor",
]
