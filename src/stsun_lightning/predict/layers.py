"""The files written for one prediction job: names, types, bands, colours and tags.

Every file records, as GeoTIFF tags, what made it: the task, the categories (or
variables), the outputs, the weights (:func:`~stsun_lightning.predict.fingerprint.
model_fingerprint`) and, for the probabilities and uncertainty files, their format and
kind. A rerun reads them back (:meth:`Layer.difference`) and redoes a job when any of its
files is missing or differs, so a file is never left over from other settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import rasterio
import rasterio.errors

from stsun_lightning.data.datasets.windows import PredictionJob
from stsun_lightning.palette import colour_table
from stsun_lightning.predict.uncertainty import UNCERTAINTY_MEANING, UncertaintyKind

__all__ = [
    "CLASS_NODATA",
    "UNIT_NODATA",
    "UNIT_SCALE",
    "Layer",
    "LayerFormat",
    "OutputSettings",
    "ProbabilityFormat",
    "class_dtype",
    "output_layers",
]

ProbabilityFormat = Literal["none", "uint8", "float16"]
LayerFormat = Literal["uint8", "float16"]
UNIT_SCALE = 254
"""uint8 layers of values in [0, 1] (probabilities, uncertainty) store ``round(v * 254)``."""
UNIT_NODATA = 255
CLASS_NODATA = {"uint8": 255, "uint16": 65535}


def class_dtype(num_classes: int) -> str:
    """The smallest integer type holding ``num_classes`` classes and a nodata value."""
    if num_classes < CLASS_NODATA["uint8"]:
        return "uint8"
    if num_classes < CLASS_NODATA["uint16"]:
        return "uint16"
    raise ValueError(
        f"A class map holds at most {CLASS_NODATA['uint16'] - 1} categories (uint16 with a "
        f"nodata value); {num_classes} were requested."
    )


@dataclass(frozen=True)
class OutputSettings:
    """What the writer is asked to write, and by which weights.

    Attributes:
        probabilities: "none", "uint8" or "float16" per-class probabilities.
        uncertainty: "none", "entropy" or "margin" (see :mod:`~stsun_lightning.predict.uncertainty`).
        uncertainty_format: "uint8" (scaled like uint8 probabilities) or "float16".
        model: fingerprint of the weights.
        checkpoint: the checkpoint's path, if any (recorded for people, not compared:
            the same weights moved elsewhere make the same maps).
    """

    probabilities: ProbabilityFormat = "none"
    uncertainty: UncertaintyKind = "none"
    uncertainty_format: LayerFormat = "uint8"
    model: str = ""
    checkpoint: str = ""


@dataclass(frozen=True)
class Layer:
    """One output file of a job, as :class:`~stsun_lightning.predict.writer.OutputRaster` writes it.

    Attributes:
        path: final path.
        dtype: numpy dtype name of the stored values.
        nodata: nodata value.
        band_names: description of each band.
        provenance: tags that say what made the file; a rerun compares them.
        notes: tags for people (meaning, scale, checkpoint path), not compared.
        colormap: class value -> RGBA, for class maps.
        resampling: overview resampling.
        scale: physical value per stored unit, if not 1.
    """

    path: Path
    dtype: str
    nodata: float
    band_names: tuple[str, ...]
    provenance: dict[str, str]
    notes: dict[str, str] = field(default_factory=dict)
    colormap: dict[int, tuple[int, ...]] | None = None
    resampling: str = "nearest"
    scale: float | None = None

    @property
    def count(self) -> int:
        """Bands of the file."""
        return len(self.band_names)

    @property
    def tags(self) -> dict[str, str]:
        """Every tag written into the file."""
        return {**self.notes, **self.provenance}

    def difference(self) -> str | None:
        """Why the file at :attr:`path` is not this layer (``None`` when it is).

        Files only appear once complete, so an existing file with the same provenance tags
        and bands is this layer's output.
        """
        if not self.path.exists():
            return "it does not exist"
        try:
            with rasterio.open(self.path) as dataset:
                recorded, bands = dataset.tags(), tuple(d or "" for d in dataset.descriptions)
        except rasterio.errors.RasterioIOError as error:
            return f"it cannot be read ({error})"
        for key, value in self.provenance.items():
            if recorded.get(key) != value:
                return f"its {key} is {recorded.get(key)!r}, not {value!r}"
        if bands != self.band_names:
            return f"its bands are {list(bands)}, not {list(self.band_names)}"
        return None


def output_layers(folder: Path, job: PredictionJob, settings: OutputSettings) -> dict[str, Layer]:
    """The files of ``job``.

    Returns:
        ``"map"`` (class map or values) and, for class maps if asked,
        ``"probabilities"`` and ``"uncertainty"``.
    """
    common = {"TASK": job.source.task, "OUTPUTS": job.outputs, "MODEL": settings.model}
    notes = {"CHECKPOINT": settings.checkpoint} if settings.checkpoint else {}
    names, maps = job.channel_names, job.map_names
    # One band per map and channel, named "<map>:<channel>" when there are several maps.
    per_channel = tuple(f"{m}:{c}" if len(maps) > 1 else c for m in maps for c in names)

    def path(suffix: str) -> Path:
        return folder / f"{job.stem}{suffix}.tif"

    if not job.source.is_classification:
        values = Layer(
            path(""), "float32", float("nan"), per_channel,
            provenance={**common, "VARIABLES": ",".join(names)}, notes=notes, resampling="average",
        )  # fmt: skip
        return {"map": values}
    dtype = class_dtype(len(names))
    classes = Layer(
        path(""), dtype, CLASS_NODATA[dtype], tuple(maps),
        provenance={**common, "CATEGORIES": ",".join(f"{i}:{n}" for i, n in enumerate(names))},
        notes=notes, colormap=colour_table(names, CLASS_NODATA[dtype]),
    )  # fmt: skip
    layers = {"map": classes}
    categories = {**common, "CATEGORIES": ",".join(names)}
    if settings.probabilities != "none":
        layers["probabilities"] = _unit_layer(
            path("_probabilities"), settings.probabilities, per_channel,
            {**categories, "PROBABILITIES": settings.probabilities}, notes,
        )  # fmt: skip
    if settings.uncertainty != "none":
        kind, stored = settings.uncertainty, settings.uncertainty_format
        layers["uncertainty"] = _unit_layer(
            path("_uncertainty"), stored, tuple(maps),
            {**categories, "UNCERTAINTY": kind, "UNCERTAINTY_FORMAT": stored},
            {**notes, "UNCERTAINTY_MEANING": UNCERTAINTY_MEANING[kind]},
        )  # fmt: skip
    return layers


def _unit_layer(
    path: Path,
    kind: LayerFormat,
    band_names: tuple[str, ...],
    provenance: dict[str, str],
    notes: dict[str, str],
) -> Layer:
    """A layer of values in [0, 1]: uint8 ``round(v × 254)`` (255 nodata) or float16 (NaN)."""
    if kind == "uint8":
        return Layer(
            path, "uint8", UNIT_NODATA, band_names, provenance,
            {**notes, "SCALE": f"1/{UNIT_SCALE}"}, resampling="average", scale=1.0 / UNIT_SCALE,
        )  # fmt: skip
    if kind == "float16":
        return Layer(
            path, "float16", float("nan"), band_names, provenance, notes, resampling="average"
        )
    raise ValueError(f"Layer format must be 'uint8' or 'float16', got {kind!r}.")
