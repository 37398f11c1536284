"""The datamodule of the built-in synthetic world: every source, one model.

SpectralWorld's files are read like any user's rasters: each scene's inputs become an
input specification, read as one series on the label's grid by the same reader that
:class:`~stsun_lightning.data.GeoTiffDataModule` and prediction use.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from stsun_lightning.batch import Batch
from stsun_lightning.data.datamodules.base import BatchFormat, Split, StsunDataModule
from stsun_lightning.data.datamodules.prediction import ScenePredictionMixin
from stsun_lightning.data.datasets.frames import FrameRule
from stsun_lightning.data.datasets.geotiff import GeoTiffRasterDataset
from stsun_lightning.data.datasets.labels import LabelRaster
from stsun_lightning.data.datasets.patches import PatchRef, ScenePatchDataset
from stsun_lightning.data.datasets.scene_statistics import scene_statistics, tile_windows
from stsun_lightning.data.datasets.scenes import Scene, build_series
from stsun_lightning.data.datasets.virtual_patches import VirtualSensorPatchDataset
from stsun_lightning.data.datasets.windows import PredictionJob
from stsun_lightning.data.datasets.world.sources import SOURCES
from stsun_lightning.data.datasets.world.surfaces import SURFACE_BANDS
from stsun_lightning.data.datasets.world.virtual import VirtualSensors, reflectance_statistics
from stsun_lightning.data.datasets.world.world import SpectralWorld
from stsun_lightning.data.io.grid import Extent, grid_of
from stsun_lightning.data.io.statistics import Statistics, cached_statistics, files_key
from stsun_lightning.data.record import SourceRecord
from stsun_lightning.data.samplers.crops import CropArea, RandomCrops
from stsun_lightning.data.sensors import Modality, get_sensor
from stsun_lightning.data.sources import SourceInfo
from stsun_lightning.data.spec import InputSpec, LabelSpec
from stsun_lightning.data.transforms.coarsen import coarsening_factors
from stsun_lightning.errors import ConfigError

__all__ = ["SpectralWorldDataModule"]

_OPTICAL_SCALE = 1e-4  # reflectance is stored as uint16 × 10000
_FRAMES = FrameRule()  # every input of a world scene shares its dates


class SpectralWorldDataModule(ScenePredictionMixin, StsunDataModule):
    """Patches of every SpectralWorld source, in batches homogeneous per source.

    The world is generated into ``root`` on first use (cached, atomic, deterministic by
    seed) as real GeoTIFFs, then read window by window like any user's rasters.

    Args:
        root: cache folder of the world.
        seed: seed of the world.
        scene_size: side of each scene in pixels.
        scenes_per_source: scenes per source (the last ``val_scenes`` are for validation).
        source_names: names of the world's sources to use (default: all).
        patch_size: side of training and validation patches in pixels.
        batch_size: patches per batch.
        train_batches_per_epoch: batches per training epoch, over all sources.
        samples_per_scene: random training windows per scene and epoch, drawn afresh
            every epoch from the seed, the epoch and the window's index.
        temperature: source-mixing temperature (1 = by size, larger = more uniform).
        num_workers: DataLoader worker processes.
        predict_window: window side of whole-scene prediction (``stsun predict``; default:
            ``patch_size``, the context training saw).
        predict_overlap: overlap of prediction windows, blended smoothly (default: a
            quarter of the window).
        batch_format: ``"stsun"`` or ``"torchgeo"`` (see :class:`StsunDataModule`).
        val_scenes: held-out scenes per source.
        virtual_sensors: render training items of the sources it names (default: every
            source of one optical reflective sensor) through random sensors
            (:class:`~stsun_lightning.data.datasets.world.virtual.VirtualSensors`); those
            sources are normalised with fixed reflectance statistics in every split.
        coarsen: share of training crops drawn ``f`` times larger and averaged down to
            ``patch_size`` (``f`` from ``coarsen_factors``; :class:`RandomCrops`): the same
            pixels per patch at ``f`` times the GSD and ``f²`` times the ground, as a
            coarser sensor sees it; what a network trained at one GSD needs to read
            coarser imagery (measured in ``benchmarks/transfer_ablation.py``). 0 turns it
            off. An item of a virtual sensor draws its own GSD and is never coarsened.
        coarsen_factors: the factors ``f`` drawn from (each >= 2; default ``[2, 3]``).
        source_weights: multipliers of some sources' shares of the training batches, by
            name (see :class:`StsunDataModule`).
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
        predict_window: int | None = None,
        predict_overlap: int | None = None,
        batch_format: BatchFormat = "stsun",
        val_scenes: int = 1,
        virtual_sensors: VirtualSensors | None = None,
        coarsen: float = 0.0,
        coarsen_factors: list[int] | None = None,
        source_weights: dict[str, float] | None = None,
    ) -> None:
        super().__init__(
            batch_size,
            num_workers,
            train_batches_per_epoch,
            temperature,
            seed,
            batch_format,
            source_weights=source_weights,
        )
        self.save_hyperparameters()
        self.coarsen_factors = coarsening_factors(coarsen, coarsen_factors, "data")
        self.root = Path(root)
        self.world = SpectralWorld(
            self.root, seed, scene_size, scenes_per_source, source_names,
            surfaces=virtual_sensors is not None, val_scenes=val_scenes,
        )  # fmt: skip
        self.manifest = self.world.generate()
        self.virtual_sensors = virtual_sensors
        self.virtual_sources = self._virtual_sources(virtual_sensors)
        self.source_infos = [
            self._source_info(n, s) for n, s in sorted(self.manifest["sources"].items())
        ]
        self.source_weight_list()  # a misspelt source fails here, not at the first batch
        # Windows of the training patch's size by default: the context the network was
        # trained with (larger windows scored up to 0.046 mIoU lower than validation,
        # benchmarks/results/agreement.md).
        self.predict_window = predict_window or patch_size
        self.predict_overlap = (
            predict_overlap if predict_overlap is not None else self.predict_window // 4
        )
        self.predict_batch_size, self.predict_num_workers = batch_size, num_workers
        self._scenes: dict[tuple[str, str], list[Scene]] = {}
        self._statistics: dict[str, Statistics] = {}
        self.train_sets: list[Dataset[Batch]] = []
        self.val_sets: list[Dataset[Batch]] = []

    def _virtual_sources(self, config: VirtualSensors | None) -> tuple[str, ...]:
        """The sources rendered through virtual sensors (see ``virtual_sensors``)."""
        if config is None:
            return ()
        eligible = [
            name
            for name in self.manifest["sources"]
            if len(SOURCES[name].inputs) == 1
            and all(
                b.modality == Modality.OPTICAL and b.wavelength_nm < 3000
                for b in SOURCES[name].inputs[0].bands
            )
        ]
        if config.sources is None:
            return tuple(eligible)
        for name in config.sources:
            if name not in eligible:
                raise ConfigError(
                    f"virtual_sensors.sources: {name!r} is not a source of one optical "
                    f"reflective sensor in this world; choose from {eligible}."
                )
        return tuple(config.sources)

    @staticmethod
    def _source_info(name: str, spec: dict[str, Any]) -> SourceInfo:
        label = spec["label"]
        if label["kind"] == "classes":
            ordered = sorted(label["classes"].items(), key=lambda kv: int(kv[0]))
            return SourceInfo(name, spec["task"], categories=tuple(n for _, n in ordered))
        return SourceInfo(name, spec["task"], variables=tuple(label["variables"]))

    def input_specs(self, source: str) -> dict[str, InputSpec]:
        """The input specification of a source's inputs (their files are per scene)."""
        spec = self.manifest["sources"][source]
        specs = {}
        for name, info in spec["inputs"].items():
            sensor = get_sensor(info["sensor"])
            optical = sensor.bands[0].modality == Modality.OPTICAL
            specs[name] = InputSpec(
                name, sensor, (), tuple(info["bands"]), scale=_OPTICAL_SCALE if optical else 1.0
            )
        return specs

    def _label_spec(self, source: str) -> LabelSpec:
        spec = self.manifest["sources"][source]
        label = spec["label"]
        if label["kind"] == "classes":
            classes = {int(v): n for v, n in label["classes"].items()}
            return LabelSpec(
                (), spec["task"], classes, (), tuple(label.get("ignore_values", ())),
                spec["outputs"],
            )  # fmt: skip
        return LabelSpec((), spec["task"], None, tuple(label["variables"]), (), spec["outputs"])

    def scenes(self, source: str, split: str) -> list[Scene]:
        """The scenes of ``source`` in ``split`` ("train" or "val"), read as series."""
        key = (source, split)
        if key not in self._scenes:
            self._scenes[key] = [
                self._scene(source, entry)
                for entry in self.manifest["sources"][source]["scenes"]
                if entry["split"] == split
            ]
        return self._scenes[key]

    def _scene(self, source: str, entry: dict[str, Any]) -> Scene:
        label_path = self.root / entry["label"]
        grid = grid_of(label_path)
        specs = self.input_specs(source)
        files = {n: tuple(self.root / f for f in entry["files"][n]) for n in specs}
        series = build_series(specs, files, grid, _FRAMES)
        label_spec = self._label_spec(source)
        label_data = GeoTiffRasterDataset(
            [label_path], label_spec.variables or ("label",), grid, is_image=False, name="labels"
        )
        info = next(s for s in self.source_infos if s.name == source)
        size = int(self.manifest["scene_size"])
        extent = Extent(grid, grid.origin[0], grid.origin[1], size, size)
        labels = LabelRaster(label_data, label_spec, info, series.frames)
        expected = tuple(date.fromisoformat(d) for d in entry["dates"])
        if tuple(f.day for f in series.frames) != expected:
            raise RuntimeError(
                f"SpectralWorld scene {entry['name']} of {source}: the files' dates "
                f"{[f.day for f in series.frames]} differ from the manifest's {expected}."
            )
        return Scene(entry["name"], series, extent, labels, files)

    def _source_statistics(self, source: str) -> Statistics:
        """A loaded checkpoint's statistics, else those of the training scenes (cached)."""
        record = self.checkpoint_sources.get(source)
        if record is not None:
            return record.statistics_for(self.input_specs(source), source)
        if source in self.virtual_sources:
            return {
                n: reflectance_statistics(s.sensor.select(s.bands))
                for n, s in self.input_specs(source).items()
            }
        if source not in self._statistics:
            scenes = self.scenes(source, "train")
            windows = [(s, b) for s in scenes for b in tile_windows(s, self.hparams.patch_size)]
            paths = [p for s in scenes for files in s.files.values() for p in files]
            specs = {
                n: [s.sensor.name, list(s.bands), s.scale]
                for n, s in self.input_specs(source).items()
            }
            key = files_key(paths, [specs, self.hparams.patch_size])
            self._statistics[source] = cached_statistics(
                self.root / "statistics" / f"{source}.json",
                key,
                lambda: scene_statistics(windows, seed=self.hparams.seed),
            )
        return self._statistics[source]

    def _normalised(self, source: str, split: str) -> list[Scene]:
        scenes = self.scenes(source, split)
        statistics = self._source_statistics(source)
        for scene in scenes:
            scene.series.set_statistics(statistics)
        return scenes

    def _dataset(
        self, source: SourceInfo, split: str
    ) -> ScenePatchDataset | VirtualSensorPatchDataset:
        """Training: random windows of the scenes, drawn afresh every epoch; else a grid."""
        scenes = self._normalised(source.name, split)
        p = self.hparams.patch_size
        patches: list[PatchRef] | RandomCrops
        if split == "train":
            areas = [
                CropArea(
                    i,
                    s.extent.left,
                    s.extent.top,
                    s.extent.width,
                    s.extent.height,
                    s.extent.grid.res,
                )
                for i, s in enumerate(scenes)
            ]
            count = self.hparams.samples_per_scene * len(scenes)
            patches = RandomCrops(
                areas,
                p,
                count,
                self.hparams.seed,
                coarsen=self.hparams.coarsen,
                coarsen_factors=self.coarsen_factors,
            )
        else:
            patches = []
            for index, scene in enumerate(scenes):
                extent = scene.extent
                rx, ry = extent.grid.res
                patches += [
                    PatchRef(index, extent.left + c * rx, extent.top - r * ry)
                    for r in range(0, extent.height - p + 1, p)
                    for c in range(0, extent.width - p + 1, p)
                ]
        dataset = ScenePatchDataset(
            scenes,
            source,
            self.vocabularies,
            patches,
            p,
            self.manifest["sources"][source.name]["outputs"],
            augment=split == "train",
            seed=self.hparams.seed,
        )
        if split != "train" or source.name not in self.virtual_sources:
            return dataset
        assert self.virtual_sensors is not None
        entries = [
            e for e in self.manifest["sources"][source.name]["scenes"] if e["split"] == "train"
        ]
        surfaces = [
            GeoTiffRasterDataset(
                [self.root / f for f in entry["surfaces"]],
                SURFACE_BANDS,
                scene.series.grid,
                resampling="nearest",
                name=f"{source.name}/{entry['name']} surfaces",
            )
            for entry, scene in zip(entries, scenes, strict=True)
        ]
        toa = SOURCES[source.name].inputs[0].top_of_atmosphere
        return VirtualSensorPatchDataset(
            dataset, surfaces, self.virtual_sensors, toa, self.hparams.seed
        )

    def setup(self, stage: str | None = None) -> None:
        """Index every source's scenes (their statistics are applied when loaders are built)."""
        splits = ("train", "val") if stage in (None, "fit") else ("val",)
        for source in self.source_infos:
            for split in splits:
                self.scenes(source.name, split)

    def datasets(self, split: Split) -> list[Dataset[Batch]]:
        """Per source: random training patches, or a grid over the validation scenes.

        The synthetic world has no separate test split: "test" is the validation split.
        """
        which = "train" if split == "train" else "val"
        return [self._dataset(s, which) for s in self.source_infos]

    def source_records(self) -> dict[str, SourceRecord]:
        """Per source, its inputs' statistics and the frame rule."""
        return {
            s.name: SourceRecord.of(
                self.input_specs(s.name), self._source_statistics(s.name), _FRAMES
            )
            for s in self.source_infos
        }

    def prediction_jobs(self) -> list[PredictionJob]:
        """Every validation scene of every source, whole, with the source's own request."""
        jobs = []
        for source in self.source_infos:
            outputs = self.manifest["sources"][source.name]["outputs"]
            for scene in self._normalised(source.name, "val"):
                jobs.append(PredictionJob(scene, source, outputs, f"{source.name}/{scene.name}"))
        return jobs
