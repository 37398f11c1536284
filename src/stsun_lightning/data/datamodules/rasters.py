"""Rasters on disk as whole scenes to predict, with the same input specification as training.

Each input is specified exactly as in :class:`~stsun_lightning.data.GeoTiffDataModule`
(sensor, paths, bands, ``separate_files``, ``date_pattern``, ``scale``, ``nodata``,
``resampling``) and read by the same reader. The first input's files are grouped into
scenes by name (``tile_A_2021-06-01.tif`` and ``tile_A_2021-07-01.tif`` are two dates of
scene ``tile_A``; ``scene_pattern`` overrides the rule); each scene is predicted on that
input's grid (or ``crs``/``res``), and every other input (another sensor on other dates,
a DEM in another CRS) joins wherever it meets the scene. Band statistics come from the
checkpoint by default, exactly as training normalised.
"""

from __future__ import annotations

from typing import Any

import rasterio
from lightning import LightningDataModule

from stsun_lightning.data.datamodules.prediction import (
    ScenePredictionMixin,
    StatisticsChoice,
    prediction_statistics,
)
from stsun_lightning.data.datasets.frames import FrameRule
from stsun_lightning.data.datasets.scenes import prediction_scenes
from stsun_lightning.data.datasets.windows import PredictionJob
from stsun_lightning.data.record import DataRecordMixin, choose_source
from stsun_lightning.data.sources import SourceInfo, build_vocabularies
from stsun_lightning.data.spec import InputSpec, OutputKindName
from stsun_lightning.errors import ConfigError

__all__ = ["RasterPredictionDataModule"]


class RasterPredictionDataModule(ScenePredictionMixin, DataRecordMixin, LightningDataModule):
    """Whole rasters to predict with ``stsun predict``, streamed window by window.

    Args:
        inputs: by input name, the input specification of training
            (:class:`~stsun_lightning.data.spec.InputSpec`): ``{sensor, paths, bands,
            separate_files, date_pattern, scale, nodata, resampling}``.
        task: task to run (a task the model was trained on).
        categories: category names to predict over (any subset of the model's).
        variables: regression variables to predict (instead of categories).
        outputs: "state" (at the last date), "change" (first to last date),
            "aggregate" (over the series) or "per_date" (a map per date).
        statistics: ``"checkpoint"`` (default: what training used), ``"rasters"``
            (computed from the rasters predicted) or per input ``{mean, std}`` in
            physical units.
        statistics_source: the checkpoint's source whose statistics to use (default:
            the only one, or the one whose inputs and bands cover these).
        date_tolerance_days: acquisitions this many days apart form one frame
            (default: the checkpoint's frame rule).
        crs: CRS of the output grid (default: the first input's).
        res: pixel size of the output grid in CRS units (default: the first input's).
        scene_pattern: regex with a group ``scene`` grouping the first input's files.
        region: ``[left, bottom, right, top]`` to predict (default: every scene whole).
        region_crs: CRS of ``region`` (default: each scene's grid CRS).
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
        statistics: StatisticsChoice = "checkpoint",
        statistics_source: str | None = None,
        date_tolerance_days: int | None = None,
        crs: str | None = None,
        res: float | None = None,
        scene_pattern: str | None = None,
        region: list[float] | None = None,
        region_crs: str | None = None,
        window: int = 256,
        overlap: int = 64,
        batch_size: int = 4,
        num_workers: int = 0,
        gdal_cache_mb: int | None = 256,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if not inputs:
            raise ConfigError("RasterPredictionDataModule needs at least one input under 'inputs'.")
        if not 0 <= overlap < window:
            raise ConfigError(f"overlap must be in [0, window={window}), got {overlap}.")
        if bool(categories) == bool(variables):
            raise ConfigError("Name either 'categories' or 'variables' to predict (exactly one).")
        if isinstance(statistics, str) and statistics not in ("checkpoint", "rasters"):
            raise ConfigError(
                "statistics must be 'checkpoint', 'rasters' or per-input {mean, std}, got "
                f"{statistics!r}."
            )
        if gdal_cache_mb is not None:
            rasterio.env.set_gdal_config("GDAL_CACHEMAX", gdal_cache_mb * 1024 * 1024)
        self.input_specs = {n: InputSpec.parse(n, s) for n, s in inputs.items()}
        self.source = SourceInfo(
            "rasters", task, categories=tuple(categories or ()), variables=tuple(variables or ())
        )
        self.vocabularies = build_vocabularies([self.source])
        self.predict_window, self.predict_overlap = window, overlap
        self.predict_batch_size, self.predict_num_workers = batch_size, num_workers
        self._jobs: list[PredictionJob] | None = None

    @property
    def sources(self) -> dict[str, dict[str, Any]]:
        """The one source predicted, for ``StsunTask(sources=...)`` (linked by the CLI)."""
        return {self.source.name: self.source.to_dict()}

    def frame_rule(self) -> FrameRule:
        """The frame rule: as given, else the checkpoint's, else no tolerance."""
        tolerance = self.hparams.date_tolerance_days
        if tolerance is not None:
            return FrameRule(tolerance)
        if self.checkpoint_sources and self.hparams.statistics == "checkpoint":
            name = choose_source(
                self.checkpoint_sources, self.input_specs, self.hparams.statistics_source
            )
            return self.checkpoint_sources[name].frames
        return FrameRule()

    def prediction_jobs(self) -> list[PredictionJob]:
        """Every scene, normalised as training did (or as configured)."""
        if self._jobs is None:
            hp = self.hparams
            scenes = prediction_scenes(
                self.input_specs, self.frame_rule(), hp.crs, hp.res, hp.scene_pattern,
                hp.region, hp.region_crs,
            )  # fmt: skip
            statistics = prediction_statistics(
                hp.statistics, self.input_specs, scenes, self.checkpoint_sources,
                wanted=hp.statistics_source,
            )  # fmt: skip
            for scene in scenes:
                scene.series.set_statistics(statistics)
            self._jobs = [
                PredictionJob(scene, self.source, hp.outputs, scene.name) for scene in scenes
            ]
        return self._jobs
