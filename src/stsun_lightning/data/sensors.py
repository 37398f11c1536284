"""Registry of remote-sensing sensors and their bands.

Each :class:`Band` carries what the model needs to embed a channel from any sensor: centre
wavelength, bandwidth (full width at half maximum), native ground sampling distance (GSD)
and modality. Conventions:

* Wavelengths and bandwidths are in nanometres; a bandwidth of 0 means unknown.
* SAR bands use the radar wavelength (Sentinel-1 C-band, 5.405 GHz -> about 5.547e7 nm),
  bandwidth 0, and one modality per polarisation.
* Elevation bands (DSM, DEM) have wavelength 0 and bandwidth 0 and modality ``ELEVATION``.
* Thermal infrared bands have their real wavelength (Landsat 8 B10: 10895 nm) and modality
  ``THERMAL``: they measure emitted heat, not reflected light.

Sensors are looked up by name (case-insensitive, a few aliases such as ``"s2"``) with
:func:`get_sensor`; more can be added with :func:`register_sensor` or
:func:`load_sensor_yaml`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from stsun_lightning.batch import Modality
from stsun_lightning.errors import (
    ConfigError,
    InputFileError,
    MissingFileError,
    unknown_name_error,
)

__all__ = [
    "Band",
    "Sensor",
    "band_metadata",
    "get_sensor",
    "list_sensors",
    "load_sensor_yaml",
    "register_sensor",
]

_BAND_FIELDS = ("name", "wavelength_nm", "bandwidth_nm", "gsd_m", "modality", "description")


_REQUIRED = ("name", "wavelength_nm", "gsd_m", "modality")  # bandwidth 0, description ""


def _number(field: str, value: Any) -> float:
    """Return ``value`` as a finite float (numeric strings too: YAML reads ``5.5e7`` as one)."""
    try:
        number = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"field {field!r}: expected a finite number, got {value!r}")
    return number


def _check_band(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the fields of one band and return them normalised.

    Raises:
        ValueError: naming the field and what was expected.
    """
    missing = [f for f in _REQUIRED if f not in spec]
    if missing:
        raise ValueError(f"missing field(s) {missing}; required: {', '.join(_REQUIRED)}")
    extra = sorted(set(spec) - set(_BAND_FIELDS))
    if extra:
        raise ValueError(f"unexpected field(s) {extra}; allowed: {', '.join(_BAND_FIELDS)}")
    out = {"bandwidth_nm": 0.0, "description": "", **spec}
    if not isinstance(out["name"], str) or not out["name"].strip():
        raise ValueError(f"field 'name': expected a non-empty string, got {out['name']!r}")
    if not isinstance(out["description"], str):
        raise ValueError(f"field 'description': expected a string, got {out['description']!r}")
    wl, bw, gsd = (_number(f, out[f]) for f in ("wavelength_nm", "bandwidth_nm", "gsd_m"))
    try:
        mod = Modality.parse(out["modality"])
    except ValueError as err:
        raise ValueError(f"field 'modality': {err}") from None
    if mod is Modality.ELEVATION and wl != 0:
        raise ValueError(f"field 'wavelength_nm': expected 0 for elevation bands, got {wl}")
    if mod not in (Modality.ELEVATION, Modality.OTHER) and wl <= 0:
        raise ValueError(f"field 'wavelength_nm': expected > 0 for {mod.name.lower()}, got {wl}")
    if wl < 0:
        raise ValueError(f"field 'wavelength_nm': expected >= 0, got {wl}")
    if bw < 0:
        raise ValueError(f"field 'bandwidth_nm': expected >= 0 (0 = unknown), got {bw}")
    if gsd <= 0:
        raise ValueError(f"field 'gsd_m': expected > 0, got {gsd}")
    out.update(wavelength_nm=wl, bandwidth_nm=bw, gsd_m=gsd, modality=mod)
    return out


@dataclass(frozen=True)
class Band:
    """One band of a sensor.

    Attributes:
        name: band name as the data provider spells it, e.g. ``"B04"``.
        wavelength_nm: centre wavelength in nm (radar wavelength for SAR, 0 for elevation).
        bandwidth_nm: full width at half maximum in nm; 0 means unknown.
        gsd_m: native ground sampling distance in metres.
        modality: what the band measures (names and integers are converted).
        description: free text, e.g. ``"red edge 1"``.
    """

    name: str
    wavelength_nm: float
    bandwidth_nm: float
    gsd_m: float
    modality: Modality
    description: str = ""

    def __post_init__(self) -> None:
        try:
            fields = _check_band({f: getattr(self, f) for f in _BAND_FIELDS})
        except ValueError as err:
            raise ValueError(f"Band {self.name!r}: {err}") from None
        for field, value in fields.items():
            object.__setattr__(self, field, value)


def band_metadata(bands: Sequence[Band]) -> dict[str, torch.Tensor]:
    """Per-band tensors of ``bands``, in their order.

    Returns:
        ``{"wavelength_nm": float32 (C,), "bandwidth_nm": float32 (C,),
        "modality": int64 (C,)}``.
    """
    return {
        "wavelength_nm": torch.tensor([b.wavelength_nm for b in bands], dtype=torch.float32),
        "bandwidth_nm": torch.tensor([b.bandwidth_nm for b in bands], dtype=torch.float32),
        "modality": torch.tensor([int(b.modality) for b in bands], dtype=torch.int64),
    }


@dataclass(frozen=True)
class Sensor:
    """A sensor: a name and its bands in the order the data provider stacks them.

    Attributes:
        name: registry name, e.g. ``"sentinel2_l2a"``.
        bands: the bands, non-empty, with unique names.
        description: free text, usually naming the specification the values come from.
    """

    name: str
    bands: tuple[Band, ...]
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"Sensor name: expected a non-empty string, got {self.name!r}")
        bands = tuple(self.bands)
        if not bands or not all(isinstance(b, Band) for b in bands):
            raise ValueError(f"Sensor {self.name!r}: expected a non-empty sequence of Band")
        names = [b.name for b in bands]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"Sensor {self.name!r}: duplicate band names {duplicates}")
        object.__setattr__(self, "bands", bands)

    @property
    def band_names(self) -> tuple[str, ...]:
        """Names of the bands, in sensor order."""
        return tuple(b.name for b in self.bands)

    @property
    def gsd_m(self) -> float:
        """Finest native GSD among the bands, in metres."""
        return min(b.gsd_m for b in self.bands)

    def band(self, name: str, where: str = "") -> Band:
        """The band called ``name`` (exact match first, then case-insensitive).

        Args:
            name: the band's name.
            where: where the name comes from (e.g. ``"input 's2'"``), named in the error.

        Raises:
            UnknownNameError: naming the sensor, listing its bands and the closest one.
        """
        for b in self.bands:
            if b.name == name:
                return b
        matches = [b for b in self.bands if b.name.lower() == str(name).lower()]
        if len(matches) == 1:
            return matches[0]
        raise unknown_name_error(f"band of sensor {self.name!r}", name, self.band_names, where)

    def select(self, names: Sequence[str] | None = None, where: str = "") -> tuple[Band, ...]:
        """Bands by name in the requested order; ``None`` gives all, in sensor order.

        A single string is taken as one band name; ``where`` is named in the error of an
        unknown one (see :meth:`band`).
        """
        if names is None:
            return self.bands
        if isinstance(names, str):
            names = [names]
        return tuple(self.band(n, where) for n in names)

    def metadata(self, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Per-band tensors for the bands chosen as in :meth:`select`.

        Returns:
            ``{"wavelength_nm": float32 (C,), "bandwidth_nm": float32 (C,),
            "modality": int64 (C,)}``.
        """
        return band_metadata(self.select(names))

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Sensor:
        """Build a sensor from a plain mapping, validating every field.

        Args:
            spec: ``{"name": ..., "description": ..., "bands": [{"name", "wavelength_nm",
                "bandwidth_nm", "gsd_m", "modality", "description"}, ...]}``;
                ``bandwidth_nm`` (default 0 = unknown) and the descriptions are optional,
                ``modality`` is a name such as ``"optical"`` or ``"sar_vv"``.

        Raises:
            ConfigError: naming the sensor, the band (index and name), the field and what
                was expected.
        """
        if not isinstance(spec, Mapping):
            raise ConfigError(f"Sensor spec: expected a mapping, got {type(spec).__name__}")
        name = spec.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(
                f"Sensor spec: field 'name': expected a non-empty string, got {name!r}"
            )
        extra = sorted(set(spec) - {"name", "description", "bands"})
        if extra:
            raise ConfigError(
                f"Sensor {name!r}: unexpected field(s) {extra}; allowed: name, description, bands"
            )
        specs = spec.get("bands")
        if not isinstance(specs, Sequence) or isinstance(specs, str) or not specs:
            raise ConfigError(
                f"Sensor {name!r}: field 'bands': expected a non-empty list of band mappings, "
                f"got {specs!r}"
            )
        bands: list[Band] = []
        for i, b in enumerate(specs):
            at = f"Sensor {name!r}, band {i} ({b.get('name') if isinstance(b, Mapping) else b!r})"
            try:
                if not isinstance(b, Mapping):
                    raise ValueError(f"expected a mapping with fields {', '.join(_BAND_FIELDS)}")
                fields = _check_band(b)
                previous = [j for j, other in enumerate(bands) if other.name == fields["name"]]
                if previous:
                    raise ValueError(
                        f"field 'name': expected a unique band name, but band {previous[0]} "
                        f"is also named {fields['name']!r}"
                    )
            except ValueError as err:
                raise ConfigError(f"{at}: {err}") from None
            bands.append(Band(**fields))
        return cls(name=name, bands=tuple(bands), description=str(spec.get("description") or ""))

    def to_dict(self) -> dict[str, Any]:
        """Plain (YAML-ready) form, the inverse of :meth:`from_dict`."""
        bands = [{**asdict(b), "modality": b.modality.name.lower()} for b in self.bands]
        return {"name": self.name, "description": self.description, "bands": bands}


def _edges(
    name: str, lo: float, hi: float, gsd: float, description: str, modality: Modality | None = None
) -> tuple[Any, ...]:
    return (name, (lo + hi) / 2, hi - lo, gsd, description, *([modality] if modality else []))


def _sensor(name: str, description: str, rows: Sequence[tuple[Any, ...]]) -> Sensor:
    bands = tuple(
        Band(r[0], r[1], r[2], r[3], r[5] if len(r) > 5 else Modality.OPTICAL, r[4]) for r in rows
    )
    return Sensor(name, bands, description)


# ESA, "Sentinel-2 MSI Spectral Responses" (S2-SRF, COPE-GSEG-EOPG-TN-15-0007), S2A
# central wavelength / bandwidth as tabulated on the Sentinel-2 MSI "Resolutions" page.
_S2 = (
    ("B01", 442.7, 21.0, 60, "coastal aerosol"),
    ("B02", 492.4, 66.0, 10, "blue"),
    ("B03", 559.8, 36.0, 10, "green"),
    ("B04", 664.6, 31.0, 10, "red"),
    ("B05", 704.1, 15.0, 20, "red edge 1"),
    ("B06", 740.5, 15.0, 20, "red edge 2"),
    ("B07", 782.8, 20.0, 20, "red edge 3"),
    ("B08", 832.8, 106.0, 10, "nir"),
    ("B8A", 864.7, 21.0, 20, "narrow nir"),
    ("B09", 945.1, 20.0, 60, "water vapour"),
    ("B10", 1373.5, 31.0, 60, "swir cirrus"),
    ("B11", 1613.7, 91.0, 20, "swir 1"),
    ("B12", 2202.4, 175.0, 20, "swir 2"),
)


# USGS, "What are the band designations for the Landsat satellites?" (band ranges).
_TM = (
    _edges("B1", 450, 520, 30, "blue"),
    _edges("B2", 520, 600, 30, "green"),
    _edges("B3", 630, 690, 30, "red"),
    _edges("B4", 760, 900, 30, "nir"),
    _edges("B5", 1550, 1750, 30, "swir 1"),
    _edges("B6", 10400, 12500, 120, "thermal", Modality.THERMAL),
    _edges("B7", 2080, 2350, 30, "swir 2"),
)


# ETM+: the two thermal gain files (B6_VCID_1 low, B6_VCID_2 high) are one band, "B6".
_ETM = (
    *_TM[:3],
    _edges("B4", 770, 900, 30, "nir"),
    _TM[4],
    _edges("B6", 10400, 12500, 60, "thermal", Modality.THERMAL),
    _edges("B7", 2090, 2350, 30, "swir 2"),
    _edges("B8", 520, 900, 15, "panchromatic"),
)


_OLI_TIRS = (  # Landsat 8 and 9 share the band designations.
    _edges("B1", 430, 450, 30, "coastal aerosol"),
    _edges("B2", 450, 510, 30, "blue"),
    _edges("B3", 530, 590, 30, "green"),
    _edges("B4", 640, 670, 30, "red"),
    _edges("B5", 850, 880, 30, "nir"),
    _edges("B6", 1570, 1650, 30, "swir 1"),
    _edges("B7", 2110, 2290, 30, "swir 2"),
    _edges("B8", 500, 680, 15, "panchromatic"),
    _edges("B9", 1360, 1380, 30, "cirrus"),
    _edges("B10", 10600, 11190, 100, "thermal 1", Modality.THERMAL),
    _edges("B11", 11500, 12510, 100, "thermal 2", Modality.THERMAL),
)


# NASA, "HLS Product User Guide" v2.0: all bands at 30 m. S30 = MSI B01-B12 incl. B8A and
# B10 (B09/B10 stay TOA); L30 = OLI/TIRS without the pan band, renamed B01..B11.
_HLS_S30 = tuple((*r[:3], 30, r[4]) for r in _S2)


_HLS_L30 = tuple((f"B{int(r[0][1:]):02d}", *r[1:3], 30, *r[4:]) for r in _OLI_TIRS if r[0] != "B8")


# NASA MODIS specifications, land bands 1-7.
_MODIS = (
    _edges("B1", 620, 670, 250, "red"),
    _edges("B2", 841, 876, 250, "nir"),
    _edges("B3", 459, 479, 500, "blue"),
    _edges("B4", 545, 565, 500, "green"),
    _edges("B5", 1230, 1250, 500, "nir 2"),
    _edges("B6", 1628, 1652, 500, "swir 1"),
    _edges("B7", 2105, 2155, 500, "swir 2"),
)


# Planet, "PlanetScope Product Specifications", SuperDove (PSB.SD) 8-band, 3 m ortho pixels.
_SUPERDOVE = (
    _edges("coastal_blue", 431, 452, 3, "coastal blue"),
    _edges("blue", 465, 515, 3, "blue"),
    _edges("green_i", 513, 549, 3, "green i"),
    _edges("green", 547, 583, 3, "green"),
    _edges("yellow", 600, 620, 3, "yellow"),
    _edges("red", 650, 680, 3, "red"),
    _edges("red_edge", 697, 713, 3, "red edge"),
    _edges("nir", 845, 885, 3, "nir"),
)


# Aerial cameras (NAIP: USDA FSA "NAIP imagery" spec; ISPRS 2D semantic labeling benchmark
# descriptions) publish no spectral response and vary by camera: nominal centres, FWHM 0.
_NOMINAL = {"B": (470.0, "blue"), "G": (550.0, "green"), "R": (640.0, "red")}


_NOMINAL["NIR"] = _NOMINAL["IR"] = (850.0, "nir")


def _aerial(names: str, gsd: float) -> list[tuple[Any, ...]]:
    return [(n, _NOMINAL[n][0], 0, gsd, _NOMINAL[n][1]) for n in names.split()]


# Sentinel-1 C-band SAR, 5.405 GHz (ESA Sentinel-1 SAR user guide); 10 m IW GRD pixels.
_S1_NM = 299_792_458.0 / 5.405e9 * 1e9


_BUILTIN = (
    _sensor("sentinel2_l1c", "Sentinel-2 MSI Level-1C (ESA S2-SRF, S2A)", _S2),
    _sensor("sentinel2_l2a", "Sentinel-2 MSI Level-2A (ESA S2-SRF, S2A)", _S2[:10] + _S2[11:]),
    _sensor(
        "sentinel1",
        "Sentinel-1 C-band SAR (ESA Sentinel-1 SAR user guide)",
        [(p, _S1_NM, 0.0, 10, p.lower(), Modality[f"SAR_{p}"]) for p in ("VV", "VH", "HH", "HV")],
    ),
    _sensor("landsat5_tm", "Landsat 5 TM (USGS band designations)", _TM),
    _sensor("landsat7_etm", "Landsat 7 ETM+ (USGS band designations)", _ETM),
    _sensor("landsat8_oli_tirs", "Landsat 8 OLI/TIRS (USGS band designations)", _OLI_TIRS),
    _sensor("landsat9_oli_tirs", "Landsat 9 OLI-2/TIRS-2 (USGS band designations)", _OLI_TIRS),
    _sensor("hls_s30", "HLS v2.0 Sentinel-2 product (NASA HLS user guide)", _HLS_S30),
    _sensor("hls_l30", "HLS v2.0 Landsat product (NASA HLS user guide)", _HLS_L30),
    _sensor("naip", "USDA NAIP 4-band aerial imagery, 0.6 m", _aerial("R G B NIR", 0.6)),
    _sensor("planetscope_superdove", "PlanetScope SuperDove (Planet spec)", _SUPERDOVE),
    _sensor("modis", "MODIS land bands 1-7 (NASA MODIS specifications)", _MODIS),
    _sensor("isprs_irrg", "ISPRS Vaihingen true orthophoto, 0.09 m", _aerial("IR R G", 0.09)),
    _sensor("isprs_rgbir", "ISPRS Potsdam true orthophoto, 0.05 m", _aerial("R G B IR", 0.05)),
    _sensor(
        "isprs_dsm",
        "ISPRS Vaihingen/Potsdam digital surface model (Potsdam GSD, 0.05 m)",
        [("DSM", 0, 0, 0.05, "digital surface model", Modality.ELEVATION)],
    ),
    _sensor(
        "copernicus_dem",
        "Copernicus DEM GLO-30",
        [("elevation", 0, 0, 30, "digital surface model", Modality.ELEVATION)],
    ),
)


_REGISTRY: dict[str, Sensor] = {s.name: s for s in _BUILTIN}


_ALIASES: dict[str, str] = {
    "landsat5": "landsat5_tm",
    "landsat7": "landsat7_etm",
    "landsat8": "landsat8_oli_tirs",
    "landsat9": "landsat9_oli_tirs",
    "s1": "sentinel1",
    "s2": "sentinel2_l2a",
    "sentinel2": "sentinel2_l2a",
}


def get_sensor(name: str, where: str = "") -> Sensor:
    """Look up a registered sensor by name or alias (``"s2"``), case-insensitively.

    Args:
        name: the sensor's name or alias.
        where: where the name comes from (e.g. ``"input 's2'"``), named in the error.

    Raises:
        UnknownNameError: listing the known sensors and the closest match.
    """
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise unknown_name_error("sensor", name, list_sensors(), where)
    return _REGISTRY[key]


def list_sensors() -> list[str]:
    """Names of the registered sensors (not aliases), sorted."""
    return sorted(s.name for s in _REGISTRY.values())


def _check_registrable(sensor: Sensor, overwrite: bool) -> str:
    key = sensor.name.strip().lower()
    if key in _ALIASES:
        raise ValueError(f"Sensor name {sensor.name!r} is an alias of {_ALIASES[key]!r}")
    if key in _REGISTRY and not overwrite:
        raise ValueError(
            f"Sensor {sensor.name!r} is already registered; pass overwrite=True to replace it"
        )
    return key


def register_sensor(sensor: Sensor | Mapping[str, Any], overwrite: bool = False) -> Sensor:
    """Add a :class:`Sensor` (or a mapping for :meth:`Sensor.from_dict`) to the registry.

    Raises:
        ValueError: invalid spec, a name already registered (without ``overwrite``), or a
            name that is an alias.
    """
    if not isinstance(sensor, Sensor):
        sensor = Sensor.from_dict(sensor)
    _REGISTRY[_check_registrable(sensor, overwrite)] = sensor
    return sensor


def load_sensor_yaml(path: str | Path, register: bool = True) -> Sensor | list[Sensor]:
    """Read sensors from YAML: one sensor mapping, or ``{"sensors": [mapping, ...]}``.

    With ``register`` the sensors are registered, all or none (known names are an error).
    Returns the sensor for a single mapping, the list for the ``sensors:`` form.

    Raises:
        InputFileError: naming the path, for an unreadable file or invalid YAML
            (``MissingFileError`` for a missing one).
        ConfigError: naming the path, the sensor and the field, for invalid specs.
    """
    where = f"sensor file {str(path)!r}"
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        kind = MissingFileError if isinstance(err, FileNotFoundError) else InputFileError
        raise kind(f"Cannot load {where}: {err}") from None
    many = isinstance(data, Mapping) and "sensors" in data
    specs = data["sensors"] if many else [data]
    if not isinstance(specs, list) or not specs:
        raise ConfigError(f"In {where}: 'sensors' must be a non-empty list, got {specs!r}")
    try:
        sensors = [Sensor.from_dict(spec) for spec in specs]
        names = [s.name.lower() for s in sensors]
        if len(set(names)) != len(names):
            raise ValueError(f"sensor names repeat: {names}")
        if register:
            for s in sensors:
                _check_registrable(s, overwrite=False)
    except ValueError as err:
        raise ConfigError(f"In {where}: {err}") from None
    if register:
        for s in sensors:
            register_sensor(s)
    return sensors if many else sensors[0]
