"""Training patches seen through virtual sensors drawn per item from (seed, epoch, index).

:class:`VirtualSensorPatchDataset` wraps the training patches of one SpectralWorld source
(:class:`~stsun_lightning.data.datasets.patches.ScenePatchDataset`). For each item it draws,
from the item's own generator, whether the patch is seen through the source's real sensor
(read from its files) or through a virtual sensor
(:func:`~stsun_lightning.data.datasets.world.virtual.draw_virtual_sensor`) rendered from the
world's stored surfaces; optionally it jitters the band metadata or the rendered response.
Every item is padded to the same band count and patch side (``band_mask`` and
``valid_mask`` False there), so items of different sensors and GSDs collate.

Shapes: T dates, C bands (padded to ``max_bands``), p patch side, H×W rendered pixels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from stsun_lightning.batch import Batch
from stsun_lightning.data.datasets.geotiff import GeoTiffRasterDataset
from stsun_lightning.data.datasets.items import window_batch
from stsun_lightning.data.datasets.patches import ScenePatchDataset
from stsun_lightning.data.datasets.series import fold_normalisation, normalise_window
from stsun_lightning.data.datasets.world.surfaces import (
    render_surface,
    resample_classes,
    resample_values,
)
from stsun_lightning.data.datasets.world.virtual import (
    VirtualSensors,
    draw_virtual_sensor,
    jitter_bands,
    reflectance_statistics,
)
from stsun_lightning.data.samplers.epochs import EpochDataset, item_rng
from stsun_lightning.data.sensors import Band, band_metadata
from stsun_lightning.data.transforms.augment import augment_patch

__all__ = ["VirtualSensorPatchDataset", "pad_item"]

_VIRTUAL_STREAM = 17  # the sensor's draw and its rendering noise
_JITTER_STREAM = 19  # metadata jitter of items read through the real sensor
_FLIP_STREAM = 7  # as ScenePatchDataset's, so an item flips alike whichever sensor
_STORED_SCALE = 1e-4  # the world's reflectance is stored × 10000


def pad_item(batch: Batch, bands: int, size: int) -> Batch:
    """A one-item batch padded to ``bands`` bands and ``size`` × ``size`` pixels.

    Padded bands are masked at every frame (``band_mask`` False, metadata 0), padded
    pixels are not valid and their targets ignored (-1 or NaN); values there are NaN.

    Raises:
        ValueError: the item has more bands or pixels than the padding's.
    """
    _, t, c, h, w = batch.image.shape
    if c > bands or h > size or w > size:
        raise ValueError(
            f"Cannot pad an item of {c} bands and {h}×{w} px to {bands} bands, {size}×{size} px."
        )
    if (c, h, w) == (bands, size, size):
        return batch
    image = batch.image.new_full((1, t, bands, size, size), float("nan"))
    image[:, :, :c, :h, :w] = batch.image
    band_mask = batch.band_mask.new_zeros((1, t, bands))
    band_mask[:, :, :c] = batch.band_mask
    valid = batch.valid_mask.new_zeros((1, size, size))
    valid[:, :h, :w] = batch.valid_mask

    def widen(values: torch.Tensor) -> torch.Tensor:
        return torch.cat([values, values.new_zeros((1, bands - c))], 1)

    target = batch.target
    if target is not None:
        fill = -1 if not target.is_floating_point() else float("nan")
        padded = target.new_full((*target.shape[:-2], size, size), fill)
        padded[..., :h, :w] = target
        target = padded
    return dataclasses.replace(
        batch,
        image=image,
        wavelength_nm=widen(batch.wavelength_nm),
        bandwidth_nm=widen(batch.bandwidth_nm),
        modality=widen(batch.modality),
        band_mask=band_mask,
        valid_mask=valid,
        target=target,
    )


class VirtualSensorPatchDataset(EpochDataset[Batch]):
    """Training patches of one source, each through its real sensor or a virtual one.

    Args:
        patches: the source's training patches (scenes normalised with
            :func:`~stsun_lightning.data.datasets.world.virtual.reflectance_statistics`).
        surfaces: per scene of ``patches``, its surfaces, one file per frame.
        config: the virtual sensors' ranges and options.
        top_of_atmosphere: render Level-1C reflectance (the source's sensor's level).
        seed: seed of the draws.
    """

    def __init__(
        self,
        patches: ScenePatchDataset,
        surfaces: Sequence[GeoTiffRasterDataset],
        config: VirtualSensors,
        top_of_atmosphere: bool = False,
        seed: int = 0,
    ) -> None:
        if len(surfaces) != len(patches.scenes):
            raise ValueError(f"Got {len(surfaces)} surfaces for {len(patches.scenes)} scenes.")
        self.patches, self.surfaces, self.config = patches, list(surfaces), config
        self.top_of_atmosphere, self.seed = top_of_atmosphere, seed
        widest = max(s.series.num_bands for s in patches.scenes)
        if widest > config.max_bands:
            raise ValueError(
                f"Source {patches.source.name!r} has {widest} bands, more than virtual_sensors"
                f".max_bands = {config.max_bands}; raise max_bands to at least {widest}."
            )

    def __len__(self) -> int:
        return len(self.patches)

    def item(self, epoch: int, index: int) -> Batch:
        """Patch ``index`` of ``epoch``, padded to ``max_bands`` and the patch side."""
        rng = item_rng(self.seed, _VIRTUAL_STREAM, epoch, index)
        p = self.patches.patch_size
        if rng.random() >= self.config.probability:
            batch = self.patches.item(epoch, index)
            batch = self._jitter_metadata(batch, item_rng(self.seed, _JITTER_STREAM, epoch, index))
            return pad_item(batch, self.config.max_bands, p)
        return pad_item(self.virtual_item(epoch, index, rng), self.config.max_bands, p)

    def virtual_item(self, epoch: int, index: int, rng: np.random.Generator) -> Batch:
        """Patch ``index`` of ``epoch`` through the virtual sensor ``rng`` draws (unpadded)."""
        base, config = self.patches, self.config
        ref = base.patch(epoch, index)
        scene = base.scenes[ref.scene]
        # A virtual sensor draws its own GSD: it reads the patch's own window, never a
        # coarsened crop's larger one.
        bounds = base.window_bounds(dataclasses.replace(ref, factor=1))
        frames = [(f.day,) for f in scene.series.frames]
        surfaces = self.surfaces[ref.scene].read(bounds, frames)  # (T, S, p, p)
        sensor = draw_virtual_sensor(rng, config, scene.gsd_m, base.patch_size)
        moved = jitter_bands(sensor.bands, rng, config.jitter_nm, config.jitter_fwhm)
        rendered, declared = (
            (sensor.bands, moved) if config.jitter == "metadata" else (moved, sensor.bands)
        )
        stored = render_surface(surfaces, rendered, rng, sensor.size, self.top_of_atmosphere)
        folded = fold_normalisation(reflectance_statistics(declared), _STORED_SCALE)
        window = normalise_window(stored, {"virtual": folded}, {"virtual": slice(None)})
        target = None
        if scene.labels is not None:
            target = self._target(scene.labels.read(bounds), sensor.size)
        image, valid = window.image, window.valid
        if target is not None:
            target[..., ~valid] = -1 if base.source.is_classification else np.nan
        if base.augment:
            flips = item_rng(self.seed, _FLIP_STREAM, epoch, index)
            image, valid, target = augment_patch(flips, image, valid, target)
        return window_batch(
            [band_metadata(declared)],
            sensor.gsd_m,
            scene.series.dates,
            image,
            valid,
            base.task_row,
            base.outputs,
            base.rows,
            base.source.is_classification,
            base.source.name,
            target,
            window.time_mask,
            window.band_mask,
        )

    def _target(self, target: np.ndarray, size: int) -> np.ndarray:
        """The label window on the virtual sensor's grid (majority or mean by area)."""
        if self.patches.source.is_classification:
            return resample_classes(target, size, len(self.patches.source.categories))
        return resample_values(target, size)

    def _jitter_metadata(self, batch: Batch, rng: np.random.Generator) -> Batch:
        """A real sensor's item with its declared band metadata jittered (not its values)."""
        config = self.config
        if config.jitter_nm == 0 and config.jitter_fwhm == 0:
            return batch
        bands = [
            Band(f"b{i}", float(w), float(f), 1.0, int(m))
            for i, (w, f, m) in enumerate(
                zip(
                    batch.wavelength_nm[0].tolist(),
                    batch.bandwidth_nm[0].tolist(),
                    batch.modality[0].tolist(),
                    strict=True,
                )
            )
        ]
        metadata = band_metadata(jitter_bands(bands, rng, config.jitter_nm, config.jitter_fwhm))
        return dataclasses.replace(
            batch,
            wavelength_nm=metadata["wavelength_nm"][None],
            bandwidth_nm=metadata["bandwidth_nm"][None],
        )
