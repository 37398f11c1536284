"""Experiment 2 of the accuracy benchmarks: one joint network against one per source.

On every SpectralWorld source (GeoTIFFs read by
:class:`~stsun_lightning.data.datamodules.world.SpectralWorldDataModule`), at equal total
training steps N:

- joint: one STSUN trained for N steps on all sources (the project's ``StsunTask`` and
  Lightning ``Trainer``: batches homogeneous per source, sources mixed by temperature,
  losses balanced per task);
- STSUN specialists: one STSUN per source, N / S steps each (S sources), same recipe;
- U-Net specialists: one smp U-Net (ResNet-18) per source, N / S steps each, on the
  source's dates and bands stacked as channels (its own input width and class count;
  L1 for canopy height), trained by a plain loop with the same optimiser and schedule.

Each is scored on the validation scenes: mIoU for class sources, MAE (m) for canopy
height. The goal compares the mean mIoU over the class sources.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning import Trainer
from lightning.pytorch.callbacks import EMAWeightAveraging
from torch import Tensor, nn

from accuracy_train import UnetBaseline, fit
from stsun_lightning.batch import Batch
from stsun_lightning.data.datamodules.world import SpectralWorldDataModule
from stsun_lightning.tasks.losses import value_loss
from stsun_lightning.tasks.metrics import SourceMetrics
from stsun_lightning.tasks.module import StsunTask

__all__ = [
    "mean_miou",
    "parameter_rows",
    "specialists",
    "train_joint",
    "train_unet_specialist",
    "unified_vs_specialists",
    "world_datamodule",
]

MODEL = "stsun_tiny"
_LEARNING_RATE = 2e-3


def world_datamodule(
    root: Path,
    seed: int,
    scene_size: int,
    scenes: int,
    patch: int,
    batch: int,
    steps: int,
    sources: list[str] | None,
    val_scenes: int = 1,
    source_weights: dict[str, float] | None = None,
) -> SpectralWorldDataModule:
    """The world's datamodule: ``scenes`` per source, the last ``val_scenes`` held out.

    ``source_weights`` scale some sources' shares of the training batches (by name).
    """
    return SpectralWorldDataModule(
        root=str(root),
        seed=seed,
        scene_size=scene_size,
        scenes_per_source=scenes,
        val_scenes=val_scenes,
        source_names=sources,
        patch_size=patch,
        batch_size=batch,
        train_batches_per_epoch=steps,
        samples_per_scene=256,
        temperature=2.0,
        num_workers=0,
        source_weights=source_weights,
    )


def train_joint(
    datamodule: SpectralWorldDataModule,
    steps: int,
    seed: int,
    model_overrides: dict[str, Any] | None = None,
    task_options: dict[str, Any] | None = None,
    ema_decay: float | None = None,
) -> dict[str, Any]:
    """Train one STSUN for ``steps`` steps and validate it; metrics by source.

    Args:
        datamodule: the sources trained and validated on.
        steps: optimiser steps.
        seed: seed of the initialisation.
        model_overrides: options of the network over ``MODEL``'s preset.
        task_options: options of ``StsunTask`` over this recipe's (e.g. ``learning_rate``,
            ``loss_balance``).
        ema_decay: validate an exponential moving average of the weights with this decay
            (Lightning's ``EMAWeightAveraging``, updated every step) instead of the last
            weights.
    """
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")
    torch.manual_seed(seed)
    recipe: dict[str, Any] = dict(
        learning_rate=_LEARNING_RATE, warmup_steps=50, panel_every_n_epochs=10**6
    )
    task = StsunTask(
        MODEL,
        model_overrides=model_overrides,
        sources=datamodule.sources,
        **{**recipe, **(task_options or {})},
    )
    quiet: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer = Trainer(
        max_epochs=1,
        max_steps=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        gradient_clip_val=1.0,
        callbacks=[EMAWeightAveraging(decay=ema_decay)] if ema_decay is not None else None,
        **quiet,
    )
    start = time.perf_counter()
    trainer.fit(task, datamodule)
    seconds = time.perf_counter() - start
    (validated,) = Trainer(**quiet).validate(task, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in validated.items()}
    per_source = {}
    for source in datamodule.source_infos:
        key = "miou" if source.is_classification else "mae"
        per_source[source.name] = {key: round(metrics[f"val/{source.name}/{key}"], 4)}
        prefix = f"val/{source.name}/iou_"
        classes = {
            k[len(prefix) :]: round(v, 4) for k, v in metrics.items() if k.startswith(prefix)
        }
        if classes:  # IoU per class occurring in the held-out scenes
            per_source[source.name]["iou"] = classes
    return {
        "seconds": round(seconds, 1),
        "steps": steps,
        "scores": per_source,
        "parameters": _count(task.model),
    }


def _unet_loss(model: nn.Module, batch: Batch, classification: bool) -> Tensor:
    assert batch.target is not None
    output = model(batch.image)  # (B, K or 1, H, W)
    if classification:
        target = batch.target[:, 0]
        if not bool((target >= 0).any()):
            return output.sum() * 0.0
        return nn.functional.cross_entropy(output, target, ignore_index=-1)
    return value_loss(output[:, None], batch.target)


def train_unet_specialist(
    datamodule: SpectralWorldDataModule, steps: int, seed: int
) -> dict[str, Any]:
    """Train and score one U-Net on the single source of ``datamodule``."""
    (source,) = datamodule.source_infos
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    first = next(iter(loader))
    _, t, c, _, _ = first.image.shape
    torch.manual_seed(seed)
    model = UnetBaseline(t * c, len(source.categories) if source.is_classification else 1)
    batches = iter(loader)

    def loss(_: int) -> Tensor:
        nonlocal batches
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        return _unet_loss(model, batch, source.is_classification)

    model.train()
    training = fit(model, loss, steps, learning_rate=_LEARNING_RATE)
    metrics = SourceMetrics(source)
    model.eval()
    with torch.inference_mode():
        for batch in datamodule.val_dataloader():
            assert batch.target is not None
            output = model(batch.image)[:, None]  # (B, To=1, K or V=1, H, W)
            metrics.update(output, batch.target)
    computed = metrics.compute()
    key = "miou" if source.is_classification else "mae"
    return {
        "seconds": round(training["seconds"], 1),
        "steps": steps,
        "scores": {source.name: {key: round(float(computed[key]), 4)}},
        "parameters": _count(model),
    }


def specialists(
    train: Callable[[SpectralWorldDataModule, int, int], dict[str, Any]],
    root: Path,
    names: list[str],
    seed: int,
    scene_size: int,
    scenes_per_source: int,
    patch: int,
    batch: int,
    steps_each: int,
    val_scenes: int = 1,
) -> dict[str, Any]:
    """One network per source, each trained by ``train`` for ``steps_each`` steps.

    Args:
        train: :func:`train_joint` (STSUN specialists) or the U-Net's loop.
        root: cache folder of the world; each source's own world goes to ``root / name``.
        names: the sources.
        seed: seed of the world, the sampling and the initialisations.
        scene_size: side of each scene in pixels.
        scenes_per_source: scenes per source, the held-out ones included.
        patch: training patch side (a multiple of 32 for the U-Net).
        batch: patches per batch.
        steps_each: optimiser steps of each specialist.
        val_scenes: held-out scenes per source (the last of ``scenes_per_source``).

    Returns:
        ``{"seconds", "scores", "parameters"}`` summed or gathered over the sources.
    """
    family: dict[str, Any] = {"seconds": 0.0, "scores": {}, "parameters": 0}
    for name in names:
        data = world_datamodule(
            root / name, seed, scene_size, scenes_per_source, patch, batch, steps_each, [name],
            val_scenes,
        )  # fmt: skip
        result = train(data, steps_each, seed)
        family["seconds"] = round(family["seconds"] + result["seconds"], 1)
        family["scores"].update(result["scores"])
        family["parameters"] += result["parameters"]
    return family


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_rows(counts: dict[str, int]) -> list[dict[str, Any]]:
    """The rows of the parameters in all (``{"joint", "stsun_specialists", "unet_specialists"}``)."""
    return [
        {
            "experiment": "unified",
            "setting": "parameters in all",
            "metric": "parameters (joint STSUN)",
            "value": counts["joint"],
            "baseline": label,
            "baseline_value": counts[key],
            "goal": "(detail)",
            "met": None,
        }
        for key, label in (
            ("stsun_specialists", "STSUN specialists"),
            ("unet_specialists", "U-Net specialists"),
        )
    ]


def mean_miou(scores: dict[str, dict[str, float]]) -> float:
    values = [s["miou"] for s in scores.values() if "miou" in s]
    return sum(values) / len(values) if values else math.nan


def unified_vs_specialists(
    root: Path,
    seed: int,
    scene_size: int,
    scenes_per_source: int,
    patch: int,
    batch: int,
    total_steps: int,
) -> dict[str, Any]:
    """Run experiment 2.

    Args:
        root: cache folder of the world (generated on first use).
        seed: seed of the world, the sampling and the initialisations.
        scene_size: side of each scene in pixels.
        scenes_per_source: scenes per source (the last one validates).
        patch: training patch side (a multiple of 32 for the U-Net).
        batch: patches per batch.
        total_steps: N, the steps of the joint network and of each family of specialists.

    Returns:
        ``{"rows", "joint", "stsun_specialists", "unet_specialists", "steps_each"}``.
    """
    joint_data = world_datamodule(
        root / "all", seed, scene_size, scenes_per_source, patch, batch, total_steps, None
    )
    names = [s.name for s in joint_data.source_infos]
    each = max(1, total_steps // len(names))
    joint = train_joint(joint_data, total_steps, seed)
    world = (root, names, seed, scene_size, scenes_per_source, patch, batch, each)
    stsun_specialists = specialists(train_joint, *world)
    unets = specialists(train_unet_specialist, *world)
    joint_mean = mean_miou(joint["scores"])
    rows = []
    for family, label in (
        (stsun_specialists, "STSUN specialists"),
        (unets, "U-Net specialists"),
    ):
        base = mean_miou(family["scores"])
        rows.append(
            {
                "experiment": "unified",
                "setting": f"mean mIoU over the class sources, {total_steps} steps in all",
                "metric": "mIoU (joint STSUN)",
                "value": round(joint_mean, 4),
                "baseline": f"{label} ({each} steps each)",
                "baseline_value": round(base, 4),
                "goal": ">= baseline",
                "met": joint_mean >= base,
            }
        )
    for name in names:
        key = next(iter(joint["scores"][name]))
        for family, label in (
            (stsun_specialists, "STSUN specialist"),
            (unets, "U-Net specialist"),
        ):
            rows.append(
                {
                    "experiment": "unified",
                    "setting": name,
                    "metric": "MAE (m, lower is better)" if key == "mae" else "mIoU",
                    "value": joint["scores"][name][key],
                    "baseline": label,
                    "baseline_value": family["scores"][name][key],
                    "goal": "(detail)",
                    "met": None,
                }
            )
    counts = {
        "joint": joint["parameters"],
        "stsun_specialists": stsun_specialists["parameters"],
        "unet_specialists": unets["parameters"],
    }
    return {
        "rows": rows + parameter_rows(counts),
        "parameters": counts,
        "steps_each": each,
        "joint": joint,
        "stsun_specialists": stsun_specialists,
        "unet_specialists": unets,
        "world": {
            "root": str(root),
            "seed": seed,
            "scene_size": scene_size,
            "scenes_per_source": scenes_per_source,
            "patch": patch,
            "batch": batch,
        },
    }
