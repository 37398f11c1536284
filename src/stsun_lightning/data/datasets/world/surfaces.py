"""The world's surfaces: what a sensor sees before its bands, stored to render any sensor.

A surface is, per pixel of a source's grid and per date, the brightness-weighted share of
every material (:class:`~stsun_lightning.data.datasets.world.render.SurfaceState`'s
``optical``), the sky (cloud, shadow and cirrus opacity) and the swath's nodata: the
(S, h, w) array of :data:`SURFACE_BANDS`. Reflectance is linear in the material weights,
so :func:`render_surface` renders any optical band set from it with the world's own
renderer, and a coarser GSD is the area average of the weights
(:func:`resample_area`). Thermal bands need the area shares as well and are not
rendered from surfaces.

Shapes: T dates, S surface channels, M materials, C bands, h×w source pixels, H×W pixels
at the rendered GSD.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stsun_lightning.batch import Modality
from stsun_lightning.data.datasets.world.files import quantise_reflectance
from stsun_lightning.data.datasets.world.render import (
    MATERIAL_NAMES,
    Sky,
    SurfaceState,
    render_optical,
)
from stsun_lightning.data.datasets.world.spectra import is_thermal
from stsun_lightning.data.sensors import Band

__all__ = [
    "SURFACE_BANDS",
    "area_matrix",
    "render_surface",
    "resample_area",
    "resample_classes",
    "resample_values",
    "surface_array",
]

SURFACE_BANDS = (*MATERIAL_NAMES, "cloud", "shadow", "cirrus", "nodata")
"""Channels of a surface: material weights, then sky opacities, then nodata (0 or 1)."""
_M = len(MATERIAL_NAMES)


def surface_array(state: SurfaceState, sky: Sky, missing: np.ndarray) -> np.ndarray:
    """(S, h, w) float32 surface of one date from the world's state, sky and nodata."""
    h, w = state.shape
    weights = np.ascontiguousarray(state.optical.T).reshape(_M, h, w)
    sky_layers = np.stack([sky.cloud, sky.shadow, sky.cirrus, missing.astype(np.float32)])
    return np.concatenate([weights, sky_layers.astype(np.float32)])


def area_matrix(source: int, size: int) -> np.ndarray:
    """(size, source) float64 weights of exact area averaging from ``source`` to ``size`` pixels.

    Row i holds the overlap of output pixel i (``source / size`` source pixels wide) with
    each source pixel, over its width; rows sum to 1.
    """
    factor = source / size
    starts = np.arange(size)[:, None] * factor
    left = np.maximum(starts, np.arange(source)[None, :])
    right = np.minimum(starts + factor, np.arange(1, source + 1)[None, :])
    return np.clip(right - left, 0.0, None) / factor


def resample_area(array: np.ndarray, size: int) -> np.ndarray:
    """(..., h, w) -> (..., size, size) area averages (``array`` itself when h = w = size)."""
    h, w = array.shape[-2:]
    if h == size and w == size:
        return array
    rows, cols = area_matrix(h, size), area_matrix(w, size)
    out = rows @ array.astype(np.float64) @ cols.T  # (size, h) @ (..., h, w) @ (w, size)
    return out.astype(np.float32)


def resample_classes(target: np.ndarray, size: int, classes: int) -> np.ndarray:
    """(..., h, w) int64 classes (-1 = ignore) -> (..., size, size) majority by area.

    A coarse pixel takes the class with the largest area under it; it is ignored (-1)
    where less than half of its area has a class.
    """
    if target.shape[-2:] == (size, size):
        return target
    shares = resample_area(
        np.stack([(target == k).astype(np.float32) for k in range(classes)]), size
    )
    labelled = shares.sum(0)
    return np.where(labelled >= 0.5, shares.argmax(0), -1).astype(np.int64)


def resample_values(target: np.ndarray, size: int) -> np.ndarray:
    """(..., h, w) float values (NaN = ignore) -> area means, NaN where under half has values."""
    if target.shape[-2:] == (size, size):
        return target
    known = np.isfinite(target)
    total = resample_area(np.where(known, target, 0.0), size)
    weight = resample_area(known.astype(np.float32), size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight >= 0.5, total / weight, np.nan).astype(np.float32)


def render_surface(
    surfaces: np.ndarray,
    bands: Sequence[Band],
    rng: np.random.Generator,
    size: int | None = None,
    top_of_atmosphere: bool = False,
) -> np.ndarray:
    """Stored values of ``bands`` over surfaces, as the world's files hold them.

    Each date is averaged to ``size`` × ``size`` pixels, rendered by
    :func:`~stsun_lightning.data.datasets.world.render.render_optical` (illumination,
    shadows, clouds, noise, all drawn from ``rng``) and quantised like the world's
    products (uint16 reflectance × 10000). With ``size`` the surfaces' own and ``rng``
    in the state the world rendered a sensor with, the result is that sensor's file.

    Args:
        surfaces: (T, S, h, w) float32 surfaces (:data:`SURFACE_BANDS`).
        bands: optical reflective bands.
        rng: draws illumination and noise.
        size: side of the output in pixels (default: the surfaces' own).
        top_of_atmosphere: Level-1C reflectance (with atmosphere).

    Returns:
        (T, C, H, W) float32 reflectance × 10000 (the files' stored values, scale
        1e-4), NaN where the swath has no data.

    Raises:
        ValueError: a thermal or non-optical band, naming it.
    """
    for band in bands:
        if is_thermal(band) or band.modality is not Modality.OPTICAL:
            raise ValueError(
                f"Band {band.name!r}: surfaces render optical reflective bands only, got "
                f"{band.wavelength_nm:g} nm ({band.modality.name.lower()})."
            )
    side = surfaces.shape[-1] if size is None else size
    surfaces = resample_area(surfaces, side)
    frames = []
    for surface in surfaces:
        weights = np.ascontiguousarray(surface[:_M].reshape(_M, -1).T)
        state = SurfaceState(
            optical=weights,
            shares=weights,  # only thermal bands read the shares
            radar=weights,
            tree_height_m=np.zeros((0, 0), np.float32),
            height_m=np.zeros((side, side), np.float32),
            factor=1,
        )
        sky = Sky(cloud=surface[_M], shadow=surface[_M + 1], cirrus=surface[_M + 2])
        reflectance = render_optical(state, bands, rng, sky, top_of_atmosphere)
        # A coarse pixel with any part outside the swath has no data, as a sensor's would.
        stored = quantise_reflectance(reflectance, surface[_M + 3] > 0)
        frames.append(np.where(stored > 0, stored.astype(np.float32), np.float32(np.nan)))
    return np.stack(frames)
