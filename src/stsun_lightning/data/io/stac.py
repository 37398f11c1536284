"""STAC Items, ItemCollections and Catalogs as an input's files, for the one reader.

A STAC input resolves to :class:`~stsun_lightning.data.io.files.RasterFile` entries (the
href rasterio opens, the item's date, the bands each asset stores, the item's scene and,
from the ``proj`` extension, its CRS and transform), which the reader
(:class:`~stsun_lightning.data.datasets.geotiff.GeoTiffRasterDataset`) takes exactly as it
takes files found by path. So a catalog and the equivalent file paths read the same
pixels, dates and bands.

Which assets hold which bands: ``assets: {asset key: band | [bands in file order]}``, or,
without it, each asset's ``eo:bands`` (STAC 1.1: ``bands``), a band matched by its name,
then by its centre wavelength (within half the sensor band's width), or an asset whose
key is a band's name (``vv``, ``B04``). Remote hrefs are opened through GDAL's virtual
file systems (``/vsicurl/``, ``/vsis3/``, ``/vsigs/``, ``/vsiaz/``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import unquote, urljoin, urlparse

import pystac
import shapely
import shapely.geometry
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.transform import Affine

from stsun_lightning.data.io.files import Georeference, RasterFile
from stsun_lightning.data.sensors import Sensor
from stsun_lightning.errors import (
    ConfigError,
    InputFileError,
    MissingFileError,
    unknown_name_error,
)

__all__ = ["StacQuery", "gdal_path", "item_day", "stac_files"]

_VSI = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/"}
_VSI.update({"az": "/vsiaz/", "abfs": "/vsiaz/"})


@dataclass(frozen=True)
class StacQuery:
    """Which STAC items and assets an input reads.

    Attributes:
        href: a STAC Item, ItemCollection, Catalog or Collection (JSON path or URL).
        assets: per asset key, the bands it stores in file order; empty: from each
            asset's ``eo:bands`` (or its key, when that is a band's name).
        start: first date kept (inclusive), or None.
        end: last date kept (inclusive), or None.
        bbox: ``(min lon, min lat, max lon, max lat)`` in WGS84 that items must meet.
    """

    href: str
    assets: tuple[tuple[str, tuple[str, ...]], ...] = ()
    start: date | None = None
    end: date | None = None
    bbox: tuple[float, float, float, float] | None = None

    @classmethod
    def parse(cls, name: str, spec: Mapping[str, Any], sensor: Sensor) -> StacQuery | None:
        """The query of an input's ``stac``, ``assets``, ``datetime`` and ``bbox`` keys.

        Returns:
            None when the input names no ``stac``.

        Raises:
            ConfigError: a key of the wrong type or value, naming the input and the key.
            UnknownNameError: an ``assets`` band the sensor does not have.
        """
        if "stac" not in spec:
            stray = sorted({"assets", "datetime", "bbox"} & set(spec))
            if stray:
                raise ConfigError(
                    f"Input {name!r}: {stray} filter a STAC input; name it under 'stac' "
                    "(an Item, ItemCollection or Catalog JSON file or URL)."
                )
            return None
        href = spec["stac"]
        if not isinstance(href, str) or not href:
            raise ConfigError(f"Input {name!r}: stac must be a path or URL, got {href!r}.")
        start, end = _date_range(name, spec.get("datetime"))
        return cls(
            href,
            _assets(name, spec.get("assets"), sensor),
            start,
            end,
            _bbox(name, spec.get("bbox")),
        )

    def filters(self) -> str:
        """The filters, as a config would state them (for messages)."""
        parts = []
        if self.start or self.end:
            parts.append(f"datetime {self.start or '..'}/{self.end or '..'}")
        if self.bbox is not None:
            parts.append(f"bbox {list(self.bbox)}")
        return " and ".join(parts) or "no filter"


def _date_range(name: str, text: Any) -> tuple[date | None, date | None]:
    """``"2021-01-01/2021-06-30"`` (either end ``..`` or empty for open), or one date."""
    if text is None:
        return None, None
    if not isinstance(text, str | date):
        raise ConfigError(f"Input {name!r}: datetime must be 'start/end', got {text!r}.")
    if isinstance(text, date):
        day = text.date() if isinstance(text, datetime) else text
        return day, day
    ends = text.split("/")
    if len(ends) > 2:
        raise ConfigError(f"Input {name!r}: datetime {text!r} must be 'start/end'.")
    days = []
    for end in ends:
        end = end.strip()
        if end in ("", ".."):
            days.append(None)
            continue
        try:
            days.append(datetime.fromisoformat(end.replace("Z", "+00:00")).date())
        except ValueError:
            raise ConfigError(
                f"Input {name!r}: datetime {text!r}: {end!r} is not a date (expected "
                "YYYY-MM-DD or an RFC 3339 time, e.g. '2021-01-01/2021-06-30')."
            ) from None
    start, end = days if len(days) == 2 else (days[0], days[0])
    if start and end and start > end:
        raise ConfigError(f"Input {name!r}: datetime {text!r} ends before it starts.")
    return start, end


def _bbox(name: str, bbox: Any) -> tuple[float, float, float, float] | None:
    if bbox is None:
        return None
    numbers = isinstance(bbox, list | tuple) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in bbox
    )
    if not numbers or len(bbox) != 4 or not (bbox[0] < bbox[2] and bbox[1] < bbox[3]):
        raise ConfigError(
            f"Input {name!r}: bbox must be [min lon, min lat, max lon, max lat] in WGS84 "
            f"with min < max, got {bbox!r}."
        )
    return tuple(float(v) for v in bbox)  # type: ignore[return-value]


def _assets(name: str, assets: Any, sensor: Sensor) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if assets is None:
        return ()
    if not isinstance(assets, Mapping) or not assets:
        raise ConfigError(
            f"Input {name!r}: assets must map asset keys to bands, e.g. "
            f"{{B04: B04, vv_vh: [VV, VH]}}, got {assets!r}."
        )
    parsed = []
    for key, bands in assets.items():
        listed = (bands,) if isinstance(bands, str) else tuple(bands or ())
        if not listed or not all(isinstance(b, str) for b in listed):
            raise ConfigError(
                f"Input {name!r}: assets[{key!r}] must be a band name or a list of them, "
                f"got {bands!r}."
            )
        for band in listed:
            if band not in sensor.band_names:
                raise unknown_name_error(
                    f"band of sensor {sensor.name!r}",
                    band,
                    sensor.band_names,
                    f"input {name!r}, assets[{key!r}]",
                )
        parsed.append((str(key), listed))
    return tuple(parsed)


def stac_files(
    query: StacQuery, sensor: Sensor, bands: Sequence[str], input_name: str
) -> list[RasterFile]:
    """The files of a STAC input: one per asset holding a band of ``bands``, per item kept.

    Args:
        query: the catalog, the assets and the filters.
        sensor: the input's sensor (band names and wavelengths to match ``eo:bands``).
        bands: the bands the input reads.
        input_name: the input's name, for messages.

    Raises:
        MissingFileError: the catalog, or a local asset href, does not exist.
        InputFileError: the catalog is not STAC JSON.
        ConfigError: an item without a date, an asset key of ``assets`` an item lacks,
            a band in two assets of one item, or no item or asset the filters keep.
    """
    where = f"Input {input_name!r}"
    href = query.href
    if not urlparse(href).scheme and not href.startswith("/vsi"):
        href = os.path.abspath(os.path.expanduser(href))  # links resolve against it
    items = list(_read_items(href, where))
    kept = [item for item in items if _keeps(query, item)]
    if not kept:
        raise ConfigError(
            f"{where}: no item of {query.href} ({len(items)} item(s)) matches {query.filters()}."
        )
    files = [f for item in kept for f in _item_files(item, query, sensor, bands, where)]
    if not files:
        raise ConfigError(
            f"{where}: no asset of the {len(kept)} item(s) of {query.href} holds a band of "
            f"{list(bands)}; name them under 'assets' ({{asset key: band}})."
        )
    return files


def _read_json(href: str, where: str) -> dict[str, Any]:
    try:
        return pystac.StacIO.default().read_json(href)
    except FileNotFoundError:
        raise MissingFileError(f"{where}: STAC file {href} does not exist.") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputFileError(f"{where}: cannot read {href} as STAC JSON: {error}") from None


def _read_items(href: str, where: str) -> Iterator[pystac.Item]:
    """Every item of an Item, ItemCollection, Catalog or Collection (recursively)."""
    data = _read_json(href, where)
    kind = data.get("type")
    if kind == "Feature":
        yield _item(data, href, where)
    elif kind == "FeatureCollection":
        for feature in data.get("features") or []:
            self_link = next(
                (link["href"] for link in feature.get("links", []) if link.get("rel") == "self"),
                None,
            )
            yield _item(feature, _absolute(self_link, href) if self_link else href, where)
    elif kind in ("Catalog", "Collection"):
        yield from _catalog_items(_catalog(data, href), where)
    else:
        raise InputFileError(
            f"{where}: {href} is not a STAC Item, ItemCollection or Catalog (its 'type' is "
            f"{kind!r}; expected Feature, FeatureCollection, Catalog or Collection)."
        )


def _catalog_items(catalog: pystac.Catalog, where: str) -> Iterator[pystac.Item]:
    """Items of a catalog and its children, each read from its own JSON (named in errors)."""
    for link in catalog.get_item_links():
        href = link.get_absolute_href()
        if href is None:
            raise InputFileError(f"{where}: an item link of {catalog.self_href} has no href.")
        yield _item(_read_json(href, where), href, where)
    for link in catalog.get_child_links():
        href = link.get_absolute_href()
        if href is None:
            continue
        yield from _catalog_items(_catalog(_read_json(href, where), href), where)


def _catalog(data: dict[str, Any], href: str) -> pystac.Catalog:
    """A Catalog or Collection from its JSON, its links resolved against ``href``."""
    kind = pystac.Collection if data.get("type") == "Collection" else pystac.Catalog
    return kind.from_dict(data, href=href)


def _item(data: dict[str, Any], href: str, where: str) -> pystac.Item:
    """An item from its JSON, with its date checked first (pystac's error names no item)."""
    properties = data.get("properties") or {}
    if properties.get("datetime") is None and properties.get("start_datetime") is None:
        raise ConfigError(
            f"{where}: STAC item {data.get('id')!r} ({href}) has no datetime (nor "
            "start_datetime); every item needs its acquisition date."
        )
    if properties.get("datetime") is None and properties.get("end_datetime") is None:
        properties = {**properties, "end_datetime": properties["start_datetime"]}
        data = {**data, "properties": properties}
    try:
        return pystac.Item.from_dict(data, href=href, migrate=False, preserve_dict=True)
    except (pystac.STACError, KeyError, TypeError, ValueError) as error:
        raise InputFileError(
            f"{where}: STAC item {data.get('id')!r} ({href}) is not valid: {error}"
        ) from None


def item_day(item: pystac.Item) -> date:
    """The item's acquisition day (UTC): its ``datetime``, else its ``start_datetime``."""
    moment = item.datetime or item.common_metadata.start_datetime
    assert moment is not None  # checked by _item
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.date()


def _keeps(query: StacQuery, item: pystac.Item) -> bool:
    """Whether the item's day is in the date range and its footprint meets the box."""
    day = item_day(item)
    if (query.start and day < query.start) or (query.end and day > query.end):
        return False
    if query.bbox is None:
        return True
    if item.geometry is not None:
        footprint = shapely.geometry.shape(item.geometry)
    elif item.bbox is not None:  # 2-D or 3-D: (min x, min y[, min z], max x, max y[, max z])
        box, half = item.bbox, len(item.bbox) // 2
        footprint = shapely.box(box[0], box[1], box[half], box[half + 1])
    else:
        return False  # a non-spatial item meets no box
    return bool(footprint.intersects(shapely.box(*query.bbox)))


def _item_files(
    item: pystac.Item, query: StacQuery, sensor: Sensor, bands: Sequence[str], where: str
) -> list[RasterFile]:
    """The item's assets that hold a band of ``bands``, as files."""
    stored = dict(query.assets) if query.assets else _described_bands(item, sensor)
    if query.assets:
        missing = [key for key in stored if key not in item.assets]
        if missing:
            raise ConfigError(
                f"{where}: STAC item {item.id!r} has no asset {missing[0]!r} (named under "
                f"'assets'); its assets are {sorted(item.assets)}."
            )
    holder: dict[str, str] = {}
    files = []
    for key, names in stored.items():
        read = tuple(b if b in bands else None for b in names)
        if not any(read):
            continue
        for band in filter(None, read):
            if band in holder:
                raise ConfigError(
                    f"{where}: STAC item {item.id!r} has band {band!r} in assets "
                    f"{holder[band]!r} and {key!r}; name the one to read under 'assets'."
                )
            holder[band] = key
        asset = item.assets[key]
        origin = f"STAC item {item.id!r}, asset {key!r}"
        files.append(
            RasterFile(
                _asset_path(asset, item, origin, where),
                item_day(item),
                read,
                str(item.properties.get("grid:code") or item.collection_id or "stac"),
                origin,
                _georeference(asset, item, origin, where),
            )
        )
    return files


def _described_bands(item: pystac.Item, sensor: Sensor) -> dict[str, tuple[str, ...]]:
    """Per asset, the sensor bands its ``eo:bands`` (or its key) names, in file order."""
    found = {}
    lower = {b.lower(): b for b in sensor.band_names}
    for key, asset in sorted(item.assets.items()):
        described = asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands")
        if described:
            names = tuple(_sensor_band(entry, sensor) for entry in described)
            if any(names):
                found[key] = tuple(n or "" for n in names)
        elif key.lower() in lower:
            found[key] = (lower[key.lower()],)
    return found


def _sensor_band(entry: Mapping[str, Any], sensor: Sensor) -> str | None:
    """The sensor band an ``eo:bands`` entry describes: by name, then by centre wavelength."""
    for field in ("name", "common_name", "eo:common_name"):
        if entry.get(field) in sensor.band_names:
            return entry[field]
    micrometres = entry.get("center_wavelength", entry.get("eo:center_wavelength"))
    if not isinstance(micrometres, int | float):
        return None
    nm = micrometres * 1000.0
    near = [
        (abs(b.wavelength_nm - nm), b.name)
        for b in sensor.bands
        if b.bandwidth_nm > 0 and abs(b.wavelength_nm - nm) <= b.bandwidth_nm / 2
    ]
    return min(near)[1] if near else None


def gdal_path(href: str) -> str:
    """What rasterio opens for an href: a local path, or a GDAL virtual file system path.

    ``https://host/a.tif`` → ``/vsicurl/https://host/a.tif``, ``s3://bucket/a.tif`` →
    ``/vsis3/bucket/a.tif``; ``file://`` URLs become paths; ``/vsi...`` stays.
    """
    parsed = urlparse(href)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        return f"/vsicurl/{href}"
    if scheme in _VSI:
        return f"{_VSI[scheme]}{parsed.netloc}{parsed.path}"
    if scheme == "file":
        return unquote(parsed.path)
    return href


def _absolute(href: str, base: str) -> str:
    """``href`` resolved against the JSON it was read from (a path or a URL)."""
    if urlparse(href).scheme in (*_VSI, "file") or href.startswith("/vsi"):
        return href
    if urlparse(base).scheme in _VSI:
        return urljoin(base, href)
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(base)), href))


def _asset_path(asset: pystac.Asset, item: pystac.Item, origin: str, where: str) -> str:
    href = asset.get_absolute_href() or asset.href
    if item.self_href:
        href = _absolute(href, item.self_href)
    path = gdal_path(href)
    if not path.startswith("/vsi") and not os.path.isfile(path):
        raise MissingFileError(f"{where}: {origin}: href {asset.href!r} ({path}) does not exist.")
    return path


def _georeference(
    asset: pystac.Asset, item: pystac.Item, origin: str, where: str
) -> Georeference | None:
    """The asset's CRS, transform and shape from the ``proj`` extension (asset, else item)."""

    def field(name: str) -> Any:
        return asset.extra_fields.get(name, item.properties.get(name))

    code, epsg, wkt = field("proj:code"), field("proj:epsg"), field("proj:wkt2")
    transform, shape = field("proj:transform"), field("proj:shape")
    if transform is None or shape is None or (code is None and epsg is None and wkt is None):
        return None
    try:
        crs = CRS.from_user_input(code or (f"EPSG:{epsg}" if epsg is not None else wkt))
        affine = Affine(*[float(v) for v in transform[:6]])
        rows, cols = (int(v) for v in shape[-2:])
    except (CRSError, TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {origin}: its proj fields are not valid: {error}") from None
    return Georeference(crs, affine, (rows, cols))
