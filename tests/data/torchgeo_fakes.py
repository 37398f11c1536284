"""Tiny fake copies of TorchGeo benchmark datasets, in each dataset's real on-disk layout.

Every writer takes a folder, writes a few small samples per split there (the folder
names, file names, formats, band counts and dtypes TorchGeo's class reads) and returns
the folder, to be passed as the datamodule's ``root``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import from_origin
from torchgeo.datasets import Potsdam2D, Vaihingen2D

__all__ = [
    "FAKES",
    "OSCD_DATES",
    "PASTIS_DATES",
    "write_ftw",
    "write_l7_irish",
    "write_l8_biome",
    "write_levir_cd",
    "write_loveda",
    "write_oscd",
    "write_pastis",
    "write_potsdam",
    "write_sen12ms",
    "write_vaihingen",
]


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(sum(map(ord, name)))


def _geotiff(
    path: Path,
    data: np.ndarray,
    crs: str | CRS = "EPSG:32633",
    origin: tuple[float, float] = (600_000.0, 5_500_000.0),
    gsd: float = 10.0,
    nodata: float | None = None,
    **options: str,
) -> None:
    """Write (C, H, W) ``data`` as a GeoTIFF (``options``: GDAL creation options)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = data.shape
    with rasterio.open(
        path, "w", driver="GTiff", height=height, width=width, count=count,
        dtype=data.dtype.name, crs=crs, transform=from_origin(*origin, gsd, gsd), nodata=nodata,
        **options,
    ) as dst:  # fmt: skip
        dst.write(data)


def _png(path: Path, data: np.ndarray) -> None:
    """Write (H, W) or (H, W, 3) uint8 ``data`` as a PNG (or a plain TIFF by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data).save(path)


# --- PASTIS ------------------------------------------------------------------------------

PASTIS_FOLDS = (1, 2, 3, 4, 5, 1)
"""Fold of each fake patch (ID_PATCH 10000 + i): three training patches with the default
folds 1-3 plus one more in fold 1, one validation (4), one test (5)."""
PASTIS_FRAMES = (3, 5, 4, 6, 2, 5)
PASTIS_DATES = {
    10000 + i: [int(f"{dt.date(2018, 9, 17) + dt.timedelta(days=9 * j):%Y%m%d}") for j in range(t)]
    for i, t in enumerate(PASTIS_FRAMES)
}
"""Fake ``dates-S2`` per patch (YYYYMMDD, every 9 days from 2018-09-17)."""


def write_pastis(root: Path, size: int = 32) -> Path:
    """``PASTIS-R/{DATA_S2,ANNOTATIONS}/*.npy`` and ``metadata.geojson`` with S2 dates."""
    base = root / "PASTIS-R"
    rng = _rng("pastis")
    features = []
    for i, (fold, t) in enumerate(zip(PASTIS_FOLDS, PASTIS_FRAMES, strict=True)):
        patch = 10000 + i
        for folder in ("DATA_S2", "DATA_S1A", "DATA_S1D", "ANNOTATIONS", "INSTANCE_ANNOTATIONS"):
            (base / folder).mkdir(parents=True, exist_ok=True)
        s2 = rng.integers(0, 6000, (t, 10, size, size)).astype(np.int16)
        np.save(base / "DATA_S2" / f"S2_{patch}.npy", s2)
        for orbit in ("S1A", "S1D"):
            s1 = rng.normal(-12, 3, (t, 3, size, size)).astype(np.float32)
            np.save(base / f"DATA_{orbit}" / f"{orbit}_{patch}.npy", s1)
        target = rng.integers(0, 20, (3, size, size)).astype(np.uint8)  # 19 = void
        np.save(base / "ANNOTATIONS" / f"TARGET_{patch}.npy", target)
        instances = rng.integers(0, 10, (size, size)).astype(np.int64)
        np.save(base / "INSTANCE_ANNOTATIONS" / f"INSTANCES_{patch}.npy", instances)
        dates = {str(j): d for j, d in enumerate(PASTIS_DATES[patch])}
        features.append(
            {
                "type": "Feature",
                "id": str(patch),
                "properties": {
                    "ID_PATCH": patch,
                    "Fold": fold,
                    "TILE": "T31TFM",
                    "dates-S2": json.dumps(dates),
                },
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[0, 0], [0, 1], [1, 1], [1, 0], [0, 0]]],
                },
            }
        )
    collection = {"type": "FeatureCollection", "features": features}
    (base / "metadata.geojson").write_text(json.dumps(collection))
    return root


# --- OSCD --------------------------------------------------------------------------------

OSCD_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")  # fmt: skip
OSCD_REGIONS = {"train": ("aguasclaras", "bercy", "bordeaux"), "test": ("brasilia", "chongqing")}
OSCD_DATES = ("20161130", "20170829")
"""Dates of every fake city's two images (``dates.txt``)."""


def write_oscd(root: Path) -> Path:
    """The three OSCD folders: per city ``imgs_{1,2}_rect/B*.tif``, ``dates.txt``, ``cm/cm.png``."""
    rng = _rng("oscd")
    images = root / "Onera Satellite Change Detection dataset - Images"
    for split, regions in OSCD_REGIONS.items():
        labels = root / f"Onera Satellite Change Detection dataset - {split.capitalize()} Labels"
        for i, region in enumerate(regions):
            height, width = 40 + 4 * i, 36 + 8 * i  # cities differ in size
            for date in (1, 2):
                for band in OSCD_BANDS:
                    data = rng.integers(0, 4000, (1, height, width)).astype(np.uint16)
                    _geotiff(images / region / f"imgs_{date}_rect" / f"{band}.tif", data)
            (images / region / "dates.txt").write_text(
                f"date_1: {OSCD_DATES[0]}\ndate_2: {OSCD_DATES[1]}\n"
            )
            change = (rng.random((height, width)) < 0.2).astype(np.uint8) * 255
            _png(labels / region / "cm" / "cm.png", change)
    return root


# --- LEVIR-CD ----------------------------------------------------------------------------


def write_levir_cd(root: Path, size: int = 48) -> Path:
    """``A``, ``B`` and ``label`` folders of ``<split>_<n>.png`` (RGB, RGB, 0/255)."""
    rng = _rng("levir")
    for split, count in (("train", 3), ("val", 2), ("test", 2)):
        for n in range(1, count + 1):
            for folder in ("A", "B"):
                rgb = rng.integers(0, 256, (size, size, 3)).astype(np.uint8)
                _png(root / folder / f"{split}_{n}.png", rgb)
            change = (rng.random((size, size)) < 0.2).astype(np.uint8) * 255
            _png(root / "label" / f"{split}_{n}.png", change)
    return root


# --- LoveDA ------------------------------------------------------------------------------


def write_loveda(root: Path, size: int = 48) -> Path:
    """``{Train,Val}/{Urban,Rural}/{images_png,masks_png}/<n>.png`` (RGB; labels 0-7)."""
    rng = _rng("loveda")
    n = 0
    for split, count in (("Train", 2), ("Val", 1)):
        for scene in ("Urban", "Rural"):
            for _ in range(count):
                folder = root / split / scene
                _png(folder / "images_png" / f"{n}.png", rng.integers(0, 256, (size, size, 3)).astype(np.uint8))  # fmt: skip
                _png(folder / "masks_png" / f"{n}.png", rng.integers(0, 8, (size, size)).astype(np.uint8))  # fmt: skip
                n += 1
    return root


# --- ISPRS -------------------------------------------------------------------------------


def _isprs_label(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 label in the ISPRS colours."""
    colours = np.array(Potsdam2D.colormap, dtype=np.uint8)
    return colours[rng.integers(0, len(colours), (height, width))]


def write_potsdam(root: Path, size: int = 48) -> Path:
    """``4_Ortho_RGBIR/<tile>_RGBIR.tif`` (4 bands) and ``<tile>_label.tif`` (RGB colours)."""
    rng = _rng("potsdam")
    for split, count in (("train", 3), ("test", 2)):
        for name in Potsdam2D.splits[split][:count]:
            image = rng.integers(0, 256, (4, size, size + 8)).astype(np.uint8)
            _geotiff(root / "4_Ortho_RGBIR" / f"{name}_RGBIR.tif", image, gsd=0.05)
            label = _isprs_label(rng, size, size + 8).transpose(2, 0, 1)
            _geotiff(
                root / f"{name}_label.tif", np.ascontiguousarray(label), gsd=0.05, photometric="RGB"
            )
    return root


def write_vaihingen(root: Path) -> Path:
    """``top/<tile>.tif`` (IR-R-G) and ``<tile>.tif`` labels (RGB colours), tiles of varied size."""
    rng = _rng("vaihingen")
    for split, count in (("train", 3), ("test", 2)):
        for i, name in enumerate(Vaihingen2D.splits[split][:count]):
            height, width = 40 + 4 * i, 44
            _png(root / "top" / name, rng.integers(0, 256, (height, width, 3)).astype(np.uint8))
            _png(root / name, _isprs_label(rng, height, width))
    return root


# --- SEN12MS -----------------------------------------------------------------------------

SEN12MS_SEASONS = ("ROIs1158_spring", "ROIs1868_summer", "ROIs1970_fall", "ROIs2017_winter")


def write_sen12ms(root: Path, size: int = 32) -> Path:
    """Season folders of ``{lc,s1,s2}_<scene>/<season>_<source>_<scene>_p<n>.tif`` and split lists."""
    rng = _rng("sen12ms")
    names: dict[str, list[str]] = {"train": [], "test": []}
    for s, season in enumerate(SEN12MS_SEASONS):
        for p in range(1, 3):
            lc = rng.integers(0, 18, (4, size, size)).astype(np.uint16)  # IGBP first, 0 = none
            s1 = rng.normal(-12.0, 4.0, (2, size, size)).astype(np.float32)
            s2 = rng.integers(0, 10000, (13, size, size)).astype(np.uint16)
            for source, data in (("lc", lc), ("s1", s1), ("s2", s2)):
                path = root / season / f"{source}_1" / f"{season}_{source}_1_p{p}.tif"
                _geotiff(path, data, crs="EPSG:32737")
            names["test" if s == 3 else "train"].append(f"{season}_s2_1_p{p}.tif")
    for split, listed in names.items():
        (root / f"{split}_list.txt").write_text("".join(f"{n}\n" for n in listed))
    return root


# --- Fields of The World -----------------------------------------------------------------


def write_ftw(root: Path, size: int = 32, country: str = "austria") -> Path:
    """``<country>/s2_images/window_{a,b}``, ``label_masks/semantic_{2,3}class``, chips parquet."""
    import pandas as pd

    rng = _rng("ftw")
    base = root / country
    rows: dict[str, list[str]] = {"aoi_id": [], "split": []}
    for split, count in (("train", 3), ("val", 2), ("test", 2)):
        for _ in range(count):
            aoi = f"g_{len(rows['aoi_id'])}"
            rows["aoi_id"].append(aoi)
            rows["split"].append(split)
            for window in ("window_a", "window_b"):
                image = rng.integers(0, 5000, (4, size, size)).astype(np.uint16)
                _geotiff(base / "s2_images" / window / f"{aoi}.tif", image, crs="EPSG:4326", gsd=1e-4)  # fmt: skip
            for target, top in (("semantic_2class", 2), ("semantic_3class", 4)):  # 3 = unlabeled
                mask = rng.integers(0, top, (1, size, size)).astype(np.uint8)
                _geotiff(base / "label_masks" / target / f"{aoi}.tif", mask, crs="EPSG:4326", gsd=1e-4)  # fmt: skip
    pd.DataFrame(rows).to_parquet(base / f"chips_{country}.parquet")
    return root


# --- Landsat cloud masks -----------------------------------------------------------------

MASK_VALUES = np.array([0, 64, 128, 192, 255], dtype=np.uint8)
"""Fill, cloud shadow, clear, thin cloud, cloud."""


def _landsat_scene(
    image_path: Path,
    mask_path: Path,
    bands: int,
    dtype: str,
    origin: tuple[float, float],
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    size = 64
    top = 255 if dtype == "uint8" else 30000
    image = rng.integers(1, top, (bands, size, size)).astype(dtype)
    image[:, :, :6] = 0  # a strip of fill, as at a scene's edge
    mask = MASK_VALUES[rng.integers(1, 5, (1, size, size))]
    mask[:, :, :6] = 0
    crs = CRS.from_epsg(32633)
    _geotiff(image_path, image, crs=crs, origin=origin, gsd=30.0, nodata=0)
    _geotiff(mask_path, mask, crs=crs, origin=origin, gsd=30.0, nodata=0)


L7_SCENES = (
    ("austral", "p226_r98", "L71226098_09820011112"),
    ("austral", "p227_r98", "L71227098_09820011103"),
    ("boreal", "p2_r27", "L71002027_02720010604"),
    ("boreal", "p143_r21", "L71143021_02120010803"),
)
"""(biome, path_row folder, image name) of the fake L7 Irish scenes."""


def write_l7_irish(root: Path) -> Path:
    """``<biome>/<path_row>/L71*.TIF`` (9 bands, uint8) and ``L7_<path_row>_newmask2015.TIF``."""
    for i, (biome, folder, name) in enumerate(L7_SCENES):
        _landsat_scene(
            root / biome / folder / f"{name}.TIF",
            root / biome / folder / f"L7_{folder}_newmask2015.TIF",
            bands=9,
            dtype="uint8",
            origin=(400_000.0 + 10_000 * i, 5_000_000.0),
            seed=i,
        )
    return root


L8_SCENES = (
    ("barren", "LC80420082013220LGN00"),
    ("barren", "LC80530022014156LGN00"),
    ("forest", "LC80070662014234LGN00"),
    ("forest", "LC80200462014005LGN00"),
)
"""(biome, scene name) of the fake L8 Biome scenes."""


def write_l8_biome(root: Path) -> Path:
    """``<biome>/<scene>/<scene>.TIF`` (11 bands, uint16) and ``<scene>_fixedmask.TIF``."""
    for i, (biome, name) in enumerate(L8_SCENES):
        _landsat_scene(
            root / biome / name / f"{name}.TIF",
            root / biome / name / f"{name}_fixedmask.TIF",
            bands=11,
            dtype="uint16",
            origin=(400_000.0 + 10_000 * i, 5_000_000.0),
            seed=10 + i,
        )
    return root


FAKES: dict[str, Callable[[Path], Path]] = {
    "pastis": write_pastis,
    "oscd": write_oscd,
    "levir_cd": write_levir_cd,
    "loveda": write_loveda,
    "potsdam": write_potsdam,
    "vaihingen": write_vaihingen,
    "sen12ms": write_sen12ms,
    "l7_irish": write_l7_irish,
    "l8_biome": write_l8_biome,
    "ftw": write_ftw,
}
"""Writer of each fake dataset, by the wrapper's source name."""
