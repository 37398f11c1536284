"""Virtual sensors: random band sets and GSDs within physical ranges, for training.

SpectralWorld integrates its material spectra over any band response, so a scene can be
seen through sensors that do not exist. :func:`draw_virtual_sensor` draws one: 3 to 13
bands with centres in 400-2,400 nm outside the water-vapour absorption bands (about
1,350-1,450 and 1,800-1,950 nm, where a real sensor sees no ground), FWHMs of 10-200 nm
(log-uniform: narrow visible bands and broad SWIR bands are both common) and a GSD
from the source's up to a few times coarser. :func:`jitter_bands` moves band centres
and FWHMs slightly, so that declared metadata and rendered response differ as they do
between a sensor's nominal and actual response. The draws take a generator, which the
datasets seed from (seed, epoch, index) (:func:`~stsun_lightning.data.samplers.epochs.item_rng`).

Virtual bands have no statistics of their own, so every band is normalised with one
fixed affine map of physical reflectance (:func:`reflectance_statistics`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from stsun_lightning.batch import Modality
from stsun_lightning.data.datasets.world.spectra import THERMAL_MIN_NM, is_thermal
from stsun_lightning.data.io.statistics import InputStatistics
from stsun_lightning.data.sensors import Band

__all__ = [
    "REFLECTANCE_MEAN",
    "REFLECTANCE_STD",
    "THERMAL_MEAN",
    "THERMAL_STD",
    "VirtualSensor",
    "VirtualSensors",
    "draw_virtual_sensor",
    "jitter_bands",
    "reflectance_statistics",
]

REFLECTANCE_MEAN = 0.2
"""Fixed mean of every reflective band (physical reflectance, 0-1)."""
REFLECTANCE_STD = 0.15
"""Fixed standard deviation of every reflective band."""
THERMAL_MEAN = 3.0
"""Fixed mean of thermal bands (kelvin / 100, as the world stores them: 300 K)."""
THERMAL_STD = 0.1
"""Fixed standard deviation of thermal bands (10 K)."""


@dataclass(frozen=True)
class VirtualSensors:
    """Which virtual sensors training draws, and how often.

    Attributes:
        probability: share of training items rendered through a virtual sensor; the
            others read the source's real sensor.
        min_bands: fewest bands of a virtual sensor.
        max_bands: most bands; every item is padded to this many (``band_mask`` False).
        wavelength_nm: (low, high) range of band centres.
        excluded_nm: ranges no band centre lies in (water-vapour absorption).
        fwhm_nm: (low, high) range of FWHMs, drawn log-uniform.
        gsd_factor: (low, high) of the virtual GSD over the source's, at least 1 (the
            world's surfaces are stored at the source's GSD).
        jitter: ``"metadata"`` moves the declared band metadata away from the rendered
            response; ``"response"`` renders a moved response under the declared metadata.
        jitter_nm: standard deviation of a band centre's shift (0: no jitter).
        jitter_fwhm: standard deviation of a FWHM's log-ratio (0: none).
        sources: the world sources to render virtually (default: every source whose
            inputs are one optical, reflective sensor).
    """

    probability: float = 0.5
    min_bands: int = 3
    max_bands: int = 13
    wavelength_nm: tuple[float, float] = (400.0, 2400.0)
    excluded_nm: tuple[tuple[float, float], ...] = ((1350.0, 1450.0), (1800.0, 1950.0))
    fwhm_nm: tuple[float, float] = (10.0, 200.0)
    gsd_factor: tuple[float, float] = (1.0, 2.0)
    jitter: Literal["metadata", "response"] = "metadata"
    jitter_nm: float = 0.0
    jitter_fwhm: float = 0.0
    sources: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 <= self.probability <= 1.0:
            problems.append(f"probability must be in [0, 1], got {self.probability}")
        if not 1 <= self.min_bands <= self.max_bands:
            problems.append(
                f"need 1 <= min_bands <= max_bands, got {self.min_bands} and {self.max_bands}"
            )
        low, high = self.wavelength_nm
        if not 0 < low < high <= THERMAL_MIN_NM:
            problems.append(f"wavelength_nm must lie in (0, 3000] nm, got {self.wavelength_nm}")
        if not 0 < self.fwhm_nm[0] <= self.fwhm_nm[1]:
            problems.append(f"fwhm_nm must be positive and ordered, got {self.fwhm_nm}")
        if not 1.0 <= self.gsd_factor[0] <= self.gsd_factor[1]:
            problems.append(f"gsd_factor must be ordered and at least 1, got {self.gsd_factor}")
        if self.jitter_nm < 0 or self.jitter_fwhm < 0:
            problems.append("jitter_nm and jitter_fwhm must be at least 0")
        if not self.allowed_intervals():
            problems.append(f"excluded_nm {self.excluded_nm} leaves no wavelength to draw from")
        if problems:
            raise ValueError("virtual_sensors: " + "; ".join(problems) + ".")

    def allowed_intervals(self) -> list[tuple[float, float]]:
        """The parts of ``wavelength_nm`` outside every excluded range, in order."""
        parts = [self.wavelength_nm]
        for lo, hi in self.excluded_nm:
            parts = [
                piece
                for a, b in parts
                for piece in ((a, min(b, lo)), (max(a, hi), b))
                if piece[1] > piece[0]
            ]
        return parts


@dataclass(frozen=True)
class VirtualSensor:
    """One drawn sensor.

    Attributes:
        bands: its optical bands, sorted by centre (names ``V01``, ``V02``, ...).
        gsd_m: its ground sample distance.
        size: pixels per side of a patch of ``patch_size`` source pixels at ``gsd_m``.
    """

    bands: tuple[Band, ...]
    gsd_m: float
    size: int


def draw_virtual_sensor(
    rng: np.random.Generator, config: VirtualSensors, source_gsd_m: float, patch_size: int
) -> VirtualSensor:
    """A random sensor within ``config``'s ranges.

    The GSD is drawn as the patch's side in pixels, uniform over the sides whose GSD
    factor ``patch_size / size`` lies in ``config.gsd_factor``, so that the patch covers
    the same ground at every GSD.

    Args:
        rng: the item's generator.
        config: the ranges.
        source_gsd_m: the GSD of the source the sensor replaces.
        patch_size: side of the patch in source pixels.
    """
    count = int(rng.integers(config.min_bands, config.max_bands + 1))
    intervals = config.allowed_intervals()
    lengths = np.array([b - a for a, b in intervals])
    offsets = rng.random(count) * lengths.sum()
    edges = np.concatenate([[0.0], np.cumsum(lengths)])
    which = np.clip(np.searchsorted(edges, offsets, side="right") - 1, 0, len(intervals) - 1)
    centres = np.sort(np.array([intervals[i][0] for i in which]) + offsets - edges[which])
    log_low, log_high = (math.log(v) for v in config.fwhm_nm)
    fwhms = np.exp(rng.uniform(log_low, log_high, count))
    smallest = max(1, math.ceil(patch_size / config.gsd_factor[1] - 1e-9))
    largest = max(smallest, math.floor(patch_size / config.gsd_factor[0] + 1e-9))
    size = int(rng.integers(smallest, largest + 1))
    gsd = source_gsd_m * patch_size / size
    bands = tuple(
        Band(f"V{i + 1:02d}", float(c), float(f), gsd, Modality.OPTICAL)
        for i, (c, f) in enumerate(zip(centres, fwhms, strict=True))
    )
    return VirtualSensor(bands, gsd, size)


def jitter_bands(
    bands: Sequence[Band], rng: np.random.Generator, shift_nm: float, fwhm_log_sd: float
) -> tuple[Band, ...]:
    """``bands`` with centres shifted by N(0, ``shift_nm``) and FWHMs scaled by exp(N(0, sd)).

    Non-optical and thermal bands, and bands of unknown FWHM (0), keep what they lack a
    response for. With both spreads 0 the bands are returned unchanged (no draw).
    """
    if shift_nm == 0 and fwhm_log_sd == 0:
        return tuple(bands)
    shifts = rng.normal(0.0, shift_nm, len(bands)) if shift_nm > 0 else np.zeros(len(bands))
    scales = np.exp(rng.normal(0.0, fwhm_log_sd, len(bands))) if fwhm_log_sd > 0 else None
    out = []
    for i, band in enumerate(bands):
        if band.modality is not Modality.OPTICAL or is_thermal(band):
            out.append(band)
            continue
        centre = max(1.0, band.wavelength_nm + float(shifts[i]))
        width = band.bandwidth_nm * float(scales[i]) if scales is not None else band.bandwidth_nm
        out.append(replace(band, wavelength_nm=centre, bandwidth_nm=width))
    return tuple(out)


def reflectance_statistics(bands: Sequence[Band]) -> InputStatistics:
    """The fixed normalisation of ``bands``: one mean and std for every reflective band.

    A virtual band has no statistics of its own (each item draws new bands), and
    per-band statistics of a real sensor would normalise its bands unlike any virtual
    one; so every optical band is ``(reflectance - 0.2) / 0.15`` and every thermal band
    ``(kelvin / 100 - 3.0) / 0.1``, whatever the sensor. This keeps the spectral shape
    (a brighter band stays brighter), which per-band standardisation removes.
    """
    thermal = [is_thermal(b) for b in bands]
    return InputStatistics(
        tuple(b.name for b in bands),
        tuple(THERMAL_MEAN if t else REFLECTANCE_MEAN for t in thermal),
        tuple(THERMAL_STD if t else REFLECTANCE_STD for t in thermal),
    )
