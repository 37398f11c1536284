"""Colours of categories by name: one palette for the written class maps and the panels.

A category with a common land-cover name gets the colour people expect of it (water blue,
tree cover dark green, grassland light green, cropland yellow, built-up red, bare soil
brown, snow and ice white, cloud light grey, change magenta, ...); the names of the
project's datasets are aliases of these (``forest`` and ``tree`` are tree cover,
``barren`` is bare soil, ``low_vegetation`` is grassland). Every other name, and any
name whose colour an earlier category of the same map already took, gets the next
colour of a fixed sequence of 256 hues chosen to stay apart from every named colour and
from each other (past 256 such names, colours near those of the sequence, still all
different). Colours depend only on the list of names, so they are the same on every
run, in every file and every panel.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import cache

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "NAMED_COLOURS",
    "canonical_category",
    "category_colours",
    "class_colours",
    "colour_table",
]

RGB = tuple[int, int, int]

NAMED_COLOURS: dict[str, RGB] = {
    "water": (31, 120, 200),
    "tree_cover": (20, 90, 40),
    "grassland": (150, 215, 100),
    "cropland": (245, 215, 50),
    "built_up": (215, 30, 35),
    "road": (130, 130, 130),
    "impervious_surface": (185, 185, 185),
    "bare_soil": (150, 100, 55),
    "snow_and_ice": (250, 250, 250),
    "cloud": (215, 215, 215),
    "thin_cloud": (170, 195, 225),
    "cloud_shadow": (65, 65, 65),
    "clear": (100, 150, 120),
    "change": (230, 0, 230),
    "no_change": (40, 40, 40),
    "shrubland": (200, 150, 60),
    "closed_shrubland": (170, 120, 40),
    "open_shrubland": (220, 185, 120),
    "savanna": (215, 200, 120),
    "woody_savanna": (170, 170, 70),
    "wetland": (0, 150, 160),
    "mangrove": (0, 200, 130),
    "moss_and_lichen": (235, 225, 165),
    "evergreen_needleleaf_forest": (0, 60, 30),
    "evergreen_broadleaf_forest": (20, 110, 30),
    "deciduous_needleleaf_forest": (70, 120, 60),
    "deciduous_broadleaf_forest": (90, 160, 50),
    "mixed_forest": (40, 130, 90),
    "cropland_natural_vegetation_mosaic": (200, 200, 100),
    "car": (255, 140, 0),
    "field_boundary": (110, 50, 20),
    "other": (200, 165, 210),
}
"""RGB (0-255) of each canonical category name."""

_ALIASES: dict[str, tuple[str, ...]] = {
    "water": ("open_water", "water_body", "waterbody", "river", "lake", "sea", "ocean"),
    "tree_cover": ("tree", "trees", "forest", "woodland"),
    "grassland": ("grass", "meadow", "pasture", "herbaceous", "low_vegetation"),
    "cropland": ("crop", "crops", "agriculture", "agricultural", "farmland", "field"),
    "built_up": ("built", "urban", "settlement", "artificial", "building", "buildings"),
    "road": ("roads", "street", "streets"),
    "impervious_surface": ("impervious", "impervious_surfaces", "paved"),
    "bare_soil": ("bare", "barren", "bare_land", "bare_ground", "soil", "sand"),
    "snow_and_ice": ("snow", "ice", "snow_ice", "permanent_snow_and_ice"),
    "cloud": ("clouds", "thick_cloud", "opaque_cloud"),
    "thin_cloud": ("cirrus", "haze"),
    "cloud_shadow": ("shadow", "cloud_shadows"),
    "clear": ("clear_sky", "cloud_free", "no_cloud"),
    "change": ("changed",),
    "no_change": ("unchanged", "nochange"),
    "shrubland": ("shrub", "shrubs", "scrub"),
    "wetland": ("wetlands", "marsh", "herbaceous_wetland"),
    "mangrove": ("mangroves",),
    "moss_and_lichen": ("moss", "lichen"),
    "car": ("cars", "vehicle", "vehicles"),
    "other": (
        "clutter",
        "background",
        "other_land_cover",
        "non_agricultural_land",
        "non_field",
        "unclassified",
    ),
}
_CANONICAL = {alias: name for name, aliases in _ALIASES.items() for alias in aliases}

# Unnamed colours: golden-angle hues at a few saturation/value levels, kept when at least
# this far (CIE76 ΔE) from every named colour and every colour kept before; the threshold
# falls in steps once the space is full, so the sequence never runs out.
_SEQUENCE_LENGTH = 256
_THRESHOLDS = (20.0, 12.0, 6.0, 0.0)
_LEVELS = ((0.75, 0.9), (0.55, 0.7), (0.9, 0.55), (0.45, 1.0), (0.35, 0.8))


def canonical_category(name: str) -> str:
    """The palette's name for ``name``: lower case, ``_`` for spaces and dashes, aliases resolved."""
    key = "_".join(name.strip().lower().replace("-", " ").split())
    return _CANONICAL.get(key, key)


def category_colours(names: Sequence[str] | int) -> np.ndarray:
    """(K, 3) uint8 RGB colours of K categories, distinct within the list.

    Args:
        names: category names in class order; or a count K, for classes without names
            (then every class gets a colour of the unnamed sequence).

    Returns:
        One colour per category: its named colour when it has one that no earlier
        category of the list took, else the next unused colour of the unnamed sequence.
    """
    keys = [None] * names if isinstance(names, int) else [canonical_category(n) for n in names]
    taken: set[RGB] = set()
    unnamed = iter(_unnamed_sequence())
    colours = []
    for key in keys:
        colour = NAMED_COLOURS.get(key) if key else None
        if colour is None or colour in taken:
            colour = next((c for c in unnamed if c not in taken), None)
            if colour is None:  # more than 256 unnamed classes: near ones, still distinct
                sequence = _unnamed_sequence()
                colour = _unused_near(sequence[len(colours) % len(sequence)], taken)
        taken.add(colour)
        colours.append(colour)
    return np.array(colours, dtype=np.uint8).reshape(-1, 3)


def class_colours(names: Sequence[str] | int) -> Tensor:
    """(K, 3) float colours in [0, 1] of :func:`category_colours`, for image panels."""
    return torch.from_numpy(category_colours(names).astype(np.float32) / 255.0)


def colour_table(names: Sequence[str], nodata: int | None = None) -> dict[int, tuple[int, ...]]:
    """GDAL colour table of a class map: class value -> RGBA, ``nodata`` transparent."""
    table: dict[int, tuple[int, ...]] = {
        i: (*(int(v) for v in rgb), 255) for i, rgb in enumerate(category_colours(names))
    }
    if nodata is not None:
        table[nodata] = (0, 0, 0, 0)
    return table


def _unused_near(base: RGB, taken: set[RGB]) -> RGB:
    """The colour nearest ``base`` on a lattice of 4 units that is not ``taken``."""
    for radius in range(64):
        for offset in itertools.product(range(-radius, radius + 1), repeat=3):
            if max(map(abs, offset)) != radius:
                continue
            rgb = tuple(min(255, max(0, b + 4 * o)) for b, o in zip(base, offset, strict=True))
            if rgb not in taken:
                return rgb  # type: ignore[return-value]
    raise ValueError("No colour left: a colour table holds at most 65536 classes.")


@cache
def _unnamed_sequence() -> tuple[RGB, ...]:
    """The fixed sequence of colours for categories without a named colour."""
    count = 16 * _SEQUENCE_LENGTH
    index = np.arange(count)
    hue = (index * 0.618034) % 1.0
    levels = np.array(_LEVELS)[(index // 7) % len(_LEVELS)]
    candidates = np.round(_hsv_to_rgb(hue, levels[:, 0], levels[:, 1]) * 255).astype(int)
    lab = _lab(candidates)
    nearest = np.linalg.norm(
        lab[:, None] - _lab(np.array(list(NAMED_COLOURS.values())))[None], axis=2
    ).min(1)
    chosen: list[int] = []
    for threshold in _THRESHOLDS:
        for i in range(count):
            if len(chosen) == _SEQUENCE_LENGTH:
                break
            if nearest[i] >= threshold and nearest[i] > 0:  # 0: named, or already chosen
                chosen.append(i)
                nearest = np.minimum(nearest, np.linalg.norm(lab - lab[i], axis=1))
    return tuple(tuple(int(v) for v in candidates[i]) for i in chosen)  # type: ignore[misc]


def _hsv_to_rgb(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    """(N,) HSV in [0, 1] -> (N, 3) RGB in [0, 1]."""
    sector = np.floor(hue * 6).astype(int) % 6
    f = hue * 6 - np.floor(hue * 6)
    p, q, t = (
        value * (1 - saturation),
        value * (1 - f * saturation),
        value * (1 - (1 - f) * saturation),
    )
    table = np.stack(
        [
            np.stack(channels, -1)
            for channels in (
                (value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q),
            )
        ]
    )  # fmt: skip
    return table[sector, np.arange(len(hue))]


def _lab(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) sRGB 0-255 -> (N, 3) CIELAB (D65), where distance is close to perceived."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]
    )
    xyz = linear @ to_xyz.T / np.array([0.95047, 1.0, 1.08883])
    delta = 6 / 29
    f = np.where(xyz > delta**3, np.cbrt(xyz), xyz / (3 * delta**2) + 4 / 29)
    return np.stack(
        [116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=-1
    )
