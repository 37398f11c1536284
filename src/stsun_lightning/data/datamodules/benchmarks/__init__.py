"""Datamodules wrapping TorchGeo's benchmark datasets, yielding the project's batches.

Each wrapper reads a downloaded copy in TorchGeo's own layout (nothing is downloaded),
attaches sensor metadata from the registry, acquisition dates where the dataset has
them, and category names shared across datasets where they mean the same thing.
Configs name them by full path, e.g.
``class_path: stsun_lightning.data.datamodules.benchmarks.LoveDADataModule``.
"""

from stsun_lightning.data.datamodules.benchmarks.base import BenchmarkDataset, TorchGeoDataModule
from stsun_lightning.data.datamodules.benchmarks.change import LEVIRCDDataModule, OSCDDataModule
from stsun_lightning.data.datamodules.benchmarks.clouds import (
    L7IrishDataModule,
    L8BiomeDataModule,
    LandsatCloudDataModule,
)
from stsun_lightning.data.datamodules.benchmarks.landcover import (
    LoveDADataModule,
    PotsdamDataModule,
    SEN12MSDataModule,
    VaihingenDataModule,
)
from stsun_lightning.data.datamodules.benchmarks.readers import Example, SampleReader
from stsun_lightning.data.datamodules.benchmarks.timeseries import FTWDataModule, PastisDataModule

__all__ = [
    "BenchmarkDataset",
    "Example",
    "FTWDataModule",
    "L7IrishDataModule",
    "L8BiomeDataModule",
    "LEVIRCDDataModule",
    "LandsatCloudDataModule",
    "LoveDADataModule",
    "OSCDDataModule",
    "PastisDataModule",
    "PotsdamDataModule",
    "SEN12MSDataModule",
    "SampleReader",
    "TorchGeoDataModule",
    "VaihingenDataModule",
]
