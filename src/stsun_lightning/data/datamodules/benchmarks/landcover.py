"""Wrappers of TorchGeo's land-cover benchmarks: LoveDA, ISPRS Potsdam and Vaihingen, SEN12MS."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import torch
from rasterio.windows import Window as RasterWindow
from torchgeo.datasets import SEN12MS, LoveDA, Potsdam2D, Vaihingen2D
from torchgeo.datasets.utils import rgb_to_mask

from stsun_lightning.data.datamodules.benchmarks.base import TorchGeoDataModule
from stsun_lightning.data.datamodules.benchmarks.readers import (
    GOOGLE_EARTH_RGB,
    Example,
    SampleReader,
    TableReader,
    Window,
    apply_table,
    google_earth_sensor,
    image_shape,
    label_table,
    unknown_dates,
)

__all__ = [
    "IGBP_CATEGORIES",
    "ISPRS_CATEGORIES",
    "LOVEDA_CATEGORIES",
    "SIMPLIFIED_IGBP",
    "LoveDADataModule",
    "PotsdamDataModule",
    "SEN12MSDataModule",
    "VaihingenDataModule",
]

# --- LoveDA ------------------------------------------------------------------------------

LOVEDA_CATEGORIES = (
    "other_land_cover",
    "building",
    "road",
    "water",
    "bare_soil",
    "tree_cover",
    "cropland",
)
"""LoveDA label values 1-7 in order (background, building, road, water, barren, forest,
agriculture); 0 (no data) is ignored."""


class LoveDADataModule(TorchGeoDataModule):
    """LoveDA: 0.3 m Google Earth RGB images of Chinese cities and countryside, land cover.

    Reads TorchGeo's :class:`~torchgeo.datasets.LoveDA` (``root/Train``, ``root/Val``).
    LoveDA's test labels are withheld (an online benchmark), so the test split is
    empty here; evaluate on the validation split.

    Args:
        root: folder holding ``Train`` and ``Val``.
        scenes: ``urban``, ``rural`` or both.
        **kwargs: arguments of :class:`TorchGeoDataModule`.
    """

    source_name = "loveda"
    task = "semantic_segmentation"
    category_names = LOVEDA_CATEGORIES
    output_mode = "state"
    gsd_m = 0.3
    native_splits = ("train", "val")

    def __init__(
        self,
        root: str = "data/loveda",
        scenes: list[Literal["urban", "rural"]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root=root, **kwargs)
        self.save_hyperparameters()
        self.scenes = list(scenes or ["urban", "rural"])
        google_earth_sensor()

    def band_inputs(self) -> list[tuple[str, tuple[str, ...]]]:
        """Google Earth RGB."""
        return [(GOOGLE_EARTH_RGB, ("R", "G", "B"))]

    def torchgeo_dataset(self, split: str) -> LoveDA:
        """LoveDA's split of the chosen scenes."""
        return LoveDA(
            str(self.root), split=split, scene=self.scenes, download=False, checksum=False
        )

    def reader(self, dataset: LoveDA) -> SampleReader:
        """One frame; no data (0) ignored, 1-7 the classes."""
        return TableReader(dataset, label_table({v: v - 1 for v in range(1, 8)}), "image")


# --- ISPRS Potsdam and Vaihingen --------------------------------------------------------

ISPRS_CATEGORIES = (
    "clutter",
    "impervious_surface",
    "building",
    "low_vegetation",
    "tree_cover",
    "car",
)
"""TorchGeo's ISPRS class indices 0-5 in order (clutter/background, impervious
surfaces, building, low vegetation, tree, car)."""


class _PotsdamReader(TableReader):
    """Potsdam tiles are 6000 × 6000 px: windows are read from disk, not whole tiles."""

    def read_window(self, index: int, window: Window) -> Example:
        row, col, height, width = window
        files = self.dataset.files[index]
        with rasterio.open(files["image"]) as src:
            h, w = src.height, src.width
            r0, c0 = min(max(row, 0), h), min(max(col, 0), w)
            r1, c1 = max(min(row + height, h), r0), max(min(col + width, w), c0)
            inside = RasterWindow(c0, r0, c1 - c0, r1 - r0)
            image = torch.from_numpy(src.read(window=inside).astype(np.float32))
        with rasterio.open(files["mask"]) as src:
            rgb = src.read(window=inside)[:3].transpose(1, 2, 0)
        classes = torch.from_numpy(rgb_to_mask(np.ascontiguousarray(rgb), Potsdam2D.colormap))
        part = Example(image[None], apply_table(self.table, classes), unknown_dates(1))
        return part.crop((row - r0, col - c0, height, width))

    def preview(self, index: int, stride: int) -> torch.Tensor:
        with rasterio.open(self.dataset.files[index]["image"]) as src:
            shape = (src.count, max(src.height // stride, 1), max(src.width // stride, 1))
            return torch.from_numpy(src.read(out_shape=shape).astype(np.float32))[None]


class PotsdamDataModule(TorchGeoDataModule):
    """ISPRS Potsdam: 5 cm RGB + near-infrared true orthophotos, urban land cover.

    Reads TorchGeo's :class:`~torchgeo.datasets.Potsdam2D` (``root/4_Ortho_RGBIR`` and
    the ``*_label.tif`` files in ``root``) with its train and test tiles;
    ``val_fraction`` of the training tiles form the validation split. The 6000 px tiles
    are read window by window. Dates are unknown (NaN).

    Args:
        root: folder holding ``4_Ortho_RGBIR`` and the label tiles.
        **kwargs: arguments of :class:`TorchGeoDataModule`.
    """

    source_name = "potsdam"
    task = "semantic_segmentation"
    category_names = ISPRS_CATEGORIES
    output_mode = "state"
    gsd_m = 0.05
    native_splits = ("train", "test")

    def __init__(self, root: str = "data/potsdam", **kwargs: Any) -> None:
        super().__init__(root=root, **kwargs)
        self.save_hyperparameters()

    def band_inputs(self) -> list[tuple[str, tuple[str, ...]]]:
        """ISPRS Potsdam R, G, B, IR."""
        return [("isprs_rgbir", ("R", "G", "B", "IR"))]

    def torchgeo_dataset(self, split: str) -> Potsdam2D:
        """Potsdam's train or test tiles."""
        return Potsdam2D(str(self.root), split=split, checksum=False)

    def reader(self, dataset: Potsdam2D) -> SampleReader:
        """Windows of one frame; the six ISPRS classes."""
        return _PotsdamReader(dataset, label_table({i: i for i in range(6)}), "image")


class VaihingenDataModule(TorchGeoDataModule):
    """ISPRS Vaihingen: 9 cm IR-R-G true orthophotos, urban land cover.

    Reads TorchGeo's :class:`~torchgeo.datasets.Vaihingen2D` (``root/top`` and the
    label tiles in ``root``) with its train and test tiles; ``val_fraction`` of the
    training tiles form the validation split. Dates are unknown (NaN).

    Args:
        root: folder holding ``top`` and the label tiles.
        **kwargs: arguments of :class:`TorchGeoDataModule`.
    """

    source_name = "vaihingen"
    task = "semantic_segmentation"
    category_names = ISPRS_CATEGORIES
    output_mode = "state"
    gsd_m = 0.09
    native_splits = ("train", "test")

    def __init__(self, root: str = "data/vaihingen", **kwargs: Any) -> None:
        super().__init__(root=root, **kwargs)
        self.save_hyperparameters()

    def band_inputs(self) -> list[tuple[str, tuple[str, ...]]]:
        """ISPRS Vaihingen IR, R, G."""
        return [("isprs_irrg", ("IR", "R", "G"))]

    def torchgeo_dataset(self, split: str) -> Vaihingen2D:
        """Vaihingen's train or test tiles."""
        return Vaihingen2D(str(self.root), split=split, checksum=False)

    def reader(self, dataset: Vaihingen2D) -> SampleReader:
        """One frame; the six ISPRS classes."""
        return TableReader(dataset, label_table({i: i for i in range(6)}), "image")


# --- SEN12MS -----------------------------------------------------------------------------

IGBP_CATEGORIES = (
    "evergreen_needleleaf_forest",
    "evergreen_broadleaf_forest",
    "deciduous_needleleaf_forest",
    "deciduous_broadleaf_forest",
    "mixed_forest",
    "closed_shrubland",
    "open_shrubland",
    "woody_savanna",
    "savanna",
    "grassland",
    "wetland",
    "cropland",
    "built_up",
    "cropland_natural_vegetation_mosaic",
    "snow_and_ice",
    "bare_soil",
    "water",
)
"""The 17 IGBP classes of MODIS land cover (SEN12MS label values 1-17)."""
SIMPLIFIED_IGBP = {
    "tree_cover": (1, 2, 3, 4, 5),
    "shrubland": (6, 7),
    "savanna": (8, 9),
    "grassland": (10,),
    "wetland": (11,),
    "cropland": (12, 14),
    "built_up": (13,),
    "snow_and_ice": (15,),
    "bare_soil": (16,),
    "water": (17,),
}
"""The simplified IGBP scheme of the SEN12MS / DFC2020 baselines: category -> values."""


class _SEN12MSReader(TableReader):
    def shape(self, index: int) -> tuple[int, int]:
        # ROIs1158_spring_s2_1_p30.tif -> ROIs1158_spring/lc_1/ROIs1158_spring_lc_1_p30.tif
        roi, season, _, scene, patch = self.dataset.ids[index].split("_", 4)
        path = Path(self.dataset.root) / f"{roi}_{season}" / f"lc_{scene}"
        return image_shape(path / f"{roi}_{season}_lc_{scene}_{patch}")


class SEN12MSDataModule(TorchGeoDataModule):
    """SEN12MS: co-registered Sentinel-1 and Sentinel-2 patches, MODIS IGBP land cover.

    Reads TorchGeo's :class:`~torchgeo.datasets.SEN12MS` (the ``ROIs*`` season folders
    and ``train_list.txt`` / ``test_list.txt``); ``val_fraction`` of the training
    patches form the validation split. Each patch is one frame of Sentinel-1 (VV, VH,
    dB) then Sentinel-2 L1C bands, on a 10 m grid. The label is the IGBP layer, in the
    simplified 10-class scheme (default) or all 17 classes; 0 is ignored. Patch dates
    are not recorded (only the season): NaN.

    Args:
        root: folder holding the season folders and split lists.
        bands: bands to read, of ``VV, VH, B01 ... B12`` (default: all 15).
        label_scheme: ``"simplified"`` (10 classes) or ``"igbp"`` (17 classes).
        **kwargs: arguments of :class:`TorchGeoDataModule`.
    """

    source_name = "sen12ms"
    task = "semantic_segmentation"
    category_names = tuple(SIMPLIFIED_IGBP)
    output_mode = "state"
    gsd_m = 10.0
    native_splits = ("train", "test")

    def __init__(
        self,
        root: str = "data/sen12ms",
        bands: list[str] | None = None,
        label_scheme: Literal["simplified", "igbp"] = "simplified",
        **kwargs: Any,
    ) -> None:
        super().__init__(root=root, **kwargs)
        self.save_hyperparameters()
        chosen = set(bands or SEN12MS.band_names)
        unknown = sorted(chosen - set(SEN12MS.band_names))
        if unknown:
            raise ValueError(f"Unknown SEN12MS bands {unknown}; known: {list(SEN12MS.band_names)}.")
        self.bands = tuple(b for b in SEN12MS.band_names if b in chosen)  # S1 first, then S2
        if label_scheme == "simplified":
            self.category_names = tuple(SIMPLIFIED_IGBP)
            self.values = {
                v: i for i, values in enumerate(SIMPLIFIED_IGBP.values()) for v in values
            }
        elif label_scheme == "igbp":
            self.category_names = IGBP_CATEGORIES
            self.values = {v: v - 1 for v in range(1, 18)}
        else:
            raise ValueError(f"label_scheme must be 'simplified' or 'igbp', got {label_scheme!r}.")
        self.source_infos = [self.source_info()]

    def band_inputs(self) -> list[tuple[str, tuple[str, ...]]]:
        """Sentinel-1 (VV, VH) then Sentinel-2 L1C bands, as chosen."""
        s1 = tuple(b for b in self.bands if b in ("VV", "VH"))
        s2 = tuple(b for b in self.bands if b not in ("VV", "VH"))
        return [
            (sensor, bands) for sensor, bands in (("sentinel1", s1), ("sentinel2_l1c", s2)) if bands
        ]

    def torchgeo_dataset(self, split: str) -> SEN12MS:
        """SEN12MS's train or test patches."""
        return SEN12MS(str(self.root), split=split, bands=self.bands, checksum=False)

    def reader(self, dataset: SEN12MS) -> SampleReader:
        """One frame; IGBP values through the chosen scheme."""
        return _SEN12MSReader(dataset, label_table(self.values, size=256))
