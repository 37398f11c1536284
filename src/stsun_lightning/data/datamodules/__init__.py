"""Datamodules: the base of every datamodule, the GeoTIFF, raster, SpectralWorld, mixing and TorchGeo benchmark datamodules."""
