"""Landscape layouts of the synthetic world: parcels, forests, towns, roads, rivers, lakes.

A :class:`Layout` is drawn on a fine grid (a fraction of the sensor GSD) with every size
given in metres, so the same landscape rules hold at 1 m and at 30 m; the renderer
averages the fine grid into mixed pixels at the sensor GSD.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

__all__ = [
    "CROP_TYPES",
    "Cover",
    "Layout",
    "LayoutSpec",
    "ParcelTable",
    "Zone",
    "generate_layout",
    "smooth_field",
]

CROP_TYPES = ("wheat", "maize", "rapeseed", "sunflower", "soybean", "grassland")
"""Crop types of open-land parcels; the index is the parcel's ``crop`` value."""
GRASSLAND = CROP_TYPES.index("grassland")


class Cover(IntEnum):
    """Surface cover of a fine pixel."""

    WATER = 0
    TREE = 1
    GRASS = 2
    BUILDING = 3
    ROAD = 4
    BARE = 5
    CROP = 6


class Zone(IntEnum):
    """Land use of the parcel a pixel belongs to."""

    OPEN = 0
    FOREST = 1
    URBAN = 2


@dataclass(frozen=True)
class LayoutSpec:
    """How a landscape looks; sizes in metres, shares of parcels (≈ of area).

    Attributes:
        parcel_m: typical parcel spacing.
        elongation: largest length/width ratio of parcels.
        urban: share of urban parcels.
        forest: share of forest parcels.
        bare: share of open-land parcels left bare (fallow, ploughed).
        lake: share of the area under lakes (in scenes that have lakes).
        river_probability: chance that a river crosses the scene.
        river_width_m: (min, max) river width.
        main_roads: (min, max) number of straight main roads.
        road_width_m: main-road width.
        street_width_m: street width in towns.
        building_cell_m: size of the lot that holds one building.
        block_cells: lots per block side between streets.
    """

    parcel_m: float = 200.0
    elongation: float = 2.5
    urban: float = 0.12
    forest: float = 0.2
    bare: float = 0.06
    lake: float = 0.03
    river_probability: float = 0.5
    river_width_m: tuple[float, float] = (15.0, 40.0)
    main_roads: tuple[int, int] = (1, 3)
    road_width_m: float = 10.0
    street_width_m: float = 8.0
    building_cell_m: float = 30.0
    block_cells: int = 4


@dataclass
class ParcelTable:
    """Per-parcel attributes, arrays of shape (P,) indexed by parcel id.

    Attributes:
        zone: :class:`Zone` of the parcel.
        crop: index into :data:`CROP_TYPES`, -1 for non-crop parcels.
        shift_days: sowing/phenology offset of the parcel (farmer's timing).
        vigour: scale of the green fraction (0.85-1.05).
        soil_brightness: scale of the soil reflectance (moisture, organic matter).
        brightness: overall reflectance scale (management, row direction).
        stand_height_m: tree height of forest stands (and urban trees), 0 elsewhere.
        conifer: needle-leaf share of the canopy.
        deciduous: share of the canopy that drops its leaves in winter.
        mowing_doy: (P, 2) days of year of grassland cuts.
    """

    zone: np.ndarray
    crop: np.ndarray
    shift_days: np.ndarray
    vigour: np.ndarray
    soil_brightness: np.ndarray
    brightness: np.ndarray
    stand_height_m: np.ndarray
    conifer: np.ndarray
    deciduous: np.ndarray
    mowing_doy: np.ndarray

    def copy(self) -> ParcelTable:
        """A deep copy."""
        return ParcelTable(
            **{f.name: getattr(self, f.name).copy() for f in dataclasses.fields(self)}
        )


@dataclass
class Layout:
    """A landscape on a fine square grid; every array is (H, W).

    Attributes:
        res_m: metres per fine pixel.
        cover: uint8 :class:`Cover`.
        zone: uint8 :class:`Zone` of the pixel's parcel.
        parcel: int32 parcel id (row of ``parcels``).
        tree_height_m: float32 tree height, 0 where there are no trees.
        turbidity: float32 0 (clear) - 1 (turbid) for water pixels.
        tile_roof: bool, buildings with clay-tile roofs.
        texture: float32 zero-mean smooth field for within-parcel variation.
        urban_pattern: uint8 cover the pixel would have if built up (used for new towns).
        floodplain: float32 flood order, higher floods first; -inf where no water nearby.
        parcels: per-parcel attributes.
    """

    res_m: float
    cover: np.ndarray
    zone: np.ndarray
    parcel: np.ndarray
    tree_height_m: np.ndarray
    turbidity: np.ndarray
    tile_roof: np.ndarray
    texture: np.ndarray
    urban_pattern: np.ndarray
    floodplain: np.ndarray
    parcels: ParcelTable

    def copy(self) -> Layout:
        """A deep copy."""
        arrays = {
            f.name: getattr(self, f.name).copy()
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), np.ndarray)
        }
        return Layout(res_m=self.res_m, parcels=self.parcels.copy(), **arrays)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Stationary Gaussian random field with correlation length ``scale_px``.

    The field is drawn on a periodic domain at least three correlation lengths wide and
    cropped, so a field much larger than ``shape`` varies little across it instead of
    wrapping around; values are normalised over the whole domain.

    Returns:
        (H, W) float32, zero mean and unit standard deviation over the domain.
    """
    domain = tuple(max(n, min(math.ceil(3 * scale_px), 4096)) for n in shape)
    noise = rng.standard_normal(domain, dtype=np.float32)
    fy = np.fft.fftfreq(domain[0]).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(domain[1]).astype(np.float32)[None, :]
    kernel = np.exp(np.float32(-2.0 * (math.pi * scale_px) ** 2) * (fx**2 + fy**2))
    field = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=domain)
    field -= field.mean()
    field /= max(float(field.std()), 1e-12)
    return field[: shape[0], : shape[1]].astype(np.float32)


def _grid(size: int, res_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in metres from the top-left corner: x (1, W), y (H, 1)."""
    centres = (np.arange(size, dtype=np.float32) + 0.5) * res_m
    return centres[None, :], centres[:, None]


def _rotate(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(angle), math.sin(angle)
    return x * c + y * s, -x * s + y * c


def _parcels(rng, x, y, spec: LayoutSpec, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Jittered-grid Voronoi parcels, elongated along ``angle``.

    Returns:
        Parcel id per pixel (H, W) int32 and seed positions (P, 2) (x, y) in metres.
    """
    u, v = _rotate(x, y, angle)
    stretch = rng.uniform(1.0, spec.elongation)
    u = u / stretch
    cell = spec.parcel_m / math.sqrt(stretch)  # keep the parcel area ~ parcel_m²
    u0, v0 = float(u.min()) - cell, float(v.min()) - cell
    nu = int((float(u.max()) - u0) // cell) + 3
    nv = int((float(v.max()) - v0) // cell) + 3
    seed_u = (np.arange(nu)[:, None] + rng.uniform(0.15, 0.85, (nu, nv))) * cell + u0
    seed_v = (np.arange(nv)[None, :] + rng.uniform(0.15, 0.85, (nu, nv))) * cell + v0
    iu = ((u - u0) // cell).astype(np.int32)
    iv = ((v - v0) // cell).astype(np.int32)
    best = np.full(np.broadcast(u, v).shape, np.inf, dtype=np.float32)
    parcel = np.zeros(best.shape, dtype=np.int32)
    for du in (-1, 0, 1):
        for dv in (-1, 0, 1):
            cu, cv = np.clip(iu + du, 0, nu - 1), np.clip(iv + dv, 0, nv - 1)
            d2 = (u - seed_u[cu, cv]) ** 2 + (v - seed_v[cu, cv]) ** 2
            closer = d2 < best
            best = np.where(closer, d2, best)
            parcel = np.where(closer, cu * nv + cv, parcel)
    c, s = math.cos(angle), math.sin(angle)
    su, sv = seed_u.ravel() * stretch, seed_v.ravel()
    seeds = np.stack([su * c - sv * s, su * s + sv * c], axis=1)
    return parcel, seeds


def _sample(field: np.ndarray, points_m: np.ndarray, res_m: float) -> np.ndarray:
    """Values of a (H, W) field at (P, 2) (x, y) points, clamped to the grid."""
    h, w = field.shape
    col = np.clip((points_m[:, 0] / res_m).astype(np.int64), 0, w - 1)
    row = np.clip((points_m[:, 1] / res_m).astype(np.int64), 0, h - 1)
    return field[row, col]


def _top_area(order: np.ndarray, area: np.ndarray, share: float) -> np.ndarray:
    """The first parcels of ``order`` that together cover about ``share`` of the area."""
    covered = np.cumsum(area[order]) - area[order] / 2
    return order[covered < share * area.sum()]


def _zones(rng, parcel: np.ndarray, seeds, res_m, spec: LayoutSpec) -> np.ndarray:
    """Zone per parcel: towns and forests cluster where smooth fields are high."""
    # The fields are only read at the seeds, so a coarse 64 x 64 grid is enough.
    cell_m = parcel.shape[0] * res_m / 64
    scale = 4 * spec.parcel_m / cell_m
    urbanness = _sample(smooth_field(rng, (64, 64), scale), seeds, cell_m)
    forestness = _sample(smooth_field(rng, (64, 64), scale), seeds, cell_m)
    area = np.bincount(parcel.ravel(), minlength=len(seeds)).astype(np.float64)
    zone = np.full(len(seeds), Zone.OPEN, dtype=np.uint8)
    zone[_top_area(np.argsort(-urbanness, kind="stable"), area, spec.urban)] = Zone.URBAN
    rest = np.flatnonzero(zone == Zone.OPEN)
    order = rest[np.argsort(-forestness[rest], kind="stable")]
    zone[_top_area(order, area, spec.forest)] = Zone.FOREST
    return zone


def _parcel_table(rng: np.random.Generator, zone: np.ndarray, spec: LayoutSpec) -> ParcelTable:
    p = len(zone)
    crop = np.full(p, -1, dtype=np.int8)
    open_ids = np.flatnonzero(zone == Zone.OPEN)
    bare = rng.random(len(open_ids)) < spec.bare
    cropped = open_ids[~bare]
    # A shuffled cycle keeps the crop types balanced even in small scenes.
    cycle = np.resize(rng.permutation(len(CROP_TYPES)), len(cropped))
    crop[rng.permutation(cropped)] = cycle
    forest = zone == Zone.FOREST
    return ParcelTable(
        zone=zone,
        crop=crop,
        shift_days=rng.normal(0.0, 6.0, p).astype(np.float32),
        vigour=rng.uniform(0.85, 1.05, p).astype(np.float32),
        soil_brightness=rng.uniform(0.7, 1.25, p).astype(np.float32),
        brightness=rng.normal(1.0, 0.04, p).astype(np.float32),
        stand_height_m=np.where(forest, rng.uniform(5.0, 35.0, p), rng.uniform(6.0, 18.0, p)).astype(np.float32),
        conifer=np.where(forest, rng.beta(0.7, 0.7, p), rng.uniform(0.0, 0.2, p)).astype(np.float32),
        deciduous=rng.uniform(0.6, 1.0, p).astype(np.float32),
        mowing_doy=np.sort(rng.uniform([135, 195], [170, 240], (p, 2)), axis=1).astype(np.float32),
    )  # fmt: skip


def _urban_pattern(rng, x, y, spec: LayoutSpec, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Streets, paved yards, buildings and gardens on a lot grid aligned with ``angle``.

    Returns:
        Cover (H, W) uint8 (ROAD, BUILDING or GRASS) and tile-roof flags (H, W) bool.
    """
    u, v = _rotate(x, y, angle)
    cell = spec.building_cell_m
    u0, v0 = float(u.min()) - cell, float(v.min()) - cell
    fu, fv = (u - u0) / cell, (v - v0) / cell
    iu, iv = fu.astype(np.int32), fv.astype(np.int32)
    fu, fv = fu - iu, fv - iv
    shape = (int(iu.max()) + 2, int(iv.max()) + 2)
    built = rng.random(shape) < 0.75
    paved = ~built & (rng.random(shape) < 0.3)
    size_u, size_v = rng.uniform(0.35, 0.8, shape), rng.uniform(0.35, 0.8, shape)
    centre_u = rng.uniform(0.5 - (0.9 - size_u) / 2, 0.5 + (0.9 - size_u) / 2)
    centre_v = rng.uniform(0.5 - (0.9 - size_v) / 2, 0.5 + (0.9 - size_v) / 2)
    tile = rng.random(shape) < 0.4
    inside = (np.abs(fu - centre_u[iu, iv]) < size_u[iu, iv] / 2) & (
        np.abs(fv - centre_v[iu, iv]) < size_v[iu, iv] / 2
    )
    block = spec.block_cells * cell
    street = ((u - u0) % block < spec.street_width_m) | ((v - v0) % block < spec.street_width_m)
    cover = np.full(street.shape, Cover.GRASS, dtype=np.uint8)
    cover[built[iu, iv] & inside] = Cover.BUILDING
    cover[paved[iu, iv] & inside] = Cover.ROAD
    cover[street] = Cover.ROAD
    return cover, tile[iu, iv] & (cover == Cover.BUILDING)


def _line_distance(x, y, point, angle: float) -> np.ndarray:
    """Distance (H, W) from pixel centres to the line through ``point`` along ``angle``."""
    return np.abs((x - point[0]) * math.sin(angle) - (y - point[1]) * math.cos(angle))


def _river_distance(rng, x, y, extent_m: float) -> np.ndarray:
    """Distance (H, W) to a meandering centreline crossing the scene (two sine meanders)."""
    angle = rng.uniform(0, math.pi)
    centre = extent_m / 2
    a, b = _rotate(x - centre, y - centre, angle)
    amp = rng.uniform(0.05, 0.15, 2) * extent_m
    wavelength = extent_m / rng.uniform(0.5, 1.5, 2) * np.array([1.0, 0.4])
    phase = rng.uniform(0, 2 * math.pi, 2)
    offset = rng.uniform(-0.25, 0.25) * extent_m
    arg = [2 * math.pi * a / wavelength[k] + phase[k] for k in range(2)]
    line = offset + amp[0] * np.sin(arg[0]) + amp[1] * np.sin(arg[1])
    slope = sum(amp[k] * 2 * math.pi / wavelength[k] * np.cos(arg[k]) for k in range(2))
    # Dividing the offset across the valley by the local slope gives the normal distance,
    # so the river keeps its width in the bends.
    return np.abs(b - line) / np.sqrt(1 + slope**2)


def generate_layout(rng: np.random.Generator, size: int, res_m: float, spec: LayoutSpec) -> Layout:
    """Draw a landscape on a ``size`` x ``size`` grid of ``res_m`` metre pixels.

    Returns:
        The layout; all randomness comes from ``rng`` in a fixed order.
    """
    shape = (size, size)
    x, y = _grid(size, res_m)
    extent = size * res_m
    angle = rng.uniform(0, math.pi)
    parcel, seeds = _parcels(rng, x, y, spec, angle)
    parcels = _parcel_table(rng, _zones(rng, parcel, seeds, res_m, spec), spec)
    zone = parcels.zone[parcel]
    texture = smooth_field(rng, shape, 15.0 / res_m)
    # Gaps and garden trees are 10-20 m wide; never finer than 2 px so they stay blobs.
    small = smooth_field(rng, shape, max(8.0 / res_m, 2.0))
    urban_cover, tile = _urban_pattern(rng, x, y, spec, angle)

    crop = parcels.crop[parcel]
    cover = np.where(crop == GRASSLAND, Cover.GRASS, Cover.CROP).astype(np.uint8)
    cover[crop < 0] = Cover.BARE
    cover[zone == Zone.FOREST] = Cover.TREE
    cover[(zone == Zone.FOREST) & (small < -1.7)] = Cover.GRASS  # canopy gaps
    urban = zone == Zone.URBAN
    cover[urban] = urban_cover[urban]
    urban_trees = urban & (cover == Cover.GRASS) & (small > 1.0)
    cover[urban_trees] = Cover.TREE
    height = parcels.stand_height_m[parcel] * (1 + 0.08 * texture)
    tree_height = np.where(cover == Cover.TREE, np.clip(height, 2.0, 40.0), 0.0).astype(np.float32)

    turbidity = np.zeros(shape, dtype=np.float32)
    floodplain = np.full(shape, -np.inf, dtype=np.float32)
    if spec.lake > 0 and rng.random() < 0.6:
        lakes = smooth_field(rng, shape, 120.0 / res_m)
        threshold = float(np.quantile(lakes[~urban], 1 - spec.lake)) if (~urban).any() else np.inf
        lake = (lakes > threshold) & ~urban
        cover[lake] = Cover.WATER
        turbidity[lake] = rng.uniform(0.0, 0.3)
        floodplain = np.maximum(floodplain, (lakes - threshold) * 100.0)
    if rng.random() < spec.river_probability:
        distance = _river_distance(rng, x, y, extent)
        width = rng.uniform(*spec.river_width_m)
        river = distance < width / 2
        cover[river] = Cover.WATER
        turbidity[river] = rng.uniform(0.5, 1.0)
        wobble = 40.0 * smooth_field(rng, shape, 60.0 / res_m)
        floodplain = np.maximum(floodplain, width / 2 - distance + wobble)
    for _ in range(int(rng.integers(spec.main_roads[0], spec.main_roads[1] + 1))):
        road_angle = angle + rng.choice([0.0, math.pi / 2]) + rng.normal(0, 0.1)
        point = rng.uniform(0, extent, 2)
        cover[_line_distance(x, y, point, road_angle) < spec.road_width_m / 2] = Cover.ROAD
    tree_height[cover != Cover.TREE] = 0.0
    return Layout(
        res_m=res_m,
        cover=cover,
        zone=zone,
        parcel=parcel,
        tree_height_m=tree_height,
        turbidity=turbidity,
        tile_roof=tile & (cover == Cover.BUILDING),
        texture=texture,
        urban_pattern=urban_cover,
        floodplain=floodplain,
        parcels=parcels,
    )
