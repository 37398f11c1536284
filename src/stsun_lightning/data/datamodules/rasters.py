"""Rasters on disk as whole scenes to predict: files, folders or globs, any sensor.

Each input names a sensor of the registry and where its files are. Files are grouped
into scenes by name: ``tile_A_2021-06-01.tif`` and ``tile_A_2021-07-01.tif`` are two
dates of scene ``tile_A`` (the date is cut out of the file name; ``scene_pattern``
overrides the grouping). Dates come from the file name (``date_pattern``), else from
the file's ``ACQUISITION_DATE``, ``DATE`` or ``TIFFTAG_DATETIME`` tag, else are unknown
(the network has a learned vector for unknown dates).
"""

from __future__ import annotations

import itertools
import math
import re
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import rasterio
import rasterio.errors
from lightning import LightningDataModule

from stsun_lightning.data.datamodules.prediction import ScenePredictionMixin
from stsun_lightning.data.datasets.scenes import Scene, SceneInput, SceneReader
from stsun_lightning.data.datasets.windows import PredictionJob
from stsun_lightning.data.io.files import (
    DEFAULT_DATE_PATTERN,
    file_date,
    find_raster_files,
    gsd_m,
    resolve_sensor,
)
from stsun_lightning.data.io.statistics import BandStatistics, compute_statistics
from stsun_lightning.data.sources import SourceInfo, build_vocabularies
from stsun_lightning.data.spec import OutputKindName
from stsun_lightning.errors import ConfigError, RasterMismatchError, unreadable_file_error

__all__ = ["RasterPredictionDataModule", "group_scenes"]

_STATISTICS_SAMPLES = 1_000_000


def _scene_key(path: Path, scene_pattern: str | None, date_pattern: str) -> str:
    if scene_pattern:
        match = re.search(scene_pattern, path.stem)
        if not match or "scene" not in match.groupdict():
            raise ConfigError(
                f"{path.name}: scene_pattern {scene_pattern!r} does not match it "
                "(it needs a group named 'scene')."
            )
        return match.group("scene")
    key = re.sub(date_pattern, "", path.stem).strip("_-. ")
    return key or path.parent.name


def group_scenes(
    inputs: dict[str, dict[str, Any]],
    date_pattern: str = DEFAULT_DATE_PATTERN,
    scene_pattern: str | None = None,
) -> list[Scene]:
    """Scenes from the files of every input, checked for bands, CRS and a common grid.

    Args:
        inputs: ``{name: {"sensor": ..., "paths": ..., "bands": [...] (optional)}}``; a
            sensor is a registry name, a sensor YAML file or an inline sensor mapping.
        date_pattern: regex with a group ``date`` found in file names.
        scene_pattern: regex with a group ``scene``; default: the name without its date.

    Returns:
        The scenes, in name order; frames in date order.

    Raises:
        ConfigError: an input without ``sensor`` or ``paths``, or with unknown keys.
        UnknownNameError: an unknown sensor or band, with the closest match.
        MissingFileError: a path that matches no raster.
        InputFileError: a file that cannot be opened as a raster.
        RasterMismatchError: a file without CRS, with the wrong number of bands, on
            another grid than its scene, or inputs that cover different scenes or dates.
    """
    files: dict[str, dict[str, list[tuple[date | None, Path]]]] = defaultdict(dict)
    sensors, bands, grids = {}, {}, {}
    for name, spec in inputs.items():
        unknown = set(spec) - {"sensor", "paths", "bands"}
        if "sensor" not in spec or "paths" not in spec or unknown:
            raise ConfigError(
                f"Input {name!r} needs 'sensor' (a registry name) and 'paths' (file, folder or "
                f"glob), optionally 'bands'; got keys {sorted(spec)}."
            )
        sensor = resolve_sensor(spec["sensor"], name)
        band_names = tuple(spec.get("bands") or sensor.band_names)
        sensor.select(band_names, f"input {name!r}")  # an unknown band fails here
        sensors[name], bands[name] = sensor, band_names
        for path in find_raster_files(spec["paths"], name):
            try:
                dataset = rasterio.open(path)
            except rasterio.errors.RasterioIOError as error:
                raise unreadable_file_error(path, error, input_name=name, action="open") from None
            with dataset:
                if dataset.crs is None:
                    raise RasterMismatchError(
                        f"{path} has no CRS: outputs could not be georeferenced."
                    )
                if dataset.count != len(band_names):
                    raise RasterMismatchError(
                        f"{path} has {dataset.count} band(s) but input {name!r} expects "
                        f"{len(band_names)} ({', '.join(band_names)}): list the bands stored in "
                        "the file, in order, under 'bands'."
                    )
                key = _scene_key(path, scene_pattern, date_pattern)
                files[key].setdefault(name, []).append(
                    (file_date(path, dataset, date_pattern), path)
                )
                grids[path] = (
                    dataset.crs,
                    dataset.transform,
                    dataset.height,
                    dataset.width,
                    gsd_m(dataset),
                )
    scenes = []
    for key in sorted(files):
        by_input = files[key]
        missing = [n for n in inputs if n not in by_input]
        if missing:
            first = next(iter(by_input.values()))[0][1]
            raise RasterMismatchError(
                f"Scene {key!r} ({first.name}) has no file for input(s) {missing}."
            )
        frames = {
            n: sorted(v, key=lambda dp: (dp[0] or date.min, dp[1].name))
            for n, v in by_input.items()
        }
        for name, dated in frames.items():
            for (day, first), (other_day, second) in itertools.pairwise(dated):
                if day is not None and day == other_day:
                    raise RasterMismatchError(
                        f"Input {name!r}: {first} and {second} both fall in scene {key!r} on "
                        f"{day}; name files <scene>_<date>.tif or set scene_pattern."
                    )
        counts = {n: len(v) for n, v in frames.items()}
        if len(set(counts.values())) > 1:
            raise RasterMismatchError(
                f"Scene {key!r}: inputs have different numbers of dates {counts}."
            )
        paths = [p for v in frames.values() for _, p in v]
        reference = grids[paths[0]]
        for path in paths[1:]:
            if grids[path][:4] != reference[:4]:
                raise RasterMismatchError(
                    f"Scene {key!r}: {path.name} is not on the grid of {paths[0].name} "
                    f"(CRS, transform or size differ: {grids[path][:4]} vs {reference[:4]}); "
                    "resample the inputs of a scene to one grid first."
                )
        dates = tuple(d for d, _ in next(iter(frames.values())))
        scene_inputs = {
            n: SceneInput(sensors[n], bands[n], tuple(p for _, p in frames[n])) for n in inputs
        }
        _, _, height, width, gsd = reference
        scenes.append(Scene(key, gsd, dates, scene_inputs, None, height, width))
    return scenes


class RasterPredictionDataModule(ScenePredictionMixin, LightningDataModule):
    """Whole rasters to predict with ``stsun predict``, streamed window by window.

    Args:
        inputs: by input name, ``{"sensor": registry name, sensor YAML file or inline
            sensor mapping, "paths": file, folder or glob
            (or a list of them), "bands": band names stored in each file, in order
            (default: all of the sensor's bands)}``.
        task: task to run (a task the model was trained on).
        categories: category names to predict over (any subset of the model's).
        variables: regression variables to predict (instead of categories).
        outputs: "state" (at the last date), "change" (first to last date),
            "aggregate" (over the series) or "per_date" (a map per date).
        date_pattern: regex with a group ``date`` (YYYYMMDD or YYYY-MM-DD) in file names.
        scene_pattern: regex with a group ``scene`` grouping files into scenes.
        statistics: per input ``{"mean": [...], "std": [...]}`` of the stored values
            (default: computed from the rasters themselves, on about a million pixels).
        window: window side in pixels.
        overlap: overlap of neighbouring windows, blended smoothly.
        batch_size: windows per forward pass.
        num_workers: DataLoader workers reading windows.
        gdal_cache_mb: GDAL block cache size, which bounds reading memory at any raster
            size (None: GDAL's default, 5% of RAM).
    """

    def __init__(
        self,
        inputs: dict[str, dict[str, Any]],
        task: str = "semantic_segmentation",
        categories: list[str] | None = None,
        variables: list[str] | None = None,
        outputs: OutputKindName = "state",
        date_pattern: str = DEFAULT_DATE_PATTERN,
        scene_pattern: str | None = None,
        statistics: dict[str, dict[str, list[float]]] | None = None,
        window: int = 256,
        overlap: int = 64,
        batch_size: int = 4,
        num_workers: int = 0,
        gdal_cache_mb: int | None = 256,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if not 0 <= overlap < window:
            raise ConfigError(f"overlap must be in [0, window={window}), got {overlap}.")
        if bool(categories) == bool(variables):
            raise ConfigError("Name either 'categories' or 'variables' to predict (exactly one).")
        if gdal_cache_mb is not None:
            rasterio.env.set_gdal_config("GDAL_CACHEMAX", gdal_cache_mb * 1024 * 1024)
        self.source = SourceInfo(
            "rasters", task, categories=tuple(categories or ()), variables=tuple(variables or ())
        )
        self.vocabularies = build_vocabularies([self.source])
        self.predict_window, self.predict_overlap = window, overlap
        self.predict_batch_size, self.predict_num_workers = batch_size, num_workers
        self.scenes = group_scenes(inputs, date_pattern, scene_pattern)
        self.statistics = self._statistics(statistics)

    @property
    def sources(self) -> dict[str, dict[str, Any]]:
        """The one source predicted, for ``StsunTask(sources=...)`` (linked by the CLI)."""
        return {self.source.name: self.source.to_dict()}

    def _statistics(self, given: dict[str, dict[str, list[float]]] | None) -> BandStatistics:
        names = list(self.hparams.inputs)
        if given is None:
            pixels = max(s.height * s.width * len(s.dates) for s in self.scenes) * len(self.scenes)
            stride = max(1, int(math.sqrt(pixels / _STATISTICS_SAMPLES)))
            return compute_statistics(self.scenes, dict.fromkeys(names, 1.0), stride=stride)
        statistics = BandStatistics(scale=dict.fromkeys(names, 1.0))
        for name in names:
            expected = len(self.scenes[0].inputs[name].bands) if self.scenes else 0
            spec = given.get(name)
            if (
                spec is None
                or len(spec.get("mean", ())) != expected
                or len(spec.get("std", ())) != expected
            ):
                raise ConfigError(
                    f"statistics[{name!r}] needs 'mean' and 'std' with {expected} values (one per band)."
                )
            statistics.mean[name], statistics.std[name] = list(spec["mean"]), list(spec["std"])
        return statistics

    def prediction_jobs(self) -> list[PredictionJob]:
        """Every scene, read with the rasters' statistics, predicted as configured."""
        reader = SceneReader(self.statistics)
        return [
            PredictionJob(scene, reader, self.source, self.hparams.outputs, scene.name)
            for scene in self.scenes
        ]
