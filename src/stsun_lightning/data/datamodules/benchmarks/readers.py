"""Reading TorchGeo samples as examples: raw bands, category indices and dates.

A :class:`SampleReader` turns each sample of one TorchGeo dataset into an
:class:`Example`; :class:`TableReader` covers the common case of labels mapped through
a lookup table. Also here: the Google Earth RGB sensor (LEVIR-CD, LoveDA) and date
helpers.
"""

from __future__ import annotations

import datetime as dt
import warnings
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import rasterio
import torch
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning
from torch import Tensor

from stsun_lightning.batch import Modality
from stsun_lightning.data.io.files import days_since_epoch
from stsun_lightning.data.sensors import Band, Sensor, get_sensor, register_sensor

__all__ = [
    "GOOGLE_EARTH_RGB",
    "Example",
    "OutputMode",
    "SampleReader",
    "TableReader",
    "Window",
    "apply_table",
    "google_earth_sensor",
    "image_shape",
    "label_table",
    "unknown_dates",
    "yyyymmdd_days",
]

OutputMode = Literal["state", "change", "aggregate"]
Window = tuple[int, int, int, int]
"""(row, col, height, width) of a window; it may reach past the sample's edges."""

GOOGLE_EARTH_RGB = "google_earth_rgb"
"""Registry name of the RGB imagery of Google Earth (LEVIR-CD, LoveDA)."""


def google_earth_sensor() -> Sensor:
    """The sensor of Google Earth RGB imagery, registered on first use.

    Google Earth mosaics several providers' cameras and publishes no spectral response:
    the bands carry nominal centres (as the aerial sensors of the registry do) and an
    unknown bandwidth (0).
    """
    try:
        return get_sensor(GOOGLE_EARTH_RGB)
    except ValueError:
        bands = tuple(
            Band(name, wavelength, 0.0, 0.3, Modality.OPTICAL, description)
            for name, wavelength, description in (
                ("R", 640.0, "red"),
                ("G", 550.0, "green"),
                ("B", 470.0, "blue"),
            )
        )
        sensor = Sensor(GOOGLE_EARTH_RGB, bands, "Google Earth RGB imagery (nominal band centres)")
        return register_sensor(sensor)


def label_table(mapping: dict[int, int], size: int = 256) -> Tensor:
    """A lookup table from raw label values to category indices.

    Args:
        mapping: raw value -> category index (-1 = ignore).
        size: number of raw values covered; values not in ``mapping`` map to -1.

    Returns:
        (size,) long.
    """
    table = torch.full((size,), -1, dtype=torch.long)
    for raw, index in mapping.items():
        table[raw] = index
    return table


def apply_table(table: Tensor, raw: Tensor) -> Tensor:
    """Map raw labels through ``table``; values outside it become -1 (ignore).

    Args:
        table: (N,) long lookup table.
        raw: (H, W) integer labels.

    Returns:
        (H, W) long category indices.
    """
    raw = raw.long()
    inside = (raw >= 0) & (raw < table.numel())
    return torch.where(inside, table[raw.clamp(0, table.numel() - 1)], -1)


def image_shape(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image file, read from its header only."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        with warnings.catch_warnings():  # plain TIFFs (Vaihingen) have no georeference
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                return int(src.height), int(src.width)
    with Image.open(path) as img:
        width, height = img.size
        return int(height), int(width)


@dataclass
class Example:
    """One TorchGeo sample in the project's terms, before cropping and normalisation.

    Attributes:
        image: (T, C, H, W) float32 raw band values, NaN where there is no data.
        target: (H, W) long category indices (target order of the source), -1 = ignore.
        dates: (T,) float64 days since 1970-01-01, NaN where unknown.
    """

    image: Tensor
    target: Tensor
    dates: Tensor

    def crop(self, window: Window) -> Example:
        """The window of this example, padded with NaN (image) and -1 (target) outside.

        Args:
            window: (row, col, height, width); it may reach past the edges.

        Returns:
            An example of (T, C, height, width).
        """
        row, col, height, width = window
        t, c, h, w = self.image.shape
        if (row, col, height, width) == (0, 0, h, w):
            return self
        image = torch.full((t, c, height, width), float("nan"), dtype=self.image.dtype)
        target = torch.full((height, width), -1, dtype=torch.long)
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + height, h), min(col + width, w)
        if r1 > r0 and c1 > c0:
            image[:, :, r0 - row : r1 - row, c0 - col : c1 - col] = self.image[:, :, r0:r1, c0:c1]
            target[r0 - row : r1 - row, c0 - col : c1 - col] = self.target[r0:r1, c0:c1]
        return Example(image, target, self.dates)


class SampleReader:
    """Reads the samples of one TorchGeo dataset as :class:`Example`.

    Subclasses implement :meth:`convert` (and, where a header tells the size cheaply,
    :meth:`shape`). The last sample read is kept, so the grid windows of one sample are
    read from disk once. Each DataLoader worker holds its own copy.

    Args:
        dataset: the TorchGeo dataset (indexable by int).
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self._last: tuple[int, Example] | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    @abstractmethod
    def convert(self, sample: dict[str, Any], index: int) -> Example:
        """Turn TorchGeo's sample ``index`` into an :class:`Example`."""

    def load(self, index: int) -> dict[str, Any]:
        """TorchGeo's sample ``index``."""
        return self.dataset[index]

    def read(self, index: int) -> Example:
        """The whole sample ``index``."""
        if self._last is None or self._last[0] != index:
            self._last = (index, self.convert(self.load(index), index))
        return self._last[1]

    def shape(self, index: int) -> tuple[int, int]:
        """(height, width) of sample ``index`` (by default read whole)."""
        h, w = self.read(index).target.shape
        return int(h), int(w)

    def read_window(self, index: int, window: Window) -> Example:
        """A window of sample ``index``, padded outside the sample."""
        return self.read(index).crop(window)

    def preview(self, index: int, stride: int) -> Tensor:
        """(T, C, h, w) raw values at every ``stride``-th pixel of sample ``index``."""
        return self.read(index).image[..., ::stride, ::stride]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_last"] = None  # never ship a cached sample to a worker
        return state


NAN = float("nan")


def yyyymmdd_days(value: str | int) -> float:
    """Days since 1970-01-01 of a ``YYYYMMDD`` date; NaN if it does not parse."""
    text = str(value).strip()
    try:
        return days_since_epoch(dt.date(int(text[:4]), int(text[4:6]), int(text[6:8])))
    except ValueError:
        return NAN


def unknown_dates(t: int) -> torch.Tensor:
    """(T,) NaN dates: unknown."""
    return torch.full((t,), NAN, dtype=torch.float64)


class TableReader(SampleReader):
    """A reader whose labels go through a lookup table and whose dates are unknown.

    Args:
        dataset: the TorchGeo dataset.
        table: raw label value -> category index (-1 = ignore).
        shape_file: key of ``dataset.files[i]`` whose header gives the sample's size
            (None: the size is read from the whole sample).
    """

    def __init__(self, dataset: Any, table: torch.Tensor, shape_file: str | None = None) -> None:
        super().__init__(dataset)
        self.table = table
        self.shape_file = shape_file

    def frames(self, image: torch.Tensor) -> torch.Tensor:
        """TorchGeo's image as (T, C, H, W); single images get T = 1."""
        return image[None] if image.dim() == 3 else image

    def dates(self, index: int, t: int) -> torch.Tensor:
        """(T,) days since 1970-01-01 of sample ``index`` (NaN: unknown)."""
        return unknown_dates(t)

    def convert(self, sample: dict[str, Any], index: int) -> Example:
        """Image (T, C, H, W), labels through the table, dates."""
        image = self.frames(sample["image"].float())
        mask = sample["mask"]
        mask = mask[0] if mask.dim() == 3 else mask
        return Example(image, apply_table(self.table, mask), self.dates(index, image.shape[0]))

    def shape(self, index: int) -> tuple[int, int]:
        """(height, width) from the header of one of the sample's files."""
        if self.shape_file is None:
            return super().shape(index)
        path = self.dataset.files[index][self.shape_file]
        return image_shape(path[0] if isinstance(path, list | tuple) else path)
