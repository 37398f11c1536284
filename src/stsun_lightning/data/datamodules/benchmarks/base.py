"""The base of the TorchGeo benchmark wrappers: patches, normalisation, splits, batches.

:class:`BenchmarkDataset` crops a reader's examples to patches (random crops for
training, drawn afresh every epoch from the seed, the epoch and the item; a grid
covering every pixel for evaluation), normalises the bands and builds one-item
:class:`~stsun_lightning.batch.Batch` items. :class:`TorchGeoDataModule`
is the base of every wrapper: splits, band statistics (computed once, cached beside the
data) and the project's loaders.
"""

from __future__ import annotations

import hashlib
import json
import logging
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from stsun_lightning.batch import Batch, OutputKind
from stsun_lightning.data.datamodules.base import BatchFormat, Split, StsunDataModule
from stsun_lightning.data.datamodules.benchmarks.readers import Example, OutputMode, SampleReader
from stsun_lightning.data.io.statistics import InputStatistics
from stsun_lightning.data.record import InputRecord, SourceRecord
from stsun_lightning.data.samplers.epochs import EpochDataset, item_rng
from stsun_lightning.data.sensors import get_sensor
from stsun_lightning.data.sources import SourceInfo
from stsun_lightning.errors import ConfigError
from stsun_lightning.io import write_json_atomic

__all__ = [
    "BatchSpec",
    "BenchmarkDataset",
    "TorchGeoDataModule",
    "band_statistics",
    "make_batch",
]

log = logging.getLogger(__name__)

_RANDOM_STREAM = 13  # a training item's crop, flip, turn and frames, in that order


@dataclass(frozen=True)
class BatchSpec:
    """What every batch of one source shares.

    Attributes:
        source: source name.
        task_row: row of the task vocabulary.
        category_rows: rows of the category vocabulary, in target order.
        outputs: the output slot kind.
        gsd_m: metres per pixel.
        wavelength_nm: (C,) band centres.
        bandwidth_nm: (C,) band widths.
        modality: (C,) modality ids.
        mean: (C,) per-band mean of raw values.
        std: (C,) per-band standard deviation of raw values.
        num_frames: frames per item (series are subsampled or padded), or None to keep T.
    """

    source: str
    task_row: int
    category_rows: tuple[int, ...]
    outputs: OutputMode
    gsd_m: float
    wavelength_nm: Tensor
    bandwidth_nm: Tensor
    modality: Tensor
    mean: Tensor
    std: Tensor
    num_frames: int | None = None


def _frames(t: int, wanted: int, rng: np.random.Generator | None) -> Tensor:
    """Indices of ``wanted`` frames out of ``t`` (t >= wanted), in time order.

    Random ones drawn by ``rng``, or evenly spaced ones without it.
    """
    if rng is not None:
        return torch.from_numpy(np.sort(rng.permutation(t)[:wanted]))
    return torch.linspace(0, t - 1, wanted).round().long().unique()


def make_batch(
    example: Example, spec: BatchSpec, frames_rng: np.random.Generator | None = None
) -> Batch:
    """A one-item batch of ``example`` (already cropped).

    Args:
        example: image (T, C, H, W) raw values, target (H, W), dates (T,).
        spec: what the source's batches share.
        frames_rng: subsample long series at random frames drawn by this generator
            (training) rather than at evenly spaced ones.

    Returns:
        The batch: image (1, T', C, H, W) normalised with NaN where missing, target
        (1, 1, H, W) with -1 wherever any real frame lacks data.
    """
    image, dates = example.image, example.dates.to(torch.float32)
    t = image.shape[0]
    time_mask = torch.ones(t, dtype=torch.bool)
    if spec.num_frames is not None and t != spec.num_frames:
        wanted = spec.num_frames
        if t > wanted:  # evenly spaced indices may collide: padded below if so
            keep = _frames(t, wanted, frames_rng)
            image, dates, time_mask = image[keep], dates[keep], time_mask[keep]
        if image.shape[0] < wanted:
            pad = wanted - image.shape[0]
            image = torch.cat([image, image.new_full((pad, *image.shape[1:]), float("nan"))])
            dates = torch.cat([dates, dates.new_full((pad,), float("nan"))])
            time_mask = torch.cat([time_mask, torch.zeros(pad, dtype=torch.bool)])
    image = (image - spec.mean[:, None, None]) / spec.std[:, None, None]
    valid = torch.isfinite(image[time_mask]).all(1).all(0)
    target = torch.where(valid, example.target, -1)
    real = time_mask.nonzero().flatten()
    kind, ref_a, ref_b = {  # the state at the last real frame, or the first to the last
        "state": (OutputKind.STATE, int(real.max()), int(real.max())),
        "change": (OutputKind.CHANGE, int(real.min()), int(real.max())),
        "aggregate": (OutputKind.AGGREGATE, -1, -1),
    }[spec.outputs]
    k = len(spec.category_rows)
    return Batch(
        image=image[None].contiguous(),
        wavelength_nm=spec.wavelength_nm[None],
        bandwidth_nm=spec.bandwidth_nm[None],
        modality=spec.modality[None],
        band_mask=torch.ones(1, *image.shape[:2], dtype=torch.bool),
        gsd_m=torch.tensor([spec.gsd_m], dtype=torch.float32),
        dates=dates[None],
        time_mask=time_mask[None],
        valid_mask=valid[None],
        task=torch.tensor([spec.task_row]),
        outputs=torch.tensor([[[float(kind), float(ref_a), float(ref_b)]]]),
        categories=torch.tensor([list(spec.category_rows)]),
        category_mask=torch.ones(1, k, dtype=torch.bool),
        target=target[None, None].contiguous(),
        source=[spec.source],
    )


def _augment(example: Example, rng: np.random.Generator) -> Example:
    """A random flip and quarter turn (same for image and target), drawn by ``rng``."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    image = torch.rot90(example.image, k, (-2, -1))
    target = torch.rot90(example.target, k, (-2, -1))
    if flip:
        image, target = image.flip(-1), target.flip(-1)
    return Example(image.contiguous(), target.contiguous(), example.dates)


class BenchmarkDataset(EpochDataset[Batch]):
    """Patches of some samples of a TorchGeo dataset, each a one-item :class:`Batch`.

    Indexed by ``EpochIndex(epoch, i)`` (or ``i``: epoch 0), like every training dataset
    of the project: in random mode, the crop, flip, turn and frames of item ``i`` are
    drawn from ``(seed, epoch, i)``, so every epoch sees others and a rerun or a resumed
    run the same ones.

    Args:
        reader: the samples.
        indices: which samples (of ``reader``) belong to this split.
        spec: what the source's batches share.
        patch_size: side of a patch in pixels.
        mode: ``"random"``: one random patch per sample and epoch (training, with
            random flips and turns if ``augment``, random frames of long series);
            ``"grid"``: non-overlapping windows covering every pixel, padded with
            ignored pixels past the edges (evaluation).
        augment: random flips and quarter turns (random mode only).
        seed: seed of the random draws.
    """

    def __init__(
        self,
        reader: SampleReader,
        indices: Sequence[int],
        spec: BatchSpec,
        patch_size: int,
        mode: Literal["random", "grid"],
        augment: bool = True,
        seed: int = 0,
    ) -> None:
        self.reader = reader
        self.seed = seed
        self.spec = spec
        self.patch_size = patch_size
        self.mode = mode
        self.augment = augment and mode == "random"
        if mode == "random":
            self.items = [(int(i), -1, -1) for i in indices]
        else:
            p = patch_size
            self.items = []
            for i in indices:
                h, w = reader.shape(int(i))
                self.items += [(int(i), r, c) for r in range(0, h, p) for c in range(0, w, p)]

    def __len__(self) -> int:
        return len(self.items)

    def item(self, epoch: int, index: int) -> Batch:
        """Patch ``index`` (of ``epoch``, in random mode) as a one-item batch."""
        sample, row, col = self.items[index]
        p = self.patch_size
        if self.mode != "random":
            return make_batch(self.reader.read_window(sample, (row, col, p, p)), self.spec)
        rng = item_rng(self.seed, _RANDOM_STREAM, epoch, index)
        h, w = self.reader.shape(sample)
        row, col = int(rng.integers(max(h - p, 0) + 1)), int(rng.integers(max(w - p, 0) + 1))
        example = self.reader.read_window(sample, (row, col, p, p))
        if self.augment:
            example = _augment(example, rng)
        return make_batch(example, self.spec, frames_rng=rng)


class _Empty(Dataset[Batch]):
    """A split without data."""

    def __len__(self) -> int:
        return 0

    def __getitem__(self, index: int) -> Batch:
        raise IndexError(f"Index {index} of an empty split.")


def band_statistics(
    reader: SampleReader, indices: Sequence[int], samples: int, stride: int = 4
) -> tuple[list[float], list[float]]:
    """Per-band mean and standard deviation of raw values over some samples.

    Args:
        reader: the samples.
        indices: candidate samples (the training split).
        samples: how many, evenly spaced over ``indices``.
        stride: use every ``stride``-th pixel in each direction.

    Returns:
        (mean, std), one value per band; a band without data gets mean 0 and std 1.
    """
    if not indices:
        raise ValueError("Cannot compute band statistics: the training split is empty.")
    chosen = sorted({indices[int(i)] for i in np.linspace(0, len(indices) - 1, samples)})
    chunks = []
    for i in chosen:
        image = reader.preview(i, stride)  # (T, C, h, w)
        chunks.append(image.permute(1, 0, 2, 3).reshape(image.shape[1], -1).double())
    values = torch.cat(chunks, 1).numpy()
    finite = np.isfinite(values)
    count = finite.sum(1)
    total = np.where(finite, values, 0.0).sum(1)
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    squares = np.where(finite, (values - mean[:, None]) ** 2, 0.0).sum(1)
    std = np.sqrt(np.divide(squares, count, out=np.ones_like(squares), where=count > 0))
    std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)
    return mean.tolist(), std.tolist()


class TorchGeoDataModule(StsunDataModule):
    """Base of the wrappers of TorchGeo benchmark datasets: one source per datamodule.

    Subclasses set the class attributes (source name, task, categories in target
    order, output kind, GSD), build TorchGeo's dataset for each of its own splits
    (:meth:`torchgeo_dataset`) and wrap it in a :class:`SampleReader`
    (:meth:`reader`). Splits TorchGeo lacks are made here: where a dataset has train
    and test only, ``val_fraction`` of the training samples (chosen by ``seed``) form the
    validation split.

    Bands are normalised with per-band mean and standard deviation: given as
    ``mean``/``std``, or computed from ``statistics_samples`` training samples once and
    cached as JSON in ``root`` (recomputed if the cache's key differs; kept in memory if
    ``root`` is read-only).

    Args:
        root: folder of the downloaded dataset (TorchGeo's layout; nothing is downloaded).
        patch_size: side of training patches in pixels (random crops; smaller samples
            are padded with ignored pixels).
        eval_patch_size: side of evaluation windows (default: ``patch_size``); every
            pixel of a validation or test sample is covered exactly once.
        batch_size: items per batch.
        num_workers: DataLoader worker processes.
        train_batches_per_epoch: batches per training epoch (default: every training
            sample once).
        temperature: source-mixing temperature (see :class:`StsunDataModule`).
        seed: seed of the sampling order and of the splits made here.
        batch_format: ``"stsun"`` or ``"torchgeo"`` (see :class:`StsunDataModule`).
        val_fraction: share of the training samples held out for validation where the
            dataset has no validation split.
        statistics_samples: training samples the band statistics are computed from.
        mean: per-band mean of raw values, in band order (skips the computation).
        std: per-band standard deviation of raw values, in band order.
        augment: random flips and quarter turns of training patches.

    Training patches, flips and frames are drawn afresh every epoch from ``seed``, the
    epoch and the item (:class:`BenchmarkDataset`).
    """

    source_name: ClassVar[str]
    task: ClassVar[str]
    category_names: tuple[str, ...]
    output_mode: ClassVar[OutputMode]
    gsd_m: ClassVar[float]
    native_splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")

    def __init__(
        self,
        root: str,
        patch_size: int = 64,
        eval_patch_size: int | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        train_batches_per_epoch: int | None = None,
        temperature: float = 2.0,
        seed: int = 0,
        batch_format: BatchFormat = "stsun",
        val_fraction: float = 0.1,
        statistics_samples: int = 32,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        augment: bool = True,
    ) -> None:
        super().__init__(
            batch_size, num_workers, train_batches_per_epoch, temperature, seed, batch_format
        )
        if patch_size <= 0 or (eval_patch_size is not None and eval_patch_size <= 0):
            raise ValueError(
                f"patch_size and eval_patch_size must be positive, got {patch_size} and "
                f"{eval_patch_size}."
            )
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
        if (mean is None) != (std is None):
            raise ValueError("Give both mean and std, or neither (they are then computed).")
        self.root = Path(root)
        self.patch_size = patch_size
        self.eval_patch_size = eval_patch_size or patch_size
        self.val_fraction = val_fraction
        self.statistics_samples = statistics_samples
        self.mean, self.std = mean, std
        self.augment = augment
        self.source_infos = [self.source_info()]
        self._torchgeo: dict[str, Any] = {}
        self._readers: dict[str, SampleReader] = {}
        self._sets: dict[str, Dataset[Batch]] = {}

    def source_info(self) -> SourceInfo:
        """The source, from :attr:`source_name`, :attr:`task` and :attr:`category_names`.

        Subclasses whose categories depend on their arguments set
        ``self.category_names`` and then ``self.source_infos = [self.source_info()]``.
        """
        return SourceInfo(self.source_name, self.task, tuple(self.category_names))

    # --- What subclasses provide ---------------------------------------------------

    @abstractmethod
    def band_inputs(self) -> list[tuple[str, tuple[str, ...]]]:
        """The inputs in channel order: (sensor registry name, its band names)."""

    @abstractmethod
    def torchgeo_dataset(self, split: str) -> Any:
        """TorchGeo's dataset for one of :attr:`native_splits` (``download=False``)."""

    @abstractmethod
    def reader(self, dataset: Any) -> SampleReader:
        """The reader of a dataset built by :meth:`torchgeo_dataset`."""

    # --- Splits --------------------------------------------------------------------

    def _native_reader(self, split: str) -> SampleReader:
        if split not in self._readers:
            self._readers[split] = self.reader(self.torchgeo_dataset(split))
        return self._readers[split]

    def split_samples(self, split: Split) -> tuple[SampleReader, list[int]] | None:
        """The reader and sample indices of ``split``, or None if it has no data.

        A split TorchGeo provides is used whole; without a validation split, the
        training samples are divided by ``seed`` (``val_fraction`` to validation).
        """
        has_val = "val" in self.native_splits
        if split == "test" or has_val or split not in ("train", "val"):
            if split not in self.native_splits:
                return None
            reader = self._native_reader(split)
            return reader, list(range(len(reader)))
        reader = self._native_reader("train")
        n = len(reader)
        n_val = min(max(round(n * self.val_fraction), 1), n - 1) if self.val_fraction > 0 else 0
        order = np.random.default_rng(self.seed).permutation(n)
        chosen = order[:n_val] if split == "val" else order[n_val:]
        return reader, sorted(int(i) for i in chosen)

    # --- Normalisation -------------------------------------------------------------

    def band_names(self) -> list[str]:
        """Names of the channels, ``sensor:band``, in channel order."""
        return [f"{sensor}:{band}" for sensor, bands in self.band_inputs() for band in bands]

    def source_records(self) -> dict[str, SourceRecord]:
        """This source's statistics per input (raw values: the scale is 1), for checkpoints."""
        mean, std = self.statistics()
        inputs, start = {}, 0
        for sensor, bands in self.band_inputs():
            end = start + len(bands)
            statistics = InputStatistics(
                tuple(bands), tuple(mean[start:end]), tuple(std[start:end])
            )
            inputs[sensor] = InputRecord(sensor, statistics)
            start = end
        return {self.source_name: SourceRecord(inputs)}

    def load_data_record(self, record: Mapping[str, Any] | None) -> None:
        """Normalise with a loaded checkpoint's statistics of this source, if it has them."""
        super().load_data_record(record)
        own = self.checkpoint_sources.get(self.source_name)
        if own is None:
            return
        mean: list[float] = []
        std: list[float] = []
        for sensor, bands in self.band_inputs():
            recorded = own.inputs.get(sensor)
            if recorded is None:
                raise ConfigError(
                    f"The checkpoint's source {self.source_name!r} has no statistics of "
                    f"sensor {sensor!r} (it has {sorted(own.inputs)})."
                )
            chosen = recorded.statistics.select(bands, f"Sensor {sensor!r} in the checkpoint")
            mean += chosen.mean
            std += chosen.std
        self.mean, self.std = mean, std
        self._sets = {}  # rebuilt with these statistics when the loaders ask

    def statistics(self) -> tuple[list[float], list[float]]:
        """Per-band (mean, std) of raw values: given, cached in ``root``, or computed."""
        names = self.band_names()
        if self.mean is not None and self.std is not None:
            if len(self.mean) != len(names) or len(self.std) != len(names):
                raise ValueError(
                    f"mean and std need one value per band ({len(names)}: {names}), got "
                    f"{len(self.mean)} and {len(self.std)}."
                )
            return list(self.mean), list(self.std)
        found = self.split_samples("train")
        if found is None:
            raise ValueError(f"{type(self).__name__} has no training split to compute statistics.")
        reader, indices = found
        key_data = [self.source_name, names, self.statistics_samples, len(indices), indices[:8]]
        key = hashlib.sha256(json.dumps(key_data).encode()).hexdigest()
        cache = self.root / f"stsun_statistics_{self.source_name}.json"
        if cache.exists():
            try:
                stored = json.loads(cache.read_text())
                if stored.get("key") == key:
                    return list(stored["mean"]), list(stored["std"])
            except (OSError, json.JSONDecodeError, KeyError):
                pass  # unreadable: recompute below
        mean, std = band_statistics(reader, indices, self.statistics_samples)
        try:
            write_json_atomic(cache, {"key": key, "bands": names, "mean": mean, "std": std})
        except OSError as error:
            log.warning(
                "Cannot cache band statistics in %s (%s); keeping them in memory.", cache, error
            )
        self.mean, self.std = mean, std
        return mean, std

    # --- Datasets ------------------------------------------------------------------

    def batch_spec(self) -> BatchSpec:
        """What every batch of this source shares, with rows from :attr:`vocabularies`."""
        metadata = [get_sensor(sensor).metadata(bands) for sensor, bands in self.band_inputs()]
        mean, std = self.statistics()
        vocab = self.vocabularies
        return BatchSpec(
            source=self.source_name,
            task_row=vocab["tasks"].index(self.task),
            category_rows=tuple(vocab["categories"].index(c) for c in self.category_names),
            outputs=self.output_mode,
            gsd_m=self.gsd_m,
            wavelength_nm=torch.cat([m["wavelength_nm"] for m in metadata]),
            bandwidth_nm=torch.cat([m["bandwidth_nm"] for m in metadata]),
            modality=torch.cat([m["modality"] for m in metadata]),
            mean=torch.tensor(mean, dtype=torch.float32),
            std=torch.tensor(std, dtype=torch.float32),
            num_frames=self.num_frames(),
        )

    def num_frames(self) -> int | None:
        """Frames per item for series of varying length (None: keep each sample's T)."""
        return None

    def build_dataset(self, split: Split) -> Dataset[Batch]:
        """The dataset of one-item batches of ``split`` (empty if the split has no data)."""
        found = self.split_samples(split)
        if found is None or not found[1]:
            return _Empty()
        reader, indices = found
        if split == "train":
            return BenchmarkDataset(
                reader,
                indices,
                self.batch_spec(),
                self.patch_size,
                "random",
                self.augment,
                seed=self.seed,
            )
        return BenchmarkDataset(reader, indices, self.batch_spec(), self.eval_patch_size, "grid")

    def prepare_data(self) -> None:
        """Compute and cache the band statistics once (Lightning runs this on one rank)."""
        self.statistics()

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets the stage needs (rows from the current vocabularies)."""
        splits: dict[str | None, tuple[Split, ...]] = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            None: ("train", "val", "test"),
        }
        for split in splits.get(stage, ()):
            self._sets[split] = self.build_dataset(split)

    def datasets(self, split: Split) -> list[Dataset[Batch]]:
        """The one source's dataset of ``split`` (built on first use)."""
        if split not in self._sets:
            self._sets[split] = self.build_dataset(split)
        return [self._sets[split]]
