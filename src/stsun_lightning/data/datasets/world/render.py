"""Rendering of world layouts: crop phenology, material mixtures, sky, sensors, labels.

A fine-grid :class:`Layout` and a day of year give, per fine pixel, weights of the
materials of :mod:`~stsun_lightning.data.datasets.world.spectra`; a sensor's bands turn them into
reflectance (or radar backscatter) that is averaged into the sensor's coarser pixels,
so edges become mixed pixels. Clouds, shadows, illumination, noise and speckle are
added at the sensor's grid.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stsun_lightning.batch import Modality
from stsun_lightning.data.datasets.world.layout import CROP_TYPES, Cover, Layout, smooth_field
from stsun_lightning.data.datasets.world.spectra import (
    MATERIALS,
    Spectrum,
    band_matrix,
    canopy_backscatter_db,
    canopy_shade_fraction,
    is_thermal,
    sar_matrix,
)
from stsun_lightning.data.sensors import Band

__all__ = [
    "CROP_HEIGHT_M",
    "MATERIAL_NAMES",
    "Sky",
    "SurfaceState",
    "crop_state",
    "draw_sky",
    "is_sar",
    "majority",
    "pool",
    "render_optical",
    "render_sar",
    "surface_state",
]

MATERIAL_NAMES = (
    "green_vegetation",
    "dry_vegetation",
    "soil",
    "water",
    "turbid_water",
    "asphalt",
    "roof",
    "roof_tile",
    "shaded_canopy",
    "conifer_canopy",
    "rapeseed_flowers",
    "grass_canopy",
    "gravel_sand",
)
_SURFACE = tuple(MATERIALS[n] for n in MATERIAL_NAMES)
(GREEN, DRY, SOIL, WATER, TURBID, ASPHALT, ROOF, TILE, SHADED, CONIFER, FLOWERS, GRASS, GRAVEL) = (
    range(len(_SURFACE))
)
_BLACK = Spectrum("black", ((400.0, 0.0), (2500.0, 0.0)), vapour_above=1.0)

# Keyframes (day of year, green cover, dry cover, height / maximum height); the rest of a
# pixel is bare soil. Winter crops are sown in autumn and green through the winter; the
# summer crops share one peak spectrum and differ only in timing, so that no single date
# separates every pair while the season does. Grassland is green all year over its thatch,
# and its green share is the grass-sward material (lower NIR than crop canopies).
_PHENOLOGY: dict[str, tuple[tuple[float, float, float, float], ...]] = {
    "wheat": ((0, .2, 0, .05), (60, .25, 0, .08), (110, .85, 0, .5), (150, .9, 0, 1), (175, .35, .55, 1), (195, .05, .85, 1), (200, 0, .4, .15), (240, 0, .3, .1), (255, 0, 0, 0), (290, 0, 0, 0), (330, .12, 0, .03), (365, .2, 0, .05)),
    "maize": ((0, 0, .3, .1), (110, 0, .25, .1), (125, 0, 0, 0), (145, .08, 0, .05), (195, .75, 0, .6), (225, .85, 0, 1), (258, .8, .05, 1), (280, .35, .55, 1), (295, .05, .8, 1), (302, 0, .45, .15), (365, 0, .35, .1)),
    "rapeseed": ((0, .55, 0, .1), (60, .55, 0, .15), (95, .85, 0, .6), (130, .85, 0, 1), (150, .6, .3, 1), (175, .1, .8, 1), (185, 0, .4, .2), (230, 0, .2, .1), (240, 0, 0, 0), (275, .45, 0, .1), (300, .55, 0, .1), (365, .55, 0, .1)),
    "sunflower": ((0, 0, 0, 0), (110, 0, 0, 0), (128, .1, 0, .05), (165, .7, 0, .6), (195, .8, 0, 1), (225, .35, .5, 1), (248, .05, .8, 1), (256, 0, .35, .15), (290, 0, 0, 0), (365, 0, 0, 0)),
    "soybean": ((0, 0, 0, 0), (135, 0, 0, 0), (155, .1, 0, .05), (195, .8, 0, .7), (225, .9, 0, 1), (245, .45, .45, 1), (260, .05, .8, 1), (268, 0, .3, .1), (300, 0, 0, 0), (365, 0, 0, 0)),
    "grassland": ((0, .6, .3, 0), (60, .65, .25, 0), (110, .85, .15, 0), (300, .8, .15, 0), (365, .6, .3, 0)),
}  # fmt: skip
_RAPESEED_FLOWERS = ((0, 0), (95, 0), (108, 0.6), (125, 0.6), (140, 0), (365, 0))
_LEAF_ON = ((0, 0), (100, 0), (140, 1), (280, 1), (320, 0), (365, 0))
CROP_HEIGHT_M = {
    "wheat": 0.9,
    "maize": 2.0,
    "rapeseed": 1.5,
    "sunflower": 1.8,
    "soybean": 0.8,
    "grassland": 0.0,
}
"""Height of each crop at full growth (the canopy-height target for crops)."""


def _interp(doy: np.ndarray, keyframes: Sequence[Sequence[float]], column: int) -> np.ndarray:
    days = np.array([k[0] for k in keyframes], dtype=np.float64)
    values = np.array([k[column] for k in keyframes], dtype=np.float64)
    return np.interp(np.mod(doy, 365.0), days, values)


def crop_state(layout: Layout, doy: float) -> dict[str, np.ndarray]:
    """Per-parcel canopy state on a day of year.

    Parcels without a crop follow the unmown grassland curve (lawns, clearings).

    Returns:
        ``{"green", "dry", "flowers", "height_m"}``, each (P,) float: green and dry cover
        fractions, share of the green cover in flower, crop height.
    """
    table = layout.parcels
    t = doy - table.shift_days.astype(np.float64)
    out = {k: np.zeros(len(t)) for k in ("green", "dry", "flowers", "height_m")}
    for index in range(-1, len(CROP_TYPES)):
        name = CROP_TYPES[index] if index >= 0 else "grassland"
        rows = table.crop == index
        if not rows.any():
            continue
        frames = _PHENOLOGY[name]
        out["green"][rows] = _interp(t[rows], frames, 1) * table.vigour[rows]
        out["dry"][rows] = _interp(t[rows], frames, 2)
        out["height_m"][rows] = _interp(t[rows], frames, 3) * CROP_HEIGHT_M[name]
        if name == "rapeseed":
            out["flowers"][rows] = _interp(t[rows], _RAPESEED_FLOWERS, 1)
        if index == CROP_TYPES.index("grassland"):
            for cut in range(table.mowing_doy.shape[1]):
                since = t[rows] - table.mowing_doy[rows, cut]
                regrowth = np.where((since >= 0) & (since < 30), since / 30.0, 1.0)
                out["green"][rows] *= 0.4 + 0.6 * regrowth
                out["dry"][rows] += 0.15 * (1 - regrowth)
    return out


@dataclass
class SurfaceState:
    """The surface on one date, averaged into sensor pixels (h x w, n = h*w).

    Attributes:
        optical: (n, M) float32 material weights scaled by brightness (parcel management,
            texture, soil brightness): reflectance is ``optical @ band_matrix``.
        shares: (n, M) float32 area shares of the materials (temperatures mix by area).
        radar: (n, M) float32 area shares outside tree crowns: radar sees crowns as canopy
            volume (``canopy_power``) rather than as their leaf materials.
        tree_height_m: (H, W) float32 tree height on the fine grid, 0 without trees.
        height_m: (h, w) float32 mean canopy height (trees and crops) per sensor pixel.
        factor: fine pixels per sensor pixel along each axis.
    """

    optical: np.ndarray
    shares: np.ndarray
    radar: np.ndarray
    tree_height_m: np.ndarray
    height_m: np.ndarray
    factor: int

    @property
    def shape(self) -> tuple[int, int]:
        """(h, w) of the sensor grid."""
        return self.height_m.shape

    def canopy_power(self, band: Band) -> np.ndarray:
        """(n,) float32 linear backscatter of tree crowns per sensor pixel (area-weighted)."""
        trees = self.tree_height_m > 0
        power = np.zeros(self.tree_height_m.shape, dtype=np.float32)
        power[trees] = 10.0 ** (canopy_backscatter_db(self.tree_height_m[trees], band) / 10.0)
        return pool(power, self.factor).ravel()


def _tree_weights(weights: np.ndarray, rows: np.ndarray, layout: Layout, doy: float) -> None:
    """Fill ``weights[rows]`` (tree pixels) with the canopy mixture.

    Sunlit broadleaf and needle crowns, the crown shade that grows with tree height, and in
    winter the bare branches and forest floor of deciduous trees.
    """
    parcel = layout.parcel.ravel()[rows]
    shade = canopy_shade_fraction(layout.tree_height_m.ravel()[rows])
    conifer = layout.parcels.conifer[parcel]
    leaf_on = 1 - layout.parcels.deciduous[parcel] * (1 - _interp(np.array(doy), _LEAF_ON, 1))
    broadleaf = (1 - conifer) * (1 - shade)
    weights[rows, CONIFER] = conifer * (1 - shade)
    weights[rows, GREEN] = broadleaf * leaf_on
    weights[rows, DRY] = broadleaf * (1 - leaf_on) * 0.6  # bare branches
    weights[rows, SOIL] = broadleaf * (1 - leaf_on) * 0.4  # forest floor seen through
    weights[rows, SHADED] = shade * (conifer + (1 - conifer) * leaf_on) + 0.3 * shade * (
        1 - conifer
    ) * (1 - leaf_on)


def _fine_weights(layout: Layout, doy: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Material weights (N, M) and canopy heights (N,) of the fine pixels; tree pixel indices."""
    cover, parcel = layout.cover.ravel(), layout.parcel.ravel()
    table = layout.parcels
    texture = layout.texture.ravel()
    weights = np.zeros((cover.size, len(_SURFACE)), dtype=np.float32)
    crops = crop_state(layout, doy)

    veg = np.flatnonzero((cover == Cover.CROP) | (cover == Cover.GRASS))
    p = parcel[veg]
    green = np.clip(crops["green"][p] * (1 + 0.08 * texture[veg]), 0, 1)
    dry = np.minimum(crops["dry"][p], 1 - green)
    sward = cover[veg] == Cover.GRASS
    weights[veg, GREEN] = np.where(sward, 0.0, green * (1 - crops["flowers"][p]))
    weights[veg, GRASS] = np.where(sward, green, 0.0)
    weights[veg, FLOWERS] = green * crops["flowers"][p]
    weights[veg, DRY] = dry
    weights[veg, SOIL] = (1 - green - dry) * table.soil_brightness[p]

    bare = np.flatnonzero(cover == Cover.BARE)
    weights[bare, GRAVEL] = 0.75 + 0.1 * texture[bare].clip(-1, 1)
    weights[bare, SOIL] = 0.25 * table.soil_brightness[parcel[bare]]
    water = np.flatnonzero(cover == Cover.WATER)
    turbidity = layout.turbidity.ravel()[water]
    weights[water, WATER], weights[water, TURBID] = 1 - turbidity, turbidity
    weights[cover == Cover.ROAD, ASPHALT] = 1.0
    tile = layout.tile_roof.ravel()
    weights[(cover == Cover.BUILDING) & tile, TILE] = 1.0
    weights[(cover == Cover.BUILDING) & ~tile, ROOF] = 1.0
    trees = np.flatnonzero(cover == Cover.TREE)
    _tree_weights(weights, trees, layout, doy)

    height = np.zeros(cover.size, dtype=np.float32)
    height[veg] = crops["height_m"][p]
    height[trees] = layout.tree_height_m.ravel()[trees]
    return weights, height, trees


def surface_state(layout: Layout, doy: float, factor: int) -> SurfaceState:
    """The layout on a day of year, averaged over ``factor`` x ``factor`` fine pixels."""
    weights, height, trees = _fine_weights(layout, doy)
    h, w = layout.cover.shape
    brightness = layout.parcels.brightness[layout.parcel.ravel()] * (
        1 + 0.02 * layout.texture.ravel()
    )

    def pooled(values: np.ndarray) -> np.ndarray:
        return pool(values.reshape(h, w, -1), factor).reshape(-1, values.shape[1])

    shares = weights / np.maximum(weights.sum(1, keepdims=True), 1e-6)
    optical = pooled(weights * brightness[:, None].astype(np.float32))
    radar_shares = shares.copy()
    radar_shares[trees] = 0.0
    return SurfaceState(
        optical=optical,
        shares=pooled(shares),
        radar=pooled(radar_shares),
        tree_height_m=layout.tree_height_m,
        height_m=pool(height.reshape(h, w), factor),
        factor=factor,
    )


def pool(array: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` blocks of the first two axes: (H, W, ...) -> (H/f, W/f, ...)."""
    if factor == 1:
        return array.astype(np.float32)
    total = np.zeros(
        (array.shape[0] // factor, array.shape[1] // factor, *array.shape[2:]), np.float32
    )
    for i in range(factor):
        for j in range(factor):
            total += array[i::factor, j::factor]
    return total / np.float32(factor * factor)


def majority(classes: np.ndarray, num_classes: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Most frequent class per ``factor`` x ``factor`` block (ties to the lower class).

    Args:
        classes: (H, W) integer classes in [0, num_classes).
        num_classes: number of classes.
        factor: fine pixels per output pixel along each axis.

    Returns:
        (H/f, W/f) uint8 classes and (H/f, W/f) float32 share of the winning class.
    """
    shares = np.stack([pool((classes == k).astype(np.float32), factor) for k in range(num_classes)])
    return shares.argmax(0).astype(np.uint8), shares.max(0)


@functools.lru_cache(maxsize=256)
def _band_matrix(spectra: tuple[Spectrum, ...], bands: tuple[Band, ...], toa: bool) -> np.ndarray:
    """Cached :func:`band_matrix` (the integrals are the same for every scene); read-only."""
    matrix = band_matrix(spectra, bands, toa)
    matrix.flags.writeable = False
    return matrix


@dataclass
class Sky:
    """Atmospheric state on the sensor grid; all arrays (h, w) float32 in [0, 1].

    Attributes:
        cloud: opacity of low/mid clouds.
        shadow: opacity of the cloud casting a shadow on each pixel.
        cirrus: opacity of thin high cirrus.
    """

    cloud: np.ndarray
    shadow: np.ndarray
    cirrus: np.ndarray


def _opacity(field: np.ndarray, reference: np.ndarray, cover: float, edge: float) -> np.ndarray:
    """Cloud opacity of ``field``: at least 0.5 on the top ``cover`` share of ``reference``.

    Opacity ramps from 0 to 1 over ``edge`` (in field standard deviations) around the
    threshold, so clouds have thin, semi-transparent edges.
    """
    if cover <= 0:
        return np.zeros_like(field)
    threshold = float(np.quantile(reference, 1 - cover))
    return np.clip(0.5 + (field - threshold) / edge, 0, 1).astype(np.float32)


def draw_sky(
    rng: np.random.Generator, size: int, gsd_m: float, cover: float, cirrus: float = 0.0
) -> Sky:
    """Clouds covering about ``cover`` of the scene, their shadows, and optional cirrus.

    Shadows are the cloud field shifted away from the sun (south-east, 35-55° zenith) by
    cloud height x tan(zenith).

    Args:
        rng: draws the sun geometry and the cloud fields.
        size: scene width and height in pixels.
        gsd_m: pixel size in metres (clouds are ~350 m blobs, shadows cast in metres).
        cover: share of pixels with cloud opacity of at least 0.5 (0-1).
        cirrus: peak opacity of a cirrus veil (0 for none).
    """
    height_m = rng.uniform(800.0, 2500.0)
    reach_px = height_m * math.tan(math.radians(rng.uniform(35, 55))) / gsd_m
    azimuth = rng.uniform(0.1, 0.4) * math.pi
    # In scenes smaller than a few clouds, clouds and shadow reach shrink with the scene so
    # that the cover holds on average over the scene and its shadow window alike.
    reach_px = min(reach_px, size / 2)
    dy, dx = round(reach_px * math.cos(azimuth)), round(reach_px * math.sin(azimuth))
    scale = max(2.0, min(350.0 / gsd_m, size / 6))
    shape = (size + dy, size + dx)
    field = smooth_field(rng, shape, scale) + 0.35 * smooth_field(rng, shape, scale / 4)
    opacity = _opacity(field, field[:size, :size], cover, 0.3)
    veil = np.zeros((size, size), dtype=np.float32)
    if cirrus > 0:
        veil_field = smooth_field(rng, (size, size), 3 * scale)
        veil = cirrus * _opacity(veil_field, veil_field, 0.15, 0.5)
    return Sky(cloud=opacity[:size, :size], shadow=opacity[dy:, dx:], cirrus=veil)


def render_optical(
    state: SurfaceState,
    bands: Sequence[Band],
    rng: np.random.Generator,
    sky: Sky,
    top_of_atmosphere: bool = False,
    thermal_offset_k: float = 0.0,
) -> np.ndarray:
    """Reflectance of an optical sensor on its grid, with sky, illumination and noise.

    Args:
        state: the surface on the sensor grid.
        bands: optical bands (thermal bands give kelvin / 100).
        rng: draws illumination and noise.
        sky: clouds on the sensor grid.
        top_of_atmosphere: Level-1C (with atmosphere) instead of Level-2A.
        thermal_offset_k: seasonal offset of surface temperatures.

    Returns:
        (C, h, w) float32 reflectance (kelvin / 100 for thermal bands).
    """
    thermal = np.array([is_thermal(b) for b in bands])
    matrix = _band_matrix(_SURFACE, tuple(bands), top_of_atmosphere)
    path = _band_matrix((_BLACK,), tuple(bands), top_of_atmosphere)[0] * ~thermal
    values = state.optical @ matrix
    if thermal.any():
        values[:, thermal] = state.shares @ matrix[:, thermal] + thermal_offset_k / 100.0
    h, w = state.shape
    ground = np.ascontiguousarray(values.T).reshape(len(bands), h, w)
    illumination = rng.uniform(0.92, 1.08) * (1 + rng.normal(0, 0.015, len(bands)))
    gain = np.where(thermal, 1.0, illumination).astype(np.float32)[:, None, None]
    path = path.astype(np.float32)[:, None, None]
    shadow = (1 - 0.7 * sky.shadow)[None]
    # Shadows dim the sunlit surface, not the path radiance above it nor the heat it emits.
    lit = np.where(thermal[:, None, None], ground, path + (ground - path) * shadow)
    image = path + (lit - path) * gain
    if sky.cloud.any():
        cloud = _band_matrix((MATERIALS["cloud"],), tuple(bands), top_of_atmosphere)
        image += sky.cloud * (cloud[0][:, None, None] - image)
    if sky.cirrus.any():
        cirrus = _band_matrix((MATERIALS["cirrus"],), tuple(bands), top_of_atmosphere)
        image += sky.cirrus * (cirrus[0][:, None, None] - image)
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    image *= 1 + np.float32(0.01) * noise * ~thermal[:, None, None]
    image += np.float32(0.003) * rng.standard_normal(image.shape, dtype=np.float32)
    return image.astype(np.float32)


def render_sar(state: SurfaceState, bands: Sequence[Band], rng: np.random.Generator) -> np.ndarray:
    """Radar backscatter on the sensor grid with incidence trend and 4-look speckle.

    Returns:
        (C, h, w) float32 sigma0 in dB.
    """
    power = state.radar @ sar_matrix(_SURFACE, bands)
    for c, band in enumerate(bands):
        power[:, c] += state.canopy_power(band)
    h, w = state.shape
    power = power.T.reshape(len(bands), h, w)
    # Backscatter falls from near to far range (left to right), ~2 dB across a scene.
    trend_db = np.linspace(1.0, -1.0, power.shape[2], dtype=np.float32) * rng.uniform(0.5, 1.0)
    power = power * 10.0 ** (trend_db / 10.0)
    looks = 4.0
    speckle = rng.gamma(looks, 1.0 / looks, power.shape).astype(np.float32)
    return (10.0 * np.log10(np.maximum(power * speckle, 1e-6))).astype(np.float32)


def is_sar(band: Band) -> bool:
    """Whether a band is a radar polarisation."""
    return band.modality in (Modality.SAR_VV, Modality.SAR_VH, Modality.SAR_HH, Modality.SAR_HV)
