"""Reflectance spectra and radar signatures of surface materials, sampled by any sensor band.

Each :class:`Spectrum` is a smooth reflectance curve over 400-2500 nm built from anchor
points (shape-preserving cubic interpolation) times Gaussian absorption features, shaped
after laboratory and canopy spectra (USGS spectral library, PROSPECT/SAIL canopies):

* green vegetation: chlorophyll absorption in blue and red, green peak, red edge at
  ~700-730 nm, NIR plateau, leaf-water dips at 970, 1200, 1450 and 1940 nm;
* dry vegetation rises smoothly through the visible and keeps cellulose/lignin dips;
* soil rises with wavelength, with weak hydroxyl/clay dips;
* water is dark and drops to ~0 beyond 900 nm (the turbid variant scatters more);
* asphalt is dark and flat, roofs brighter, clouds bright and flat, lower in the SWIR.

Conventions:

* Outside 400-2500 nm (up to 3000 nm) the curve is held at its end values.
* Thermal bands (modality ``THERMAL``, or centre > 3000 nm) have no reflectance: :func:`band_reflectance` returns the
  material's brightness temperature divided by 100 K (so 300 K -> 3.0, which a uint16
  "reflectance x 10000" product stores as kelvin x 100, like Landsat surface-temperature
  products store kelvin with a fixed scale).
* Radar signatures are Sentinel-1 C-band backscatter sigma0 in dB, one value per material
  for VV and VH (HH and HV are taken as VV and VH). Tree canopies have no fixed value:
  their backscatter rises with height and saturates, see :func:`canopy_backscatter_db`.
* Top-of-atmosphere reflectance (Level-1C products) is ``T(λ) * ρ + path(λ)`` with a
  two-way transmittance ``T`` that includes water-vapour absorption; a cloud sits above
  most of the vapour (``vapour_above`` small), which is why the 1375 nm cirrus band sees
  clouds and almost nothing of the ground.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from stsun_lightning.batch import Modality
from stsun_lightning.data.sensors import Band
from stsun_lightning.errors import unknown_name_error

__all__ = [
    "MATERIALS",
    "Spectrum",
    "atmospheric_transmittance",
    "band_matrix",
    "band_reflectance",
    "canopy_backscatter_db",
    "canopy_shade_fraction",
    "get_material",
    "is_thermal",
    "path_reflectance",
    "sar_matrix",
]

NOMINAL_FWHM_NM = 30.0
"""Band width assumed where a band's FWHM is unknown (0)."""
THERMAL_MIN_NM = 3000.0
"""Bands centred beyond this wavelength are emissive (thermal), not reflective."""
_LEAF_WATER = ((970.0, 25.0, 0.07), (1180.0, 35.0, 0.12), (1450.0, 45.0, 0.55), (1940.0, 55.0, 0.7))
_DRY_WATER = ((1450.0, 40.0, 0.12), (1940.0, 50.0, 0.2), (2100.0, 35.0, 0.12))
_SOIL_WATER = ((1410.0, 30.0, 0.12), (1910.0, 40.0, 0.2), (2205.0, 25.0, 0.08))
_CLOUD_WATER = ((1450.0, 60.0, 0.2), (1940.0, 70.0, 0.3))


def _pchip(x: np.ndarray, y: np.ndarray, xq: np.ndarray) -> np.ndarray:
    """Shape-preserving (Fritsch-Carlson) cubic interpolation, constant outside ``x``.

    Args:
        x: (N,) increasing anchor abscissae.
        y: (N,) anchor values.
        xq: (...) query points.

    Returns:
        (...) interpolated values; no overshoot between anchors, so no negative reflectance.
    """
    h = np.diff(x)
    slope = np.diff(y) / h
    deriv = np.empty_like(y)
    deriv[0], deriv[-1] = slope[0], slope[-1]
    w1, w2 = 2 * h[1:] + h[:-1], h[1:] + 2 * h[:-1]
    same_sign = slope[:-1] * slope[1:] > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        harmonic = (w1 + w2) / (w1 / slope[:-1] + w2 / slope[1:])
    deriv[1:-1] = np.where(same_sign, harmonic, 0.0)
    xq = np.clip(xq, x[0], x[-1])
    i = np.clip(np.searchsorted(x, xq, side="right") - 1, 0, len(x) - 2)
    t = (xq - x[i]) / h[i]
    return (
        (1 + 2 * t) * (1 - t) ** 2 * y[i]
        + t * (1 - t) ** 2 * h[i] * deriv[i]
        + t**2 * (3 - 2 * t) * y[i + 1]
        + t**2 * (t - 1) * h[i] * deriv[i + 1]
    )


def _absorption(wavelength_nm: np.ndarray, features: Sequence[tuple[float, float, float]]):
    """Product of Gaussian dips ``1 - depth * exp(-(λ-c)²/2w²)`` over ``features``."""
    factor = np.ones_like(wavelength_nm)
    for centre, width, depth in features:
        factor *= 1 - depth * np.exp(-0.5 * ((wavelength_nm - centre) / width) ** 2)
    return factor


@dataclass(frozen=True)
class Spectrum:
    """A surface material: reflectance curve, thermal and radar signatures.

    Attributes:
        name: registry name, e.g. ``"green_vegetation"``.
        anchors: ((wavelength nm, reflectance), ...) increasing in wavelength.
        absorptions: ((centre nm, width nm, depth 0-1), ...) multiplicative Gaussian dips.
        brightness_temperature_k: representative summer daytime brightness temperature.
        vv_db: C-band VV backscatter in dB; None for canopies (height-dependent) and clouds.
        vh_db: C-band VH backscatter in dB; None likewise.
        vapour_above: fraction of the atmosphere's water-vapour column above the material
            (1 for the ground, small for cloud tops).
        description: free text.
    """

    name: str
    anchors: tuple[tuple[float, float], ...]
    absorptions: tuple[tuple[float, float, float], ...] = ()
    brightness_temperature_k: float = 300.0
    vv_db: float | None = None
    vh_db: float | None = None
    vapour_above: float = 1.0
    description: str = ""

    def __call__(self, wavelength_nm: ArrayLike) -> np.ndarray:
        """Reflectance (0-1) at ``wavelength_nm`` (any shape, float64)."""
        wl = np.asarray(wavelength_nm, dtype=np.float64)
        x, y = (np.array(v, dtype=np.float64) for v in zip(*self.anchors, strict=True))
        return _pchip(x, y, wl) * _absorption(wl, self.absorptions)


def _spectrum(name: str, points: str, description: str, **kwargs) -> Spectrum:
    """Build a spectrum from ``"wl:refl wl:refl ..."`` anchor text (compact tables)."""
    anchors = tuple(tuple(float(v) for v in p.split(":")) for p in points.split())
    return Spectrum(name, anchors, description=description, **kwargs)  # type: ignore[arg-type]


_GREEN = (
    "400:.030 450:.034 500:.042 530:.080 550:.100 575:.085 600:.065 640:.042 670:.032 "
    "685:.038 700:.090 715:.190 730:.300 750:.400 780:.450 850:.470 1000:.460 1100:.450 "
    "1300:.400 1600:.300 1800:.260 2000:.180 2200:.140 2400:.090 2500:.070"
)
# Needle canopies: darker in the NIR (clumping, shoot structure), similar visible and SWIR.
_CONIFER = (
    "400:.025 450:.028 500:.034 550:.075 600:.050 640:.032 670:.026 685:.030 700:.065 "
    "715:.130 730:.200 750:.260 780:.290 850:.300 1000:.300 1300:.290 1600:.250 2000:.150 "
    "2200:.120 2500:.060"
)
# Shadowed canopy: leaves lit only by diffuse skylight and light scattered through leaves,
# which leaves transmit well in the NIR and poorly in the visible and SWIR.
_SHADED = (
    "400:.008 500:.009 550:.018 600:.012 670:.006 700:.015 730:.090 780:.180 1000:.180 "
    "1300:.130 1600:.055 2000:.030 2200:.018 2500:.010"
)
# Grass swards: erect blades reflect less NIR than broadleaf crop canopies, and a mat of
# dead leaves (thatch) lies under the green all year; both lower the NIR plateau.
_GRASS = (
    "400:.035 450:.040 500:.050 530:.085 550:.105 575:.095 600:.080 640:.065 670:.058 "
    "685:.062 700:.100 715:.160 730:.220 750:.270 780:.300 850:.310 1000:.310 1100:.305 "
    "1300:.290 1600:.280 1800:.250 2000:.190 2200:.170 2400:.120 2500:.100"
)
# Gravel and sand of pits, quarries and building sites: bright and flat across the
# spectrum, without the iron and organic slope of farmed soil.
_GRAVEL = (
    "400:.170 500:.220 600:.260 700:.280 800:.290 1000:.300 1300:.310 1600:.320 1800:.315 "
    "2200:.290 2500:.260"
)
_DRY = (
    "400:.060 500:.090 600:.160 700:.240 800:.300 1000:.350 1300:.420 1600:.440 1800:.420 "
    "2000:.340 2200:.340 2300:.310 2500:.220"
)
_SOIL = (
    "400:.060 500:.090 600:.140 700:.180 800:.210 1000:.250 1300:.300 1600:.340 1800:.350 "
    "2200:.330 2500:.300"
)
_WATER = "400:.050 450:.060 500:.055 550:.045 600:.030 650:.020 700:.012 750:.006 800:.004 900:.002 1000:.001 1200:.0005 2500:.0005"
_TURBID = "400:.050 500:.070 550:.090 600:.092 650:.080 700:.060 750:.030 800:.020 900:.008 1000:.003 1200:.001 2500:.001"
_ASPHALT = "400:.050 500:.058 700:.068 1000:.078 1600:.090 2200:.090 2500:.080"
_ROOF = "400:.180 500:.220 700:.260 1000:.280 1600:.300 2200:.270 2500:.250"
_TILE = "400:.060 500:.070 550:.090 600:.160 650:.240 700:.280 900:.320 1300:.380 1600:.420 2200:.400 2500:.360"
_FLOWERS = (
    "400:.040 470:.045 500:.055 530:.120 560:.200 600:.220 650:.200 680:.150 700:.200 "
    "730:.340 780:.430 900:.450 1300:.400 1600:.300 2000:.180 2200:.140 2500:.070"
)
_CLOUD = "400:.780 500:.800 700:.800 1000:.780 1300:.720 1600:.620 2200:.450 2500:.400"

_MATERIAL_LIST = (
    _spectrum("green_vegetation", _GREEN, "full green broadleaf or crop canopy", absorptions=_LEAF_WATER, brightness_temperature_k=298.0, vv_db=-10.5, vh_db=-16.5),
    _spectrum("conifer_canopy", _CONIFER, "sunlit needle-leaf canopy", absorptions=_LEAF_WATER, brightness_temperature_k=297.0),
    _spectrum("shaded_canopy", _SHADED, "self-shadowed canopy (diffuse light, leaf transmission)", absorptions=_LEAF_WATER, brightness_temperature_k=295.0),
    _spectrum("grass_canopy", _GRASS, "grassland sward with its thatch of dead leaves", absorptions=_LEAF_WATER, brightness_temperature_k=300.0, vv_db=-13.5, vh_db=-19.0),
    _spectrum("gravel_sand", _GRAVEL, "gravel and sand of pits, quarries and building sites", brightness_temperature_k=316.0, vv_db=-8.5, vh_db=-17.5),
    _spectrum("dry_vegetation", _DRY, "senescent leaves, straw, stubble", absorptions=_DRY_WATER, brightness_temperature_k=306.0, vv_db=-12.5, vh_db=-19.5),
    _spectrum("soil", _SOIL, "bare loamy soil, dry", absorptions=_SOIL_WATER, brightness_temperature_k=310.0, vv_db=-11.5, vh_db=-20.5),
    _spectrum("water", _WATER, "clear inland water", brightness_temperature_k=292.0, vv_db=-22.0, vh_db=-28.0),
    _spectrum("turbid_water", _TURBID, "sediment-laden river water", brightness_temperature_k=293.0, vv_db=-21.0, vh_db=-27.5),
    _spectrum("asphalt", _ASPHALT, "asphalt road", brightness_temperature_k=318.0, vv_db=-17.0, vh_db=-25.0),
    _spectrum("roof", _ROOF, "concrete or metal roof, bright", brightness_temperature_k=314.0, vv_db=2.0, vh_db=-7.0),
    _spectrum("roof_tile", _TILE, "red clay tile roof", brightness_temperature_k=312.0, vv_db=1.5, vh_db=-7.5),
    _spectrum("rapeseed_flowers", _FLOWERS, "flowering rapeseed canopy (yellow)", absorptions=_LEAF_WATER, brightness_temperature_k=298.0, vv_db=-10.0, vh_db=-16.0),
    _spectrum("cloud", _CLOUD, "thick water/ice cloud", absorptions=_CLOUD_WATER, brightness_temperature_k=255.0, vapour_above=0.1),
    _spectrum("cirrus", _CLOUD, "thin high ice cloud (optical depth applied by the world)", absorptions=_CLOUD_WATER, brightness_temperature_k=225.0, vapour_above=0.02),
)  # fmt: skip
MATERIALS: dict[str, Spectrum] = {m.name: m for m in _MATERIAL_LIST}
"""The built-in materials by name."""


def get_material(name: str) -> Spectrum:
    """The built-in material called ``name``.

    Raises:
        UnknownNameError: listing the known materials.
    """
    if name not in MATERIALS:
        raise unknown_name_error("material", name, MATERIALS)
    return MATERIALS[name]


def _optical_depth(wavelength_nm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertical optical depths of the whole atmosphere: (dry gases + aerosol, water vapour)."""
    um = wavelength_nm / 1000.0
    rayleigh = 0.0088 * um**-4.05
    aerosol = 0.06 * um**-1.3
    oxygen = 1.5 * np.exp(-0.5 * ((wavelength_nm - 762.0) / 4.0) ** 2)
    water = np.zeros_like(wavelength_nm)
    for centre, width, depth in (
        (940, 25, 0.35),
        (1135, 25, 0.6),
        (1375, 40, 5.0),
        (1870, 60, 5.0),
    ):
        water += depth * np.exp(-0.5 * ((wavelength_nm - centre) / width) ** 2)
    return rayleigh + aerosol + oxygen, water


def _dry_fraction(vapour_above: float) -> float:
    # Water vapour sits low (scale height ~2 km, air ~8 km), so a surface with a fraction v
    # of the vapour above it still has about sqrt(v) of the air and aerosol above it.
    return math.sqrt(min(max(vapour_above, 0.0), 1.0))


def atmospheric_transmittance(wavelength_nm: ArrayLike, vapour_above: float = 1.0) -> np.ndarray:
    """Two-way (sun-surface-sensor) transmittance for a mid-latitude summer atmosphere.

    Args:
        wavelength_nm: (...) wavelengths.
        vapour_above: fraction of the water-vapour column above the reflecting surface.

    Returns:
        (...) transmittance in (0, 1].
    """
    dry, water = _optical_depth(np.asarray(wavelength_nm, dtype=np.float64))
    # Air mass ~2.2: sun at ~35° zenith on the way down, near-nadir view on the way up.
    return np.exp(-2.2 * (_dry_fraction(vapour_above) * dry + vapour_above * water))


def path_reflectance(wavelength_nm: ArrayLike, vapour_above: float = 1.0) -> np.ndarray:
    """Reflectance added by atmospheric scattering (Rayleigh-dominated, blue-heavy).

    Args:
        wavelength_nm: (...) wavelengths.
        vapour_above: as in :func:`atmospheric_transmittance`; less air above, less path.

    Returns:
        (...) path reflectance.
    """
    um = np.asarray(wavelength_nm, dtype=np.float64) / 1000.0
    return _dry_fraction(vapour_above) * (0.35 * 0.0088 * um**-4.05 + 0.1 * 0.06 * um**-1.3)


def _response(band: Band) -> tuple[np.ndarray, np.ndarray]:
    """Wavelength samples (K,) and normalised Gaussian weights (K,) of an optical band."""
    fwhm = band.bandwidth_nm if band.bandwidth_nm > 0 else NOMINAL_FWHM_NM
    sigma = fwhm / (2 * math.sqrt(2 * math.log(2)))
    offsets = np.linspace(-3.0, 3.0, 61)
    weights = np.exp(-0.5 * offsets**2)
    return band.wavelength_nm + sigma * offsets, weights / weights.sum()


def is_thermal(band: Band) -> bool:
    """Whether a band is emissive: tagged thermal, or centred beyond 3000 nm."""
    return band.modality is Modality.THERMAL or band.wavelength_nm > THERMAL_MIN_NM


def _check_optical(band: Band) -> None:
    if band.modality not in (Modality.OPTICAL, Modality.THERMAL):
        raise ValueError(
            f"Band {band.name!r}: expected an optical band, got modality "
            f"{band.modality.name.lower()}; use sar_matrix for radar bands"
        )


def _band_values(
    spectrum: Spectrum, wavelengths: np.ndarray, top_of_atmosphere: bool
) -> np.ndarray:
    """The material's (surface or top-of-atmosphere) reflectance at ``wavelengths`` (any shape)."""
    values = spectrum(wavelengths)
    if top_of_atmosphere:
        transmittance = atmospheric_transmittance(wavelengths, spectrum.vapour_above)
        values = transmittance * values + path_reflectance(wavelengths, spectrum.vapour_above)
    return values


def band_reflectance(spectrum: Spectrum, band: Band, top_of_atmosphere: bool = False) -> float:
    """The material's value in one optical band.

    The spectrum is averaged over a Gaussian band response with the band's centre and
    FWHM (a FWHM of 0, unknown, is taken as 30 nm).

    Args:
        spectrum: the material.
        band: an optical band; thermal bands (centre > 3000 nm) give brightness
            temperature / 100 K.
        top_of_atmosphere: apply transmittance and path reflectance (Level-1C) instead of
            returning surface reflectance (Level-2A).

    Returns:
        Reflectance (0-1), or temperature / 100 K for thermal bands.

    Raises:
        ValueError: for non-optical bands.
    """
    return float(band_matrix((spectrum,), (band,), top_of_atmosphere)[0, 0])


def band_matrix(
    spectra: Sequence[Spectrum], bands: Sequence[Band], top_of_atmosphere: bool = False
) -> np.ndarray:
    """Band values of several materials: the linear mixing matrix of a sensor.

    Each material's curve is evaluated once over every band's response samples (the
    interpolation is most of the cost: a virtual sensor needs a new matrix per item).

    Returns:
        (M, C) float32, entry (m, c) = :func:`band_reflectance` of ``spectra[m]`` in
        ``bands[c]``.
    """
    for band in bands:
        _check_optical(band)
    out = np.zeros((len(spectra), len(bands)), dtype=np.float64)
    reflective = [c for c, b in enumerate(bands) if not is_thermal(b)]
    responses = [_response(bands[c]) for c in reflective]
    if responses:
        samples = np.stack([wavelengths for wavelengths, _ in responses])  # (C', K)
        for m, spectrum in enumerate(spectra):
            values = _band_values(spectrum, samples, top_of_atmosphere)
            for j, c in enumerate(reflective):
                out[m, c] = float(np.dot(responses[j][1], values[j]))
    for c, band in enumerate(bands):
        if is_thermal(band):
            out[:, c] = [s.brightness_temperature_k / 100.0 for s in spectra]
    return out.astype(np.float32)


def _polarisation(band: Band) -> str:
    if band.modality in (Modality.SAR_VV, Modality.SAR_HH):
        return "vv"
    if band.modality in (Modality.SAR_VH, Modality.SAR_HV):
        return "vh"
    raise ValueError(f"Band {band.name!r}: expected a SAR band, got {band.modality.name.lower()}")


def sar_matrix(spectra: Sequence[Spectrum], bands: Sequence[Band]) -> np.ndarray:
    """Linear backscatter (sigma0, power) of several materials in SAR bands.

    Materials without a fixed signature (canopies, clouds) get 0, so that a linear mix adds
    only the other materials; the world adds canopies with :func:`canopy_backscatter_db`.

    Returns:
        (M, C) float32 linear sigma0.
    """
    out = np.zeros((len(spectra), len(bands)), dtype=np.float32)
    for c, band in enumerate(bands):
        field = f"{_polarisation(band)}_db"
        for m, spectrum in enumerate(spectra):
            db = getattr(spectrum, field)
            out[m, c] = 0.0 if db is None else 10.0 ** (db / 10.0)
    return out


def canopy_backscatter_db(height_m: ArrayLike, band: Band) -> np.ndarray:
    """C-band backscatter of a closed tree canopy, rising with height and saturating.

    Volume scattering from branches grows with biomass and saturates for tall stands
    (C-band sees mostly the crown); VH, being almost pure volume scattering, rises most.

    Args:
        height_m: (...) canopy height.
        band: a SAR band (VV/HH or VH/HV).

    Returns:
        (...) sigma0 in dB.
    """
    h = np.maximum(np.asarray(height_m, dtype=np.float64), 0.0)
    if _polarisation(band) == "vh":
        return -21.0 + 10.0 * (1.0 - np.exp(-h / 10.0))
    return -11.0 + 4.0 * (1.0 - np.exp(-h / 8.0))


def canopy_shade_fraction(height_m: ArrayLike) -> np.ndarray:
    """Fraction of a canopy pixel in crown self-shadow, growing with tree height.

    Taller stands have deeper, rougher crowns that cast longer shadows on one another,
    which darkens them in the visible and SWIR while the NIR (leaf transmission) drops less.

    Args:
        height_m: (...) canopy height.

    Returns:
        (...) shade fraction in [0.1, 0.75).
    """
    h = np.maximum(np.asarray(height_m, dtype=np.float64), 0.0)
    return 0.1 + 0.65 * (1.0 - np.exp(-h / 15.0))
