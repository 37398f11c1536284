"""A local STAC catalog over the two-area world, written with pystac, its assets COGs.

Collections:

- ``sentinel-2``: one item per date of the world's Sentinel-2 files, four single-band
  assets (``blue``, ``green``, ``red``, ``nir``; Earth Search's keys) with ``eo:bands``
  (common names and centre wavelengths, no band names the sensor knows) and the ``proj``
  extension; plus one item 20 km east (its own small COGs), on 2021-06-10, that a
  bounding box leaves out;
- ``sentinel-1``: one item per date, one two-band asset ``vv_vh`` whose ``eo:bands``
  name VV and VH, without ``proj`` (the reader takes CRS and transform from the file).

The catalog is self-contained: asset hrefs are relative to their item's JSON.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pystac
import rasterio
import rasterio.shutil
from pystac.extensions.eo import Band, EOExtension
from pystac.extensions.projection import ProjectionExtension
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds
from two_areas import ORIGIN, S1_DATES, S2_DATES, write_two_areas

__all__ = ["FAR_DAY", "S2_ASSETS", "write_stac_world"]

S2_ASSETS = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08"}
"""Asset key → band of the Sentinel-2 items."""
_WAVELENGTH_UM = {"blue": 0.49, "green": 0.56, "red": 0.665, "nir": 0.842}
FAR_DAY = "20210610"
_FAR_ORIGIN = (ORIGIN[0] + 20_000.0, ORIGIN[1])


def _as_cog(path: Path) -> None:
    """Rewrite a GeoTIFF in place as a Cloud-Optimized GeoTIFF."""
    cog = path.with_suffix(".cog.tif")
    rasterio.shutil.copy(path, cog, driver="COG")
    cog.replace(path)


def _item(item_id: str, day: str, reference: Path, grid_code: str) -> pystac.Item:
    """An item dated ``day`` whose footprint is ``reference``'s (in WGS84)."""
    with rasterio.open(reference) as src:
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    geometry = {
        "type": "Polygon",
        "coordinates": [
            [[west, south], [east, south], [east, north], [west, north], [west, south]]
        ],
    }
    moment = datetime.strptime(day, "%Y%m%d").replace(hour=10, minute=30, tzinfo=UTC)
    return pystac.Item(
        item_id, geometry, [west, south, east, north], moment, {"grid:code": grid_code}
    )


def _s2_item(item_id: str, day: str, files: dict[str, Path], grid_code: str) -> pystac.Item:
    item = _item(item_id, day, files["blue"], grid_code)
    for key, path in files.items():
        asset = pystac.Asset(str(path), media_type=pystac.MediaType.COG, roles=["data"])
        item.add_asset(key, asset)
        EOExtension.ext(asset, add_if_missing=True).bands = [
            Band.create(name=key, common_name=key, center_wavelength=_WAVELENGTH_UM[key])
        ]
        with rasterio.open(path) as src:
            projection = ProjectionExtension.ext(asset, add_if_missing=True)
            projection.code = src.crs.to_string()
            projection.transform = list(src.transform)[:6]
            projection.shape = [src.height, src.width]
    item.add_asset("thumbnail", pystac.Asset("thumbnail.png", roles=["thumbnail"]))
    return item


def _collection(name: str, items: list[pystac.Item]) -> pystac.Collection:
    boxes = np.array([item.bbox for item in items])
    spatial = [*boxes[:, :2].min(0), *boxes[:, 2:].max(0)]
    days = sorted(item.datetime for item in items if item.datetime)
    extent = pystac.Extent(
        pystac.SpatialExtent([spatial]), pystac.TemporalExtent([[days[0], days[-1]]])
    )
    collection = pystac.Collection(name, f"The world's {name} acquisitions.", extent)
    collection.add_items(items)
    return collection


def write_stac_world(root: Path) -> dict[str, Path]:
    """The two-area world as COGs, a far Sentinel-2 item, and a catalog over them.

    Returns:
        The world's folders and label files (see ``two_areas``), ``catalog``, and the
        collections' JSON ``sentinel-2`` and ``sentinel-1``.
    """
    world = write_two_areas(root / "rasters")
    for path in [*world["s2"].glob("*.tif"), *world["s1"].glob("*.tif")]:
        _as_cog(path)
    far: dict[str, Path] = {}
    for b, (key, band) in enumerate(S2_ASSETS.items()):
        path = root / "rasters" / "s2_far" / f"S2_{FAR_DAY}_{band}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(
            path, "w", driver="GTiff", count=1, height=16, width=16, dtype="uint16",
            crs="EPSG:32632", transform=from_origin(*_FAR_ORIGIN, 10.0, 10.0),
        ) as dst:  # fmt: skip
            dst.write(np.full((1, 16, 16), 1000 + 100 * b, np.uint16))
        _as_cog(path)
        far[key] = path
    s2_items = [
        _s2_item(
            f"S2_{day}",
            day,
            {key: world["s2"] / f"S2_{day}_{band}.tif" for key, band in S2_ASSETS.items()},
            "MGRS-32TMT",
        )
        for day in S2_DATES
    ]
    s2_items.append(_s2_item(f"S2_{FAR_DAY}_far", FAR_DAY, far, "MGRS-32TNT"))
    s1_items = []
    for day in S1_DATES:
        path = world["s1"] / f"S1A_IW_{day}.tif"
        item = _item(f"S1A_IW_{day}", day, path, "S1-IW")
        asset = pystac.Asset(str(path), media_type=pystac.MediaType.COG, roles=["data"])
        item.add_asset("vv_vh", asset)
        EOExtension.ext(asset, add_if_missing=True).bands = [
            Band.create(name="VV"),
            Band.create(name="VH"),
        ]
        s1_items.append(item)
    catalog = pystac.Catalog("stac-world", "The two-area world as a STAC catalog.")
    catalog.add_children([_collection("sentinel-2", s2_items), _collection("sentinel-1", s1_items)])
    catalog.normalize_hrefs(str(root / "stac"))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    stac = root / "stac"
    return {
        **world,
        "catalog": stac / "catalog.json",
        "sentinel-2": stac / "sentinel-2" / "collection.json",
        "sentinel-1": stac / "sentinel-1" / "collection.json",
    }
