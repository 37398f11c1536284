"""Patches of labelled scenes, each a one-item :class:`~stsun_lightning.batch.Batch`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from stsun_lightning.batch import Batch
from stsun_lightning.data.datasets.items import target_tensor, window_batch
from stsun_lightning.data.datasets.scenes import Scene
from stsun_lightning.data.sources import SourceInfo
from stsun_lightning.data.spec import OutputKindName
from stsun_lightning.data.transforms.augment import augment_patch

__all__ = ["PatchRef", "ScenePatchDataset"]


@dataclass(frozen=True)
class PatchRef:
    """Where a patch lies: its scene and its top-left corner in the scene's grid CRS."""

    scene: int
    left: float
    top: float


class ScenePatchDataset(Dataset[Batch]):
    """Patches of scenes of one source, read through their series, with targets.

    Args:
        scenes: the scenes (each with labels).
        source: the source (task, categories or variables).
        vocabularies: the rows of tasks, categories and variables that batches index.
        patches: where each patch lies.
        patch_size: side of a patch in pixels.
        outputs: what the labels describe (``state``, ``change``, ``aggregate``,
            ``per_date``).
        augment: random flips and 90° rotations.
        seed: seed of the augmentation.
    """

    def __init__(
        self,
        scenes: Sequence[Scene],
        source: SourceInfo,
        vocabularies: Mapping[str, Sequence[str]],
        patches: Sequence[PatchRef],
        patch_size: int,
        outputs: OutputKindName,
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        self.scenes, self.source, self.patches = list(scenes), source, list(patches)
        self.patch_size, self.outputs = patch_size, outputs
        self.augment, self.seed = augment, seed
        self.task_row = list(vocabularies["tasks"]).index(source.task)
        kind = "categories" if source.is_classification else "variables"
        names = source.categories if source.is_classification else source.variables
        self.rows = [list(vocabularies[kind]).index(n) for n in names]
        self._templates: dict[int, Batch] = {}  # per scene, an item with every frame real

    def __len__(self) -> int:
        return len(self.patches)

    def bounds(self, index: int) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of patch ``index`` in its scene's grid CRS."""
        ref = self.patches[index]
        rx, ry = self.scenes[ref.scene].series.grid.res
        p = self.patch_size
        return ref.left, ref.top - p * ry, ref.left + p * rx, ref.top

    def __getitem__(self, index: int) -> Batch:
        ref = self.patches[index]
        scene = self.scenes[ref.scene]
        bounds = self.bounds(index)
        window = scene.series.read(bounds)
        image, valid = window.image, window.valid
        target = scene.labels.read(bounds) if scene.labels is not None else None
        if target is not None:  # no label where the inputs have no data
            target[..., ~valid] = -1 if self.source.is_classification else np.nan
        if self.augment:
            image, valid, target = augment_patch((self.seed, 7, index), image, valid, target)
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
