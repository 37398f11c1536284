"""A datamodule for a user's own GeoTIFFs, configured only in YAML, for every stage.

Inputs from several sensors (any CRS and resolution, one file per date or per band and
date, dates from file names or tags, static files such as a DEM) are read through one
reader (:class:`~stsun_lightning.data.datasets.series.RasterSeries`) in training,
evaluation and prediction. In training they are aligned onto the labels' grid, and train,
validation and test patches come from disjoint spatial blocks, so nothing leaks; band
statistics come from the training blocks only. ``stsun predict`` with the same ``data:``
section (pointed at other paths or a region) predicts whole rasters of the inputs,
normalised with the checkpoint's statistics.
"""

from __future__ import annotations

from functools import reduce
from pathlib import Path
from typing import Any, Literal

import shapely
from torch.utils.data import Dataset
from torchgeo.datasets import IntersectionDataset

from stsun_lightning.batch import Batch
from stsun_lightning.data.datamodules.base import BatchFormat, Split, StsunDataModule
from stsun_lightning.data.datamodules.prediction import (
    ScenePredictionMixin,
    prediction_statistics,
)
from stsun_lightning.data.datasets.frames import FrameRule
from stsun_lightning.data.datasets.geotiff import GeoTiffRasterDataset, files_of, input_files
from stsun_lightning.data.datasets.labels import LabelRaster
from stsun_lightning.data.datasets.patches import PatchRef, ScenePatchDataset
from stsun_lightning.data.datasets.scene_statistics import scene_statistics
from stsun_lightning.data.datasets.scenes import Scene, build_series, prediction_scenes
from stsun_lightning.data.datasets.windows import PredictionJob
from stsun_lightning.data.io.files import RasterFile
from stsun_lightning.data.io.grid import Extent, Grid, grid_of
from stsun_lightning.data.io.statistics import (
    Statistics,
    cached_statistics,
    files_key,
    given_statistics,
)
from stsun_lightning.data.record import SourceRecord
from stsun_lightning.data.samplers.crops import RandomCrops
from stsun_lightning.data.samplers.split import SPLITS, block_crops, block_patches, spatial_blocks
from stsun_lightning.data.sources import SourceInfo
from stsun_lightning.data.spec import InputSpec, LabelSpec
from stsun_lightning.data.transforms.coarsen import coarsening_factors
from stsun_lightning.errors import ConfigError, RasterMismatchError

__all__ = ["GeoTiffDataModule"]

_DEFAULT_CACHE = Path.home() / ".cache" / "stsun_lightning" / "statistics"
_LABEL_CHECK_PATCHES = 256  # training patches searched for a labelled pixel at setup


class GeoTiffDataModule(ScenePredictionMixin, StsunDataModule):
    """Train, evaluate and predict STSUN on your own GeoTIFFs from several sensors.

    Args:
        inputs: ``{name: {sensor, paths, bands, separate_files, date_pattern, scale,
            nodata, resampling}}``; ``sensor`` is a registry name, a sensor YAML file or
            an inline mapping (see :class:`~stsun_lightning.data.spec.InputSpec`).
        labels: ``{paths, task, classes: {value: name} | variables: [names],
            ignore_values, outputs, date_pattern}`` (see
            :class:`~stsun_lightning.data.spec.LabelSpec`); not read by ``predict``.
        name: the source's name (in logs: ``val/<name>/miou``).
        patch_size: side of a patch in pixels.
        batch_size: patches per batch.
        split: ``{by: spatial_blocks, val: 0.2, test: 0.1, block_size: 8 × patch_size}``
            (block side in pixels).
        train_samples: random training patches per epoch, drawn afresh every epoch
            (default: 4 × the patches that tile the training blocks).
        statistics: per input ``{mean: [...], std: [...]}`` (physical units, after
            ``scale``), or ``"rasters"``; default: in training computed once from the
            training blocks and cached, in evaluation and prediction the checkpoint's
            (``"rasters"`` recomputes them from the rasters being predicted).
        statistics_cache: folder of the statistics cache.
        crs: CRS of the grid (default: the labels' in training, the first input's in
            prediction).
        res: pixel size of the grid in CRS units (default: the same file's).
        date_tolerance_days: acquisitions this many days apart form one frame; dated
            labels keep the frames within this many days of their dates.
        augment: random flips and 90° rotations of training patches (per epoch).
        num_workers: DataLoader worker processes.
        train_batches_per_epoch: batches per training epoch (default: every sample once).
        temperature: source-mixing temperature (one source here; used when mixed).
        seed: seed of the split, the training patches and the sampling order.
        batch_format: ``"stsun"`` or ``"torchgeo"``.
        scene_pattern: prediction: a regex with a group ``scene`` that groups the first
            input's files into scenes (default: the file name without its date).
        region: prediction: ``[left, bottom, right, top]`` to predict (default: every
            scene whole).
        region_crs: CRS of ``region`` (default: each scene's grid CRS).
        statistics_source: prediction: the checkpoint's source whose statistics to use
            (default: this datamodule's ``name``, or the checkpoint's only source).
        predict_window: window side of prediction in pixels (default: ``patch_size``,
            the context training saw).
        predict_overlap: overlap of prediction windows, blended smoothly (default: a
            quarter of the window).
        predict_batch_size: windows per forward pass (default: ``batch_size``).
        coarsen: share of training crops drawn ``f`` times larger and averaged down to
            ``patch_size`` (``f`` from ``coarsen_factors``; inside the training blocks,
            which must hold ``f × patch_size`` pixels): the same pixels per patch at ``f``
            times the GSD, as a coarser sensor sees the ground; what a network trained at
            one GSD needs to read coarser imagery. 0 turns it off.
        coarsen_factors: the factors ``f`` drawn from (each >= 2; default ``[2, 3]``).
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
        statistics: dict[str, dict[str, list[float]]] | Literal["rasters"] | None = None,
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
        scene_pattern: str | None = None,
        region: list[float] | None = None,
        region_crs: str | None = None,
        statistics_source: str | None = None,
        predict_window: int | None = None,
        predict_overlap: int | None = None,
        predict_batch_size: int | None = None,
        coarsen: float = 0.0,
        coarsen_factors: list[int] | None = None,
    ) -> None:
        super().__init__(
            batch_size, num_workers, train_batches_per_epoch, temperature, seed, batch_format
        )
        self.save_hyperparameters()
        self.coarsen_factors = coarsening_factors(coarsen, coarsen_factors, "data")
        if not inputs:
            raise ConfigError("GeoTiffDataModule needs at least one input under 'inputs'.")
        self.input_specs = {n: InputSpec.parse(n, s) for n, s in inputs.items()}
        self.label_spec = LabelSpec.parse(labels)
        self.split_spec = _parse_split(split or {}, patch_size)
        self.frame_rule = FrameRule(date_tolerance_days)
        if isinstance(statistics, str) and statistics != "rasters":
            raise ConfigError(
                f"statistics must be per-input {{mean, std}} or 'rasters', got {statistics!r}."
            )
        if self.label_spec.classes:
            categories = tuple(dict.fromkeys(self.label_spec.classes.values()))
            self.source_infos = [SourceInfo(name, self.label_spec.task, categories=categories)]
        else:
            self.source_infos = [
                SourceInfo(name, self.label_spec.task, variables=self.label_spec.variables)
            ]
        # Windows of the training patch's size by default: the context the network was
        # trained with (larger windows scored up to 0.046 mIoU lower than validation,
        # benchmarks/results/agreement.md).
        self.predict_window = predict_window or patch_size
        self.predict_overlap = (
            predict_overlap if predict_overlap is not None else self.predict_window // 4
        )
        self.predict_batch_size = predict_batch_size or batch_size
        self.predict_num_workers = num_workers
        self.scene: Scene | None = None
        self.blocks: dict[str, list[shapely.Polygon]] = {}
        self.statistics: Statistics | None = None
        self._datasets: dict[str, ScenePatchDataset] = {}
        self._jobs: list[PredictionJob] | None = None

    @property
    def source(self) -> SourceInfo:
        """The one source of this datamodule."""
        return self.source_infos[0]

    def setup(self, stage: str | None = None) -> None:
        """Index the files, check that they meet in space and time, split, and normalise.

        ``predict`` reads no labels: its scenes are built when predicting starts.

        Raises:
            ConfigError: a path without rasters, a file without CRS, corrupt, with the
                wrong band count; inputs and labels that do not intersect in space or
                time; a split that cannot be made; no labelled pixel in training.
        """
        if stage == "predict" or self.scene is not None:
            return
        label_files = files_of(self.label_spec.paths, "labels")
        grid = grid_of(label_files[0], self.hparams.crs, self.hparams.res)
        label_data = GeoTiffRasterDataset(
            label_files,
            self.label_spec.variables or ("label",),
            grid,
            date_pattern=self.label_spec.date_pattern,
            is_image=False,
            name="labels",
        )
        files = {n: input_files(spec) for n, spec in self.input_specs.items()}
        series = build_series(
            self.input_specs,
            files,
            grid,
            self.frame_rule,
            label_data.days() if label_data.dated else (),
            self.label_spec.outputs == "per_date",
        )
        region = _intersection([*series.datasets.values(), label_data])
        labels = LabelRaster(label_data, self.label_spec, self.source, series.frames)
        extent = Extent.of_bounds(grid, region.bounds)
        self.scene = Scene(self.source.name, series, extent, labels, files)
        self.blocks = spatial_blocks(
            region, grid, self.split_spec["block_size"], self.split_spec, self.hparams.seed
        )
        tiles = self._tiles(region, grid)
        self.statistics = self._training_statistics(tiles["train"], label_files)
        series.set_statistics(self.statistics)
        count = self.hparams.train_samples or 4 * len(tiles["train"])
        patches: dict[str, list[PatchRef] | RandomCrops] = {
            "train": block_crops(
                self.blocks["train"],
                region,
                grid,
                self.hparams.patch_size,
                count,
                self.hparams.seed,
                fallback=tiles["train"],
                coarsen=self.hparams.coarsen,
                coarsen_factors=self.coarsen_factors,
            ),
            "val": tiles["val"],
            "test": tiles["test"],
        }
        self._datasets = {
            split: ScenePatchDataset(
                [self.scene],
                self.source,
                self.vocabularies,
                patches[split],
                self.hparams.patch_size,
                self.label_spec.outputs,  # type: ignore[arg-type]
                augment=self.hparams.augment and split == "train",
                seed=self.hparams.seed,
            )
            for split in SPLITS
        }
        self._check_labelled(self._datasets["train"])

    def _tiles(self, region: shapely.Geometry, grid: Grid) -> dict[str, list[PatchRef]]:
        """The non-overlapping patches that tile each split's blocks.

        Validation and test read these; training reads random crops of its blocks, drawn
        afresh every epoch, and its tiles give the band statistics.
        """
        patch = self.hparams.patch_size
        return {
            split: [
                PatchRef(0, x, y) for x, y in block_patches(self.blocks[split], region, grid, patch)
            ]
            for split in SPLITS
        }

    def _training_statistics(self, tiles: list[PatchRef], label_files: list[Path]) -> Statistics:
        """Given statistics, else those of ``tiles`` of the training blocks (cached)."""
        given = self.hparams.statistics
        if isinstance(given, dict):
            return given_statistics(given, {n: s.bands for n, s in self.input_specs.items()})
        assert self.scene is not None
        patch = self.hparams.patch_size
        rx, ry = self.scene.series.grid.res
        windows = [
            (self.scene, (p.left, p.top - patch * ry, p.left + patch * rx, p.top)) for p in tiles
        ]
        if not windows:
            raise ConfigError(
                f"Source {self.source.name!r}: no training patch of {patch} px fits the "
                "training blocks; lower patch_size or split.block_size."
            )
        paths = [p for files in self.scene.files.values() for p in files] + label_files
        specs = {
            n: [s.sensor.name, list(s.bands), s.scale, s.nodata, s.resampling, s.separate_files]
            for n, s in self.input_specs.items()
        }
        # What a catalog says of its files (dates, bands) is part of what was read.
        catalogued = [
            [f.path, f.day.isoformat(), list(f.bands)]
            for files in self.scene.files.values()
            for f in files
            if isinstance(f, RasterFile)
        ]
        grid = self.scene.series.grid
        key = files_key(
            paths,
            [specs, grid.crs.to_wkt(), grid.res, grid.origin, self.split_spec, patch,
             self.hparams.seed, self.frame_rule.to_dict(), catalogued],
        )  # fmt: skip
        folder = Path(self.hparams.statistics_cache or _DEFAULT_CACHE)
        return cached_statistics(
            folder / f"{key[:32]}.json",
            key,
            lambda: scene_statistics(windows, seed=self.hparams.seed),
        )

    def _check_labelled(self, train: ScenePatchDataset) -> None:
        """A source whose training patches hold no labelled pixel is a mistake: say so."""
        step = max(1, len(train) // _LABEL_CHECK_PATCHES)
        for index in range(0, len(train), step):
            batch = train[index]
            target = batch.target
            if target is None:
                continue
            labelled = (target >= 0) if self.source.is_classification else target.isfinite()
            if bool(labelled.any()):
                return
        raise ConfigError(
            f"Source {self.source.name!r}: no training patch holds a labelled pixel where the "
            "inputs have data (every label is ignored, or outside the inputs' dates and "
            f"footprints; date_tolerance_days={self.frame_rule.tolerance_days}). Check "
            "labels.paths, labels.ignore_values, the inputs' dates and date_tolerance_days."
        )

    def datasets(self, split: Split) -> list[Dataset[Batch]]:
        """The one source's patches of ``split``."""
        if not self._datasets:
            raise RuntimeError("GeoTiffDataModule.datasets() called before setup().")
        self._apply_checkpoint_statistics()
        return [self._datasets[split]]

    def _apply_checkpoint_statistics(self) -> None:
        """A loaded checkpoint's statistics win over computed ones (unless typed in)."""
        record = self.checkpoint_sources.get(self.source.name)
        if record is None or isinstance(self.hparams.statistics, dict) or self.scene is None:
            return
        self.statistics = record.statistics_for(self.input_specs, self.source.name)
        self.scene.series.set_statistics(self.statistics)

    def source_records(self) -> dict[str, SourceRecord]:
        """How this source's inputs were read: their statistics and the frame rule."""
        if self.statistics is None:
            return {}
        return {
            self.source.name: SourceRecord.of(self.input_specs, self.statistics, self.frame_rule)
        }

    def prediction_jobs(self) -> list[PredictionJob]:
        """Whole rasters of the inputs, one per scene of the first input's files."""
        if self._jobs is None:
            scenes = prediction_scenes(
                self.input_specs,
                self.frame_rule,
                self.hparams.crs,
                self.hparams.res,
                self.hparams.scene_pattern,
                self.hparams.region,
                self.hparams.region_crs,
            )
            statistics = prediction_statistics(
                self.hparams.statistics or "checkpoint",
                self.input_specs,
                scenes,
                self.checkpoint_sources,
                own=[self.source.name],
                wanted=self.hparams.statistics_source,
            )
            for scene in scenes:
                scene.series.set_statistics(statistics)
            self._jobs = [
                PredictionJob(scene, self.source, self.label_spec.outputs, scene.name)  # type: ignore[arg-type]
                for scene in scenes
            ]
        return self._jobs


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
