"""Changes between two dates of a layout: new buildings, clearcuts, floods, crop rotation."""

from __future__ import annotations

import numpy as np

from stsun_lightning.data.datasets.world.layout import GRASSLAND, Cover, Layout, Zone, smooth_field

__all__ = ["apply_changes"]


def _pick(rng: np.random.Generator, layout: Layout, mask: np.ndarray, count: int) -> list[int]:
    """Up to ``count`` distinct parcels under ``mask``, drawn by area; slivers are skipped."""
    ids, sizes = np.unique(layout.parcel[mask], return_counts=True)
    keep = sizes >= 0.1 * sizes.max()
    ids, sizes = ids[keep], sizes[keep]
    if len(ids) == 0:
        return []
    chosen = rng.choice(ids, size=min(count, len(ids)), replace=False, p=sizes / sizes.sum())
    return [int(i) for i in np.atleast_1d(chosen)]


def apply_changes(rng: np.random.Generator, layout: Layout) -> tuple[Layout, np.ndarray]:
    """A later state of ``layout``: new buildings on fields, clearcuts, floods.

    Crop types also rotate on some fields, which changes their spectra but is not a change
    of land cover.

    Returns:
        The new layout and the change mask (H, W) bool (pixels whose cover changed
        because of an event).
    """
    after = layout.copy()
    area_km2 = layout.cover.size * layout.res_m**2 / 1e6
    half = smooth_field(rng, layout.cover.shape, 200.0 / layout.res_m) > rng.normal(0, 0.5)
    crops = np.isin(layout.cover, (Cover.CROP, Cover.GRASS)) & (layout.zone == Zone.OPEN)
    for pid in _pick(rng, layout, crops, 1 + int(rng.poisson(0.8 * area_km2))):
        site = layout.parcel == pid
        after.cover[site] = layout.urban_pattern[site]
        after.cover[site & half] = Cover.BARE  # still a construction site
        after.zone[site] = Zone.URBAN
        after.tile_roof[site] = False
        after.parcels.crop[pid] = -1  # gardens now follow the lawn curve
    forest = (layout.cover == Cover.TREE) & (layout.zone == Zone.FOREST)
    for pid in _pick(rng, layout, forest, 1 + int(rng.poisson(0.5 * area_km2))):
        cut = (layout.parcel == pid) & (half if rng.random() < 0.5 else True)
        after.cover[cut] = Cover.BARE if rng.random() < 0.6 else Cover.GRASS
        after.tree_height_m[cut] = 0.0
    finite = np.isfinite(layout.floodplain)
    if finite.any() and rng.random() < 0.5:
        dry = finite & (layout.cover != Cover.WATER)
        share = rng.uniform(0.03, 0.1) * layout.cover.size
        if dry.sum() > share:
            level = np.sort(layout.floodplain[dry])[::-1][int(share)]
            flooded = dry & (layout.floodplain > level)
            after.cover[flooded] = Cover.WATER
            after.turbidity[flooded] = 1.0
            after.tree_height_m[flooded] = 0.0
    # Arable fields rotate (not a land-cover change); permanent grassland stays.
    arable = (after.parcels.crop >= 0) & (after.parcels.crop != GRASSLAND)
    rotate = arable & (rng.random(len(arable)) < 0.25)
    after.parcels.crop[rotate] = rng.integers(0, GRASSLAND, int(rotate.sum()))
    after.parcels.shift_days[:] = rng.normal(0.0, 6.0, len(arable))
    changed = (after.cover != layout.cover) | (after.zone != layout.zone)
    changed |= np.abs(after.tree_height_m - layout.tree_height_m) > 5.0
    return after, changed
