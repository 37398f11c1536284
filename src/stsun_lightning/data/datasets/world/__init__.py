"""SpectralWorld, the built-in synthetic world: spectra, layouts, rendering, files."""

from stsun_lightning.data.datasets.world.world import SpectralWorld

__all__ = ["SpectralWorld"]
