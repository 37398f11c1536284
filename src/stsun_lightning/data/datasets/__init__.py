"""Datasets of one-item batches: GeoTIFF series and patches, prediction windows, SpectralWorld."""
