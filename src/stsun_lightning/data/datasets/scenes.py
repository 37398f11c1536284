"""Scenes: places whose inputs are read as one series, built the same way in every stage.

A :class:`Scene` is a series of inputs on one grid (:class:`RasterSeries`), the extent it
covers on that grid, and optionally the labels of a source. Training builds one on the
labels' grid; prediction builds one per scene of the first input's files, on that
input's grid (or ``crs``/``res``); SpectralWorld one per scene of the world. All three go
through :func:`build_series`, so the frame rule, the alignment and the nodata rule are
the same code.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import rasterio
import rasterio.errors
from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from stsun_lightning.data.datasets.frames import FrameRule
from stsun_lightning.data.datasets.geotiff import GeoTiffRasterDataset, band_token, input_files
from stsun_lightning.data.datasets.labels import LabelRaster
from stsun_lightning.data.datasets.series import RasterSeries
from stsun_lightning.data.io.files import RasterFile
from stsun_lightning.data.io.grid import Extent, Grid, grid_of
from stsun_lightning.data.io.statistics import Statistics
from stsun_lightning.data.spec import InputSpec
from stsun_lightning.errors import ConfigError, RasterMismatchError, unreadable_file_error

__all__ = ["Scene", "build_series", "prediction_scenes", "scene_key"]

Bounds = tuple[float, float, float, float]


@dataclass(frozen=True)
class Scene:
    """A place, its inputs read as one series, and optionally its labels.

    Attributes:
        name: the scene's name (output file stem at prediction).
        series: its inputs on one grid.
        extent: the raster it covers on the series' grid.
        labels: the labels of one source, or None.
        files: per input, the files it was built from (for statistics cache keys).
    """

    name: str
    series: RasterSeries
    extent: Extent
    labels: LabelRaster | None = None
    files: Mapping[str, tuple[Path | RasterFile, ...]] = field(default_factory=dict)

    @functools.cached_property
    def gsd_m(self) -> float:
        """Metres per pixel of the scene's grid."""
        return self.extent.gsd_m()


def build_series(
    specs: Mapping[str, InputSpec],
    files: Mapping[str, Sequence[Path | RasterFile]],
    grid: Grid,
    rule: FrameRule,
    label_days: Sequence = (),
    per_date: bool = False,
    statistics: Statistics | None = None,
) -> RasterSeries:
    """Every input's files as one series on ``grid``, with the frames of ``rule``.

    Args:
        specs: the inputs, by name, in channel order.
        files: per input, its files.
        grid: the grid to read onto.
        rule: the frame rule.
        label_days: dates of dated label files (training), else empty.
        per_date: labels with one map per date.
        statistics: band statistics (physical units), or None to set later.

    Raises:
        ConfigError: a file that cannot be read, without CRS, with the wrong band
            count, or dated labels that no input meets in time (naming file and input).
    """
    datasets = {
        name: (
            spec,
            GeoTiffRasterDataset(
                files[name],
                spec.bands,
                grid,
                spec.separate_files,
                spec.date_pattern,
                resampling=spec.resampling,
                nodata=spec.nodata,
                name=name,
            ),
        )
        for name, spec in specs.items()
    }
    frames = rule.frames({n: d.days() for n, (_, d) in datasets.items()}, label_days, per_date)
    return RasterSeries(datasets, frames, grid, statistics)


def scene_key(path: Path | RasterFile, spec: InputSpec, scene_pattern: str | None = None) -> str:
    """The scene a file of ``spec`` belongs to: its name without date (and band token).

    A file named by a STAC catalog belongs to its item's scene (``grid:code``, else its
    collection), whatever ``scene_pattern``: its href need not name the scene.

    Args:
        path: the file.
        spec: its input (date pattern; band names for ``separate_files``).
        scene_pattern: a regex with a group ``scene`` that overrides the rule.

    Raises:
        ConfigError: ``scene_pattern`` does not match the file name.
    """
    if isinstance(path, RasterFile):
        return path.scene
    if scene_pattern:
        match = re.search(scene_pattern, path.stem)
        if not match or match.groupdict().get("scene") is None:
            raise ConfigError(
                f"{path.name}: scene_pattern {scene_pattern!r} does not match it "
                "(it needs a group named 'scene')."
            )
        return match.group("scene")
    stem = re.sub(spec.date_pattern, "", path.stem)
    if spec.separate_files and (band := band_token(path, spec.bands)) is not None:
        stem = re.sub(rf"(^|[_.\-\s]){re.escape(band)}(?=$|[_.\-\s])", r"\1", stem)
    key = re.sub(r"[_.\-\s]{2,}", "_", stem).strip("_-. ")
    return key or path.parent.name


def _footprint(path: Path | RasterFile, name: str, crs: CRS) -> Bounds:
    """``(left, bottom, right, top)`` of a raster in ``crs`` (a catalog's, where it states it)."""
    if isinstance(path, RasterFile):
        if path.georef is not None:
            return transform_bounds(path.georef.crs, crs, *path.georef.bounds)
        path = path.path  # type: ignore[assignment]
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise RasterMismatchError(
                    f"Input {name!r}: {path} has no CRS; outputs could not be georeferenced."
                )
            return transform_bounds(src.crs, crs, *src.bounds)
    except rasterio.errors.RasterioIOError as error:
        raise unreadable_file_error(path, error, input_name=name, action="open") from None


def _meets(a: Bounds, b: Bounds) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def prediction_scenes(
    specs: Mapping[str, InputSpec],
    rule: FrameRule,
    crs: str | None = None,
    res: float | None = None,
    scene_pattern: str | None = None,
    region: Sequence[float] | None = None,
    region_crs: str | None = None,
) -> list[Scene]:
    """The scenes to predict: one per scene of the first input's files.

    Files of the first input are grouped into scenes by :func:`scene_key`; each scene is
    read on the grid of its first file (or ``crs``/``res``) over the union of its files'
    footprints, optionally cut to ``region``. The other inputs join with every file that
    meets the scene, in any CRS and resolution.

    Args:
        specs: the inputs, by name; the first one defines the scenes and their grid.
        rule: the frame rule.
        crs: CRS of the output grid (default: the first input's).
        res: pixel size of the output grid in CRS units (default: the first input's).
        scene_pattern: a regex with a group ``scene`` grouping files into scenes.
        region: ``(left, bottom, right, top)``: predict only there.
        region_crs: CRS of ``region`` (default: each scene's grid CRS).

    Returns:
        The scenes in name order, without statistics (set them on each series).

    Raises:
        ConfigError: a file that cannot be read or has no CRS, an input with no file
            meeting a scene, or a region that meets no scene.
    """
    (first, reference), *_ = specs.items()
    footprint = functools.cache(_footprint)  # scenes share the other inputs' files
    files = {name: input_files(spec) for name, spec in specs.items()}
    groups: dict[str, list[Path | RasterFile]] = {}
    for path in files[first]:
        groups.setdefault(scene_key(path, reference, scene_pattern), []).append(path)
    scenes = []
    for key in sorted(groups):
        grid = grid_of(groups[key][0], crs, res, input_name=first)
        footprints = [footprint(p, first, grid.crs) for p in groups[key]]
        bounds = (
            min(f[0] for f in footprints),
            min(f[1] for f in footprints),
            max(f[2] for f in footprints),
            max(f[3] for f in footprints),
        )
        if region is not None:
            wanted = tuple(region)
            if region_crs is not None:
                wanted = transform_bounds(CRS.from_user_input(region_crs), grid.crs, *wanted)
            if not _meets(bounds, wanted):
                continue
            bounds = (
                max(bounds[0], wanted[0]),
                max(bounds[1], wanted[1]),
                min(bounds[2], wanted[2]),
                min(bounds[3], wanted[3]),
            )
        extent = Extent.of_bounds(grid, bounds)
        scene_files = {first: tuple(groups[key])}
        for name in list(specs)[1:]:
            meeting = tuple(
                p for p in files[name] if _meets(footprint(p, name, grid.crs), extent.bounds)
            )
            if not meeting:
                raise RasterMismatchError(
                    f"Scene {key!r}: input {name!r} has no file that meets it (scene bounds "
                    f"{tuple(round(v, 3) for v in extent.bounds)} in {grid.crs}); check its paths."
                )
            scene_files[name] = meeting
        series = build_series(specs, scene_files, grid, rule)
        scenes.append(Scene(key, series, extent, files=scene_files))
    if region is not None and not scenes:
        raise ConfigError(
            f"region {tuple(region)} meets no scene of input {first!r}; check region and region_crs."
        )
    return scenes
