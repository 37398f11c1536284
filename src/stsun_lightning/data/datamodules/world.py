"""The datamodule of the built-in synthetic world: every source, one model."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from stsun_lightning.batch import Batch, Modality
from stsun_lightning.data.datamodules.base import BatchFormat, Split, StsunDataModule
from stsun_lightning.data.datamodules.prediction import ScenePredictionMixin
from stsun_lightning.data.datasets.scenes import Scene, SceneInput, ScenePatchDataset, SceneReader
from stsun_lightning.data.datasets.windows import PredictionJob
from stsun_lightning.data.datasets.world.world import SpectralWorld
from stsun_lightning.data.io.statistics import BandStatistics, load_or_compute_statistics
from stsun_lightning.data.sensors import get_sensor
from stsun_lightning.data.sources import SourceInfo

__all__ = ["SpectralWorldDataModule"]

_OPTICAL_SCALE = 1e-4  # reflectance is stored as uint16 × 10000


class SpectralWorldDataModule(ScenePredictionMixin, StsunDataModule):
    """Patches of every SpectralWorld source, in batches homogeneous per source.

    The world is generated into ``root`` on first use (cached, atomic, deterministic by
    seed) as real GeoTIFFs, then read window by window like any user's rasters.

    Args:
        root: cache folder of the world.
        seed: seed of the world.
        scene_size: side of each scene in pixels.
        scenes_per_source: scenes per source (the last is for validation).
        source_names: names of the world's sources to use (default: all).
        patch_size: side of training and validation patches in pixels.
        batch_size: patches per batch.
        train_batches_per_epoch: batches per training epoch, over all sources.
        samples_per_scene: random training windows per scene.
        temperature: source-mixing temperature (1 = by size, larger = more uniform).
        num_workers: DataLoader worker processes.
        predict_window: window side of whole-scene prediction (``stsun predict``).
        predict_overlap: overlap of prediction windows, blended smoothly.
        batch_format: ``"stsun"`` or ``"torchgeo"`` (see :class:`StsunDataModule`).
    """

    def __init__(
        self,
        root: str = "data/spectral_world",
        seed: int = 0,
        scene_size: int = 256,
        scenes_per_source: int = 4,
        source_names: list[str] | None = None,
        patch_size: int = 64,
        batch_size: int = 8,
        train_batches_per_epoch: int = 100,
        samples_per_scene: int = 256,
        temperature: float = 2.0,
        num_workers: int = 0,
        predict_window: int = 128,
        predict_overlap: int = 32,
        batch_format: BatchFormat = "stsun",
    ) -> None:
        super().__init__(
            batch_size, num_workers, train_batches_per_epoch, temperature, seed, batch_format
        )
        self.save_hyperparameters()
        self.root = Path(root)
        self.world = SpectralWorld(self.root, seed, scene_size, scenes_per_source, source_names)
        self.manifest = self.world.generate()
        self.source_infos = [
            self._source_info(n, s) for n, s in sorted(self.manifest["sources"].items())
        ]
        self.predict_window, self.predict_overlap = predict_window, predict_overlap
        self.predict_batch_size, self.predict_num_workers = batch_size, num_workers

    @staticmethod
    def _source_info(name: str, spec: dict[str, Any]) -> SourceInfo:
        label = spec["label"]
        if label["kind"] == "classes":
            ordered = sorted(label["classes"].items(), key=lambda kv: int(kv[0]))
            return SourceInfo(name, spec["task"], categories=tuple(n for _, n in ordered))
        return SourceInfo(name, spec["task"], variables=tuple(label["variables"]))

    def scenes(self, source: str, split: str) -> list[Scene]:
        """The scenes of ``source`` in ``split`` ("train" or "val")."""
        spec = self.manifest["sources"][source]
        scenes = []
        for entry in spec["scenes"]:
            if entry["split"] != split:
                continue
            inputs = {
                name: SceneInput(
                    get_sensor(info["sensor"]),
                    tuple(info["bands"]),
                    tuple(self.root / f for f in entry["files"][name]),
                )
                for name, info in spec["inputs"].items()
            }
            size = self.manifest["scene_size"]
            label = self.root / entry["label"] if entry.get("label") else None
            dates = tuple(date.fromisoformat(d) for d in entry["dates"])
            scenes.append(
                Scene(entry["name"], float(entry["gsd_m"]), dates, inputs, label, size, size)
            )
        return scenes

    def _statistics(self, source: SourceInfo) -> BandStatistics:
        """Band statistics of the source's training scenes (cached beside the world)."""
        spec = self.manifest["sources"][source.name]
        scales = {
            name: _OPTICAL_SCALE
            if get_sensor(info["sensor"]).bands[0].modality == Modality.OPTICAL
            else 1.0
            for name, info in spec["inputs"].items()
        }
        return load_or_compute_statistics(
            self.root / "statistics" / f"{source.name}.json",
            self.scenes(source.name, "train"),
            scales,
        )

    def _dataset(self, source: SourceInfo, split: str, mode: str) -> ScenePatchDataset:
        spec = self.manifest["sources"][source.name]
        statistics = self._statistics(source)
        label = spec["label"]
        classes = {int(v): n for v, n in label.get("classes", {}).items()}
        return ScenePatchDataset(
            self.scenes(source.name, split),
            source,
            self.vocabularies,
            classes,
            tuple(label.get("ignore_values", ())),
            spec["outputs"],
            statistics,
            self.hparams.patch_size,
            mode=mode,
            samples_per_scene=self.hparams.samples_per_scene,
            seed=self.hparams.seed,
        )

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets of every source for the stage."""
        if stage in (None, "fit"):
            self.train_sets = [self._dataset(s, "train", "random") for s in self.source_infos]
        self.val_sets = [self._dataset(s, "val", "grid") for s in self.source_infos]

    def datasets(self, split: Split) -> list[Dataset[Batch]]:
        """Per source: random training patches, or a grid over the validation scenes.

        The synthetic world has no separate test split: "test" is the validation split.
        """
        return list(self.train_sets if split == "train" else self.val_sets)

    def prediction_jobs(self) -> list[PredictionJob]:
        """Every validation scene of every source, whole, with the source's own request."""
        jobs = []
        for source in self.source_infos:
            reader = SceneReader(self._statistics(source))
            outputs = self.manifest["sources"][source.name]["outputs"]
            for scene in self.scenes(source.name, "val"):
                jobs.append(
                    PredictionJob(scene, reader, source, outputs, f"{source.name}/{scene.name}")
                )
        return jobs
