"""Data: sensors, the input specification, readers, datasets and datamodules.

Laid out as TorchGeo's own package: ``io/`` (files, grids, handles, statistics),
``datasets/`` (GeoTIFF series, patches, windows, SpectralWorld), ``datamodules/``,
``samplers/`` and ``transforms/``. The public names are exported here.
"""

from stsun_lightning.batch import Batch, Modality, OutputKind, collate_batches
from stsun_lightning.data.datamodules.base import StsunDataModule
from stsun_lightning.data.datamodules.benchmarks import (
    FTWDataModule,
    L7IrishDataModule,
    L8BiomeDataModule,
    LEVIRCDDataModule,
    LoveDADataModule,
    OSCDDataModule,
    PastisDataModule,
    PotsdamDataModule,
    SEN12MSDataModule,
    TorchGeoDataModule,
    VaihingenDataModule,
)
from stsun_lightning.data.datamodules.geotiff import GeoTiffDataModule
from stsun_lightning.data.datamodules.mixing import MixedDataModule
from stsun_lightning.data.datamodules.prediction import ScenePredictionMixin
from stsun_lightning.data.datamodules.rasters import RasterPredictionDataModule
from stsun_lightning.data.datamodules.world import SpectralWorldDataModule
from stsun_lightning.data.datasets.world.virtual import VirtualSensors
from stsun_lightning.data.datasets.world.world import SpectralWorld
from stsun_lightning.data.examples import example_band_metadata, example_batch
from stsun_lightning.data.sensors import (
    Band,
    Sensor,
    get_sensor,
    list_sensors,
    load_sensor_yaml,
    register_sensor,
)
from stsun_lightning.data.spec import InputSpec, LabelSpec

__all__ = [
    "Band",
    "Batch",
    "FTWDataModule",
    "GeoTiffDataModule",
    "InputSpec",
    "L7IrishDataModule",
    "L8BiomeDataModule",
    "LEVIRCDDataModule",
    "LabelSpec",
    "LoveDADataModule",
    "MixedDataModule",
    "Modality",
    "OSCDDataModule",
    "OutputKind",
    "PastisDataModule",
    "PotsdamDataModule",
    "RasterPredictionDataModule",
    "SEN12MSDataModule",
    "ScenePredictionMixin",
    "Sensor",
    "SpectralWorld",
    "SpectralWorldDataModule",
    "StsunDataModule",
    "TorchGeoDataModule",
    "VaihingenDataModule",
    "VirtualSensors",
    "collate_batches",
    "example_band_metadata",
    "example_batch",
    "get_sensor",
    "list_sensors",
    "load_sensor_yaml",
    "register_sensor",
]
