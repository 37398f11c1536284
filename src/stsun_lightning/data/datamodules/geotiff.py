"""A datamodule for a user's own GeoTIFFs, configured only in YAML.

Inputs from several sensors (any CRS and resolution, one file per date or per band and
date, dates from file names or tags) are aligned on the fly onto the labels' grid; train,
validation and test patches come from disjoint spatial blocks, so nothing leaks.
"""

from __future__ import annotations

import datetime as dt
from functools import reduce
from pathlib import Path
from typing import Any

import shapely
from torch.utils.data import Dataset
from torchgeo.datasets import IntersectionDataset

from stsun_lightning.batch import Batch
from stsun_lightning.data.datamodules.base import BatchFormat, Split, StsunDataModule
from stsun_lightning.data.datasets.geotiff import GeoTiffRasterDataset, files_of
from stsun_lightning.data.datasets.patches import GeoTiffPatchDataset
from stsun_lightning.data.datasets.series import GeoTiffSeries
from stsun_lightning.data.io.grid import grid_of
from stsun_lightning.data.io.statistics import (
    BandStatistics,
    FileBands,
    cached_statistics,
    compute_band_statistics,
    files_key,
)
from stsun_lightning.data.samplers.split import SPLITS, block_patches, spatial_blocks
from stsun_lightning.data.sources import SourceInfo
from stsun_lightning.data.spec import InputSpec, LabelSpec
from stsun_lightning.errors import ConfigError, RasterMismatchError

__all__ = ["GeoTiffDataModule"]

_DEFAULT_CACHE = Path.home() / ".cache" / "stsun_lightning" / "statistics"


class GeoTiffDataModule(StsunDataModule):
    """Train STSUN on your own GeoTIFFs from several sensors, configured in YAML.

    Args:
        inputs: ``{name: {sensor, paths, bands, separate_files, date_pattern, scale,
            nodata, resampling}}``; ``sensor`` is a registry name, a sensor YAML file or
            an inline mapping (see :class:`~stsun_lightning.data.datasets.geotiff.InputSpec`).
        labels: ``{paths, task, classes: {value: name} | variables: [names],
            ignore_values, outputs, date_pattern}`` (see
            :class:`~stsun_lightning.data.datasets.geotiff.LabelSpec`).
        name: the source's name (in logs: ``val/<name>/miou``).
        patch_size: side of a patch in pixels.
        batch_size: patches per batch.
        split: ``{by: spatial_blocks, val: 0.2, test: 0.1, block_size: 8 × patch_size}``
            (block side in pixels).
        train_samples: random training patches (default: 4 × the patches that tile the
            training blocks).
        statistics: per input ``{mean: [...], std: [...]}`` (physical units, after
            ``scale``); default: computed once from the files and cached.
        statistics_cache: folder of the statistics cache.
        crs: CRS of the grid (default: the labels').
        res: pixel size of the grid in CRS units (default: the labels').
        date_tolerance_days: with dated labels, input frames within this many days of
            the labels' dates are used.
        augment: random flips and 90° rotations of training patches.
        num_workers: DataLoader worker processes.
        train_batches_per_epoch: batches per training epoch (default: every sample once).
        temperature: source-mixing temperature (one source here; used when mixed).
        seed: seed of the split, the training patches and the sampling order.
        batch_format: ``"stsun"`` or ``"torchgeo"``.
    """

    def __init__(
        self,
        inputs: dict[str, dict[str, Any]],
        labels: dict[str, Any],
        name: str = "geotiff",
        patch_size: int = 64,
        batch_size: int = 8,
        split: dict[str, Any] | None = None,
        train_samples: int | None = None,
        statistics: dict[str, dict[str, list[float]]] | None = None,
        statistics_cache: str | None = None,
        crs: str | None = None,
        res: float | None = None,
        date_tolerance_days: int = 0,
        augment: bool = True,
        num_workers: int = 0,
        train_batches_per_epoch: int | None = None,
        temperature: float = 2.0,
        seed: int = 0,
        batch_format: BatchFormat = "stsun",
    ) -> None:
        super().__init__(
            batch_size, num_workers, train_batches_per_epoch, temperature, seed, batch_format
        )
        self.save_hyperparameters()
        if not inputs:
            raise ConfigError("GeoTiffDataModule needs at least one input under 'inputs'.")
        self.input_specs = {n: InputSpec.parse(n, s) for n, s in inputs.items()}
        self.label_spec = LabelSpec.parse(labels)
        self.split_spec = _parse_split(split or {}, patch_size)
        if self.label_spec.classes:
            categories = tuple(dict.fromkeys(self.label_spec.classes.values()))
            self.source_infos = [SourceInfo(name, self.label_spec.task, categories=categories)]
        else:
            self.source_infos = [
                SourceInfo(name, self.label_spec.task, variables=self.label_spec.variables)
            ]
        self.series: GeoTiffSeries | None = None
        self._datasets: dict[str, GeoTiffPatchDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        """Index the files, check that they meet in space and time, split, and normalise.

        Raises:
            MissingFileError: a path without rasters, naming the input.
            InputFileError: a corrupt or truncated file, naming it.
            RasterMismatchError: a file without CRS or with the wrong band count; inputs
                and labels that do not intersect in space or time.
            ConfigError: a split that cannot be made.
        """
        if self.series is not None:
            return
        label_files = files_of(self.label_spec.paths, "labels")
        grid = grid_of(label_files[0], self.hparams.crs, self.hparams.res)
        labels = GeoTiffRasterDataset(
            label_files,
            self.label_spec.variables or ("label",),
            grid,
            date_pattern=self.label_spec.date_pattern,
            is_image=False,
            name="labels",
        )
        inputs = {
            n: (
                spec,
                GeoTiffRasterDataset(
                    files_of(spec.paths, n),
                    spec.bands,
                    grid,
                    spec.separate_files,
                    spec.date_pattern,
                    resampling=spec.resampling,
                    nodata=spec.nodata,
                    name=n,
                ),
            )
            for n, spec in self.input_specs.items()
        }
        region = _intersection([d for _, d in inputs.values()] + [labels])
        days = _frames(inputs, labels, self.label_spec, self.hparams.date_tolerance_days)
        statistics = self._statistics(inputs)
        self.series = GeoTiffSeries(inputs, labels, days, grid, statistics)
        blocks = spatial_blocks(
            region, grid, self.split_spec["block_size"], self.split_spec, self.hparams.seed
        )
        patch = self.hparams.patch_size
        train_grid = block_patches(blocks["train"], region, grid, patch)
        count = self.hparams.train_samples or 4 * len(train_grid)
        corners = {
            "train": block_patches(
                blocks["train"], region, grid, patch, random=count, seed=self.hparams.seed
            ),
            "val": block_patches(blocks["val"], region, grid, patch),
            "test": block_patches(blocks["test"], region, grid, patch),
        }
        self.blocks = blocks
        self._datasets = {
            split: GeoTiffPatchDataset(
                self.series,
                self.label_spec,
                self.source_infos[0],
                self.vocabularies,
                corners[split],
                patch,
                augment=self.hparams.augment and split == "train",
                seed=self.hparams.seed,
            )
            for split in SPLITS
        }

    def datasets(self, split: Split) -> list[Dataset[Batch]]:
        """The one source's patches of ``split``."""
        if not self._datasets:
            raise RuntimeError("GeoTiffDataModule.datasets() called before setup().")
        return [self._datasets[split]]

    def _statistics(
        self, inputs: dict[str, tuple[InputSpec, GeoTiffRasterDataset]]
    ) -> BandStatistics:
        given = self.hparams.statistics
        scales = {n: spec.scale for n, (spec, _) in inputs.items()}
        if given is not None:
            return _given_statistics(given, {n: s.bands for n, (s, _) in inputs.items()}, scales)
        files: dict[str, list[FileBands]] = {}
        for name, (spec, dataset) in inputs.items():
            files[name] = [
                (
                    Path(path),
                    (spec.bands.index(band),)
                    if band is not None
                    else tuple(range(len(spec.bands))),
                )
                for path, band in dataset.band_of.items()
            ]
        counts = {n: len(spec.bands) for n, (spec, _) in inputs.items()}
        paths = [p for entries in files.values() for p, _ in entries]
        key = files_key(paths, [scales, {n: list(s.bands) for n, (s, _) in inputs.items()}])
        folder = Path(self.hparams.statistics_cache or _DEFAULT_CACHE)
        return cached_statistics(
            folder / f"{key[:32]}.json",
            key,
            lambda: compute_band_statistics(files, counts, scales),
        )


def _parse_split(split: dict[str, Any], patch_size: int) -> dict[str, Any]:
    allowed = {"by", "val", "test", "block_size"}
    if set(split) - allowed:
        raise ConfigError(
            f"split has unknown keys {sorted(set(split) - allowed)}; expected {sorted(allowed)}."
        )
    if split.get("by", "spatial_blocks") != "spatial_blocks":
        raise ConfigError(f"split.by must be 'spatial_blocks', got {split['by']!r}.")
    parsed = {
        "val": float(split.get("val", 0.2)),
        "test": float(split.get("test", 0.1)),
        "block_size": int(split.get("block_size", 8 * patch_size)),
    }
    if parsed["block_size"] < patch_size:
        raise ConfigError(
            f"split.block_size ({parsed['block_size']} px) must be at least patch_size ({patch_size} px)."
        )
    if not (parsed["val"] >= 0 and parsed["test"] >= 0 and parsed["val"] + parsed["test"] < 1):
        raise ConfigError(
            f"split.val and split.test must be >= 0 and sum to < 1, got {parsed['val']} and {parsed['test']}."
        )
    return parsed


def _given_statistics(
    given: dict[str, dict[str, list[float]]],
    bands: dict[str, tuple[str, ...]],
    scales: dict[str, float],
) -> BandStatistics:
    statistics = BandStatistics(scale=dict(scales))
    for name, names in bands.items():
        spec = given.get(name) or {}
        if len(spec.get("mean", ())) != len(names) or len(spec.get("std", ())) != len(names):
            raise ConfigError(
                f"statistics[{name!r}] needs 'mean' and 'std' with {len(names)} values, one per "
                f"band ({', '.join(names)})."
            )
        statistics.mean[name], statistics.std[name] = list(spec["mean"]), list(spec["std"])
    return statistics


def _intersection(datasets: list[GeoTiffRasterDataset]) -> shapely.Geometry:
    """Where every dataset has files: a TorchGeo ``IntersectionDataset``'s footprint.

    Raises:
        RasterMismatchError: naming the dataset that meets none of the ones before it in
            space.
    """

    def meet(a: Any, b: GeoTiffRasterDataset) -> IntersectionDataset:
        try:
            return IntersectionDataset(a, b, spatial_only=True)
        except RuntimeError:
            names = ", ".join(d.input_name for d in datasets[: datasets.index(b)])
            raise RasterMismatchError(
                f"{b.input_name!r} (bounds {tuple(round(v, 3) for v in b.index.total_bounds)}) "
                f"does not intersect {names} (bounds {tuple(round(v, 3) for v in a.index.total_bounds)}) "
                f"in space, in CRS {b.grid.crs}: check the paths and CRSs."
            ) from None

    combined = reduce(meet, datasets[1:], datasets[0])
    return combined.index.geometry.union_all()


def _frames(
    inputs: dict[str, tuple[InputSpec, GeoTiffRasterDataset]],
    labels: GeoTiffRasterDataset,
    spec: LabelSpec,
    tolerance_days: int,
) -> list[Any]:
    """The frames' dates: every input date (within the labels' dates when they have any).

    Raises:
        RasterMismatchError: dated labels and inputs that share no date, naming both
            ranges; ConfigError: per-date labels without dates.
    """
    days = sorted({d for _, ds in inputs.values() for d in ds.days()})
    if spec.outputs == "per_date":
        if not labels.dated:
            raise ConfigError("labels.outputs 'per_date' needs dated label files (one per date).")
        return labels.days()
    if labels.dated and days:
        first, last = labels.days()[0], labels.days()[-1]
        slack = dt.timedelta(days=tolerance_days)
        kept = [d for d in days if first - slack <= d <= last + slack]
        if not kept:
            raise RasterMismatchError(
                f"Inputs and labels do not intersect in time: labels are dated {first}..{last}, "
                f"inputs {days[0]}..{days[-1]} (date_tolerance_days={tolerance_days})."
            )
        return kept
    return days or [None]
