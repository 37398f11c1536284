"""The sources (datasets) of the synthetic world: sensors, tasks, dates, landscapes, labels.

Each :class:`WorldSource` says which sensors image a scene, on which dates, under how
much cloud, what the landscape looks like and which label comes with it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from stsun_lightning.data.datasets.world.layout import CROP_TYPES, Cover, Layout, LayoutSpec, Zone
from stsun_lightning.data.sensors import Band, get_sensor

__all__ = [
    "COARSE_CLASSES",
    "FINE_CLASSES",
    "SOURCES",
    "WorldInput",
    "WorldSource",
    "coarse_classes",
    "crop_classes",
    "fine_classes",
]

COARSE_CLASSES = ("water", "tree_cover", "cropland", "built_up", "bare_soil", "grassland")
"""Land-cover classes of the 10-30 m sources, label values 1..6."""
FINE_CLASSES = ("water", "tree_cover", "grassland", "building", "road", "bare_soil", "cropland")
"""Land-cover classes of the 1 m aerial source, label values 1..7."""
CHANGE_CLASSES = ("no_change", "change")
CLOUD_CLASSES = ("clear", "cloud")

_COARSE_OF_COVER = {
    Cover.WATER: "water",
    Cover.TREE: "tree_cover",
    Cover.GRASS: "grassland",
    Cover.BUILDING: "built_up",
    Cover.ROAD: "built_up",
    Cover.BARE: "bare_soil",
    Cover.CROP: "cropland",
}
_FINE_OF_COVER = {
    Cover.WATER: "water",
    Cover.TREE: "tree_cover",
    Cover.GRASS: "grassland",
    Cover.BUILDING: "building",
    Cover.ROAD: "road",
    Cover.BARE: "bare_soil",
    Cover.CROP: "cropland",
}


def _lookup(names: dict[Cover, str], classes: tuple[str, ...]) -> np.ndarray:
    """Cover code -> label value (1-based index into ``classes``)."""
    table = np.zeros(len(Cover), dtype=np.uint8)
    for cover, name in names.items():
        table[cover] = classes.index(name) + 1
    return table


def coarse_classes(layout: Layout) -> np.ndarray:
    """Coarse land cover (H, W) uint8, 1..6; gardens and yards in towns are built-up."""
    labels = _lookup(_COARSE_OF_COVER, COARSE_CLASSES)[layout.cover]
    town = (layout.zone == Zone.URBAN) & ~np.isin(layout.cover, (Cover.TREE, Cover.WATER))
    labels[town] = COARSE_CLASSES.index("built_up") + 1
    return labels


def fine_classes(layout: Layout) -> np.ndarray:
    """Fine land cover (H, W) uint8, 1..7, straight from the cover."""
    return _lookup(_FINE_OF_COVER, FINE_CLASSES)[layout.cover]


def crop_classes(layout: Layout) -> np.ndarray:
    """Crop type (H, W) uint8, 1..6 on farmed parcels, 0 elsewhere."""
    crop = layout.parcels.crop[layout.parcel].astype(np.int16) + 1
    farmed = np.isin(layout.cover, (Cover.CROP, Cover.GRASS)) & (layout.zone == Zone.OPEN)
    return np.where(farmed, crop, 0).astype(np.uint8)


@dataclass(frozen=True)
class WorldInput:
    """One input of a source: a sensor and the bands stored from it.

    Attributes:
        name: input name in file names and the manifest, e.g. ``"s2"``.
        sensor: registry name of the sensor.
        band_names: bands stored, in order; empty for all of the sensor's bands.
        top_of_atmosphere: Level-1C style reflectance (with atmosphere).
    """

    name: str
    sensor: str
    band_names: tuple[str, ...] = ()
    top_of_atmosphere: bool = False

    @property
    def bands(self) -> tuple[Band, ...]:
        """The stored bands, from the sensor registry."""
        return get_sensor(self.sensor).select(self.band_names or None)


def _doy_date(year: int, doy: float) -> dt.date:
    return dt.date(year, 1, 1) + dt.timedelta(days=round(doy) - 1)


def _season(base: tuple[int, ...], jitter: int) -> Callable[[np.random.Generator], list[dt.date]]:
    def draw(rng: np.random.Generator) -> list[dt.date]:
        days = np.array(base) + rng.integers(-jitter, jitter + 1, len(base))
        return [_doy_date(2021, d) for d in np.maximum.accumulate(days)]

    return draw


def _single(low: int, high: int) -> Callable[[np.random.Generator], list[dt.date]]:
    def draw(rng: np.random.Generator) -> list[dt.date]:
        return [_doy_date(2021, rng.integers(low, high + 1))]

    return draw


def _year_apart(rng: np.random.Generator) -> list[dt.date]:
    first = _doy_date(2020, rng.integers(150, 241))
    return [first, first + dt.timedelta(days=365 + int(rng.integers(-10, 11)))]


@dataclass(frozen=True)
class WorldSource:
    """A dataset of the synthetic world.

    Attributes:
        name: source name (folder and manifest key).
        task: task name for the datamodule.
        outputs: ``"state"``, ``"change"`` or ``"aggregate"``.
        inputs: sensors imaging every scene on the same dates and grid.
        gsd_m: pixel size of every input and the label.
        layout: how the landscape looks.
        label: ``"crops"``, ``"coarse"``, ``"fine"``, ``"change"``, ``"cloud"`` or
            ``"height"``.
        dates: draws the acquisition dates of a scene.
        cloud_cover: (min, max) cloud cover of a cloudy date.
        clear_chance: chance that a date is cloud-free.
        cirrus: peak opacity of cirrus veils (0 for none).
        swath_edge_chance: chance that a date misses a corner of the scene (nodata).
        mask_clouds: set the label to nodata under thick clouds (single-date optical tasks).
    """

    name: str
    task: str
    outputs: str
    inputs: tuple[WorldInput, ...]
    gsd_m: float
    layout: LayoutSpec
    label: str
    dates: Callable[[np.random.Generator], list[dt.date]] = field(compare=False)
    cloud_cover: tuple[float, float] = (0.0, 0.0)
    clear_chance: float = 1.0
    cirrus: float = 0.0
    swath_edge_chance: float = 0.0
    mask_clouds: bool = False

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names of label values 1..K (empty for regression)."""
        return {
            "crops": CROP_TYPES,
            "coarse": COARSE_CLASSES,
            "fine": FINE_CLASSES,
            "change": CHANGE_CLASSES,
            "cloud": CLOUD_CLASSES,
        }.get(self.label, ())


_S2 = WorldInput("s2", "sentinel2_l2a")
_S1 = WorldInput("s1", "sentinel1", ("VV", "VH"))
_FARMLAND = LayoutSpec(
    parcel_m=160.0, urban=0.05, forest=0.08, bare=0.04, lake=0.01, river_probability=0.4
)
_MIXED = LayoutSpec(
    parcel_m=200.0, urban=0.15, forest=0.22, bare=0.07, lake=0.03, river_probability=0.6
)

SOURCES: dict[str, WorldSource] = {
    s.name: s
    for s in (
        WorldSource(
            "s2_crops", "time_series_segmentation", "aggregate", (_S2,), 10.0, _FARMLAND, "crops",
            _season((40, 90, 120, 150, 180, 210, 245, 290), 6),
            cloud_cover=(0.05, 0.4), clear_chance=0.4, swath_edge_chance=0.15,
        ),
        WorldSource(
            "landsat8_landcover", "semantic_segmentation", "state",
            (WorldInput("landsat8", "landsat8_oli_tirs", ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B10")),),
            30.0,
            LayoutSpec(parcel_m=350.0, urban=0.15, forest=0.22, bare=0.08, lake=0.04, river_probability=0.7,
                       river_width_m=(30.0, 90.0), road_width_m=15.0, building_cell_m=40.0),
            "coarse", _single(150, 250), cloud_cover=(0.02, 0.2), clear_chance=0.5, mask_clouds=True,
        ),
        WorldSource(
            "aerial_landcover", "semantic_segmentation", "state",
            (WorldInput("aerial", "isprs_rgbir"),), 1.0,
            LayoutSpec(parcel_m=70.0, elongation=1.8, urban=0.45, forest=0.12, bare=0.08, lake=0.08,
                       river_probability=0.8, river_width_m=(6.0, 14.0), main_roads=(0, 2), road_width_m=7.0,
                       street_width_m=6.0, building_cell_m=22.0, block_cells=3),
            "fine", _single(150, 230),
        ),
        WorldSource(
            "s1s2_landcover", "semantic_segmentation", "state", (_S1, _S2), 10.0, _MIXED, "coarse",
            _single(120, 270), cloud_cover=(0.02, 0.25), clear_chance=0.5,
        ),
        WorldSource(
            "s2_change", "change_detection", "change", (_S2,), 10.0, _MIXED, "change", _year_apart,
            cloud_cover=(0.02, 0.2), clear_chance=0.6, swath_edge_chance=0.1, mask_clouds=True,
        ),
        WorldSource(
            "s2_clouds", "cloud_mask", "state", (WorldInput("s2", "sentinel2_l1c", top_of_atmosphere=True),),
            10.0, _MIXED, "cloud", _single(60, 300), cloud_cover=(0.1, 0.5), clear_chance=0.0, cirrus=0.3,
        ),
        WorldSource(
            "canopy_height", "regression", "state", (_S2, _S1), 10.0,
            LayoutSpec(parcel_m=180.0, urban=0.05, forest=0.5, bare=0.05, lake=0.02, river_probability=0.3),
            "height", _single(160, 240), cloud_cover=(0.02, 0.15), clear_chance=0.6,
        ),
    )
}  # fmt: skip
"""The built-in sources by name, in generation order."""
