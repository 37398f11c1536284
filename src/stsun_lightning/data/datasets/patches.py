"""Patches of labelled scenes, each a one-item :class:`~stsun_lightning.batch.Batch`.

The patches are a fixed list (the evaluation grids) or random crops drawn afresh every
epoch (training: :class:`~stsun_lightning.data.samplers.crops.RandomCrops`); either way
item ``i`` of epoch ``e`` is a function of the seed, ``e`` and ``i`` alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from stsun_lightning.batch import Batch
from stsun_lightning.data.datasets.items import target_tensor, window_batch
from stsun_lightning.data.datasets.scenes import Scene
from stsun_lightning.data.samplers.epochs import EpochDataset, EpochIndex, item_rng, split_key
from stsun_lightning.data.sources import SourceInfo
from stsun_lightning.data.spec import OutputKindName
from stsun_lightning.data.transforms.augment import augment_patch
from stsun_lightning.data.transforms.coarsen import coarsen_batch

__all__ = ["PatchDraw", "PatchRef", "ScenePatchDataset"]

_FLIP_STREAM = 7


@dataclass(frozen=True)
class PatchRef:
    """Where a patch lies: its scene and its top-left corner in the scene's grid CRS.

    Attributes:
        scene: the patch's scene (a position in the dataset's scenes).
        left: the window's left edge in the grid CRS.
        top: its top edge.
        factor: grid pixels per patch pixel along each axis. A window of ``factor ×
            patch_size`` pixels a side is read and averaged down to the patch
            (:func:`~stsun_lightning.data.transforms.coarsen.coarsen_batch`): the same
            ground as a sensor with ``factor`` times the GSD sees it; 1 reads the patch.
    """

    scene: int
    left: float
    top: float
    factor: int = 1


class PatchDraw(Protocol):
    """Patches that differ by epoch (:class:`~stsun_lightning.data.samplers.crops.RandomCrops`)."""

    def __len__(self) -> int:
        """Patches per epoch."""
        ...

    def draw(self, epoch: int, index: int) -> PatchRef:
        """Patch ``index`` of ``epoch``."""
        ...


class ScenePatchDataset(EpochDataset[Batch]):
    """Patches of scenes of one source, read through their series, with targets.

    Indexed by ``EpochIndex(epoch, i)`` (or ``i``: epoch 0): random crops and flips are
    drawn from the seed, the epoch and ``i``, so every epoch sees others and the same
    epoch the same ones; a fixed list of patches ignores the epoch but for the flips.

    Args:
        scenes: the scenes (each with labels).
        source: the source (task, categories or variables).
        vocabularies: the rows of tasks, categories and variables that batches index.
        patches: where each patch lies: a fixed list (evaluation grids), or random
            crops drawn per epoch (training).
        patch_size: side of a patch in pixels.
        outputs: what the labels describe (``state``, ``change``, ``aggregate``,
            ``per_date``).
        augment: random flips and 90° rotations, drawn per epoch and item.
        seed: seed of the augmentation.
    """

    def __init__(
        self,
        scenes: Sequence[Scene],
        source: SourceInfo,
        vocabularies: Mapping[str, Sequence[str]],
        patches: Sequence[PatchRef] | PatchDraw,
        patch_size: int,
        outputs: OutputKindName,
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        self.scenes, self.source = list(scenes), source
        self.patches = list(patches) if isinstance(patches, Sequence) else patches
        self.patch_size, self.outputs = patch_size, outputs
        self.augment, self.seed = augment, seed
        self.task_row = list(vocabularies["tasks"]).index(source.task)
        kind = "categories" if source.is_classification else "variables"
        names = source.categories if source.is_classification else source.variables
        self.rows = [list(vocabularies[kind]).index(n) for n in names]
        self._templates: dict[int, Batch] = {}  # per scene, an item with every frame real

    def __len__(self) -> int:
        return len(self.patches)

    def patch(self, epoch: int, index: int) -> PatchRef:
        """Where patch ``index`` lies in ``epoch``."""
        if isinstance(self.patches, list):
            return self.patches[index]
        return self.patches.draw(epoch, index)

    def bounds(self, key: int | EpochIndex) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of a patch in its scene's grid CRS.

        Args:
            key: ``EpochIndex(epoch, i)``, or ``i`` for epoch 0.
        """
        return self.window_bounds(self.patch(*split_key(key)))

    def window_bounds(self, ref: PatchRef) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of the window ``ref`` reads (``factor ×`` the patch)."""
        rx, ry = self.scenes[ref.scene].series.grid.res
        side = self.patch_size * ref.factor
        return ref.left, ref.top - side * ry, ref.left + side * rx, ref.top

    def item(self, epoch: int, index: int) -> Batch:
        """Patch ``index`` of ``epoch`` as a one-item batch (coarsened where its ref says)."""
        ref = self.patch(epoch, index)
        return coarsen_batch(self._read(ref, epoch, index), ref.factor)

    def _read(self, ref: PatchRef, epoch: int, index: int) -> Batch:
        """The window of ``ref`` at the grid's resolution, as a one-item batch."""
        scene = self.scenes[ref.scene]
        bounds = self.window_bounds(ref)
        window = scene.series.read(bounds)
        image, valid = window.image, window.valid
        target = scene.labels.read(bounds) if scene.labels is not None else None
        if target is not None:  # no label where the inputs have no data
            target[..., ~valid] = -1 if self.source.is_classification else np.nan
        if self.augment:
            rng = item_rng(self.seed, _FLIP_STREAM, epoch, index)
            image, valid, target = augment_patch(rng, image, valid, target)
        complete = bool(window.band_mask.all())
        template = self._templates.get(ref.scene)
        if template is not None and complete:
            # Only the window's arrays differ from the template (metadata, dates, rows).
            return dataclasses.replace(
                template,
                image=torch.from_numpy(image)[None],
                valid_mask=torch.from_numpy(valid)[None],
                target=target_tensor(target, self.source.is_classification),
            )
        batch = window_batch(
            [scene.series.band_metadata],
            scene.gsd_m,
            scene.series.dates,
            image,
            valid,
            self.task_row,
            self.outputs,
            self.rows,
            self.source.is_classification,
            self.source.name,
            target,
            window.time_mask,
            window.band_mask,
        )
        if complete:
            self._templates[ref.scene] = batch
        return batch
