"""Accuracy on SpectralWorld, each experiment against a baseline, in one run.

Run from the repository root::

    python benchmarks/accuracy.py            # full (about an hour on 2 cores)
    python benchmarks/accuracy.py --quick    # CI (a few minutes; numbers only show it runs)
    python benchmarks/accuracy.py --only unseen_sensor new_classes
    python benchmarks/accuracy.py --seed 1 --name accuracy_seed1   # one seed of several;
    python benchmarks/accuracy_report.py --merge benchmarks/results/accuracy_seed?.json

Five experiments, all with ``stsun_tiny`` trained from scratch by plain PyTorch loops
(:mod:`accuracy_train`), every random draw seeded from ``--seed``:

1. ``unseen_sensor``: trained on Sentinel-2 land cover at 10 m; tested on the same kind
   of landscapes seen through Landsat-8's bands (B1-B7, and with B10-B11; never seen)
   and through Sentinel-2 with bands removed. A variant is trained with virtual sensors
   (:mod:`accuracy_virtual`; ``--no-virtual-sensors`` skips it). MIoU relative to the
   in-sensor mIoU (goal >= 0.9; 0.85 with the four 10 m bands only), against the same
   network with band-index embeddings
   (``create_model(..., band_encoding="index")``). The index network gets removed bands
   masked in place (its most favourable reading); ours gets them dropped.
2. ``unified``: one network on all seven SpectralWorld sources against one network per
   source (STSUN and smp's U-Net), at equal total training steps (:mod:`accuracy_unified`).
3. ``new_classes``: the network of 1 frozen; the fine class set (building and road are
   new names) learnt from a few labelled patches by training only the two new category
   rows, against training a new 1×1 head on the frozen pixel features.
4. ``resolution``: the network of 1 (trained at 10 m) tested at 20 m and 30 m GSD,
   against smp's U-Net trained on the same patches; and the same network trained with
   coarse crops (half its windows drawn 2 or 3 times larger and averaged down, as
   ``data.coarsen=0.5`` does), against the network of 1.
5. ``time_series``: crop types trained on random series of 4 to 12 dates; tested on
   2, 6 and 24 dates with a 60-day gap, against the same network trained on a fixed
   8-date schedule.

Experiments 1, 3, 4 and 5 render landscapes in memory (:mod:`accuracy_data`); 2 reads
the GeoTIFF world through its datamodule. Results: ``benchmarks/results/accuracy.{json,md,png}``
(``accuracy_quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its threads

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import finetune
from accuracy_data import (
    FARMLAND_SPEC,
    LANDCOVER_SPEC,
    Stack,
    date_pool,
    drop_bands,
    make_batch,
    make_layouts,
    mask_bands,
    random_crops,
    render_labels,
    render_stack,
    select_dates,
    standardise,
    subsample_dates,
)
from accuracy_report import write_report
from accuracy_train import UnetBaseline, fit, scores
from accuracy_unified import unified_vs_specialists
from accuracy_virtual import fixed_statistics, render_surfaces, virtual_batch
from stsun_lightning.batch import Batch, OutputKind, collate_batches
from stsun_lightning.data.datasets.world.layout import CROP_TYPES
from stsun_lightning.data.datasets.world.sources import COARSE_CLASSES, FINE_CLASSES
from stsun_lightning.data.datasets.world.virtual import VirtualSensors
from stsun_lightning.data.sensors import get_sensor
from stsun_lightning.data.transforms.band_dropout import drop_random_bands
from stsun_lightning.data.transforms.coarsen import (
    DEFAULT_FACTORS,
    block_majority,
    coarsen_batch,
    draw_factor,
)
from stsun_lightning.models import Stsun
from stsun_lightning.models.factory import create_model
from stsun_lightning.tasks.losses import category_loss
from stsun_lightning.tasks.metrics import ClassMetrics

RESULTS = Path(__file__).resolve().parent / "results"
EXPERIMENTS = ("unseen_sensor", "unified", "new_classes", "resolution", "time_series")
LANDSAT8_TESTS = {
    "Landsat-8 (B1-B7)": ("B1", "B2", "B3", "B4", "B5", "B6", "B7"),
    "Landsat-8 (B1-B7, B10, B11)": ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B10", "B11"),
}
REMOVALS = {
    "Sentinel-2 without B01, B09": ("B01", "B09"),
    "Sentinel-2 without SWIR (B11, B12)": ("B11", "B12"),
    "Sentinel-2 10 m bands only (B02-B04, B08)": (
        "B01", "B05", "B06", "B07", "B8A", "B09", "B11", "B12",
    ),
}  # fmt: skip
TRANSFER_GOALS = {"Sentinel-2 10 m bands only (B02-B04, B08)": 0.85}
"""Experiment 1's goals other than 0.90 (of the in-sensor mIoU): four of thirteen bands."""
FIXED_SCHEDULE_DOY = (40, 90, 120, 150, 180, 210, 245, 290)
"""The 8-date schedule of the fixed-series baseline (that of SpectralWorld's s2_crops)."""
TEST_SERIES = (2, 6, 24)
GAP_DAYS = 60.0
LANDCOVER_DATE = dt.date(2021, 6, 29)
MODEL = "stsun_tiny"
BAND_DROPOUT = 0.5
"""Share of experiment 1's training windows whose bands are thinned to a random subset."""
COARSE_CROPS = 0.5
"""Share of the windows drawn 2 or 3 times larger and averaged down for experiment 4's
coarse-crops network (the datamodules' ``data.coarsen``; ``transfer_ablation.py`` picks it)."""
COARSE_CROPS_ROWS = f"trained with coarse crops ({COARSE_CROPS})"
"""How experiment 4's rows name the coarse-crops network."""
VIRTUAL_SENSORS_ROWS = "trained with virtual sensors"
"""How experiment 4's rows name experiment 1's virtual-sensor variant."""
VIRTUAL_SENSORS = VirtualSensors(probability=0.5, jitter_nm=5.0, jitter_fwhm=0.1)
"""Experiment 1's virtual-sensor variant: half of the windows through a random sensor
(3-13 bands, 400-2,400 nm outside the water-vapour bands, FWHM 10-200 nm, 10-20 m GSD),
band centres jittered by 5 nm and FWHMs by 10 % in the declared metadata."""


@dataclass(frozen=True)
class Config:
    """Sizes and steps of one mode; saved in the results with the seed."""

    mode: str
    seed: int
    extent_m: float
    train_scenes: int
    val_scenes: int
    patch: int
    batch: int
    steps: int
    fewshot_patches: int
    fewshot_steps: int
    series_patch: int
    series_batch: int
    series_steps: int
    series_draws: int
    date_step_days: int
    world_scene_size: int
    world_scenes: int
    world_patch: int
    world_batch: int
    joint_steps: int
    virtual_sensors: bool = True
    virtual_probability: float = VIRTUAL_SENSORS.probability
    virtual_gsd_factor: float = VIRTUAL_SENSORS.gsd_factor[1]

    @property
    def virtual(self) -> VirtualSensors:
        """Experiment 1's virtual sensors with this run's probability and GSD range."""
        return dataclasses.replace(
            VIRTUAL_SENSORS,
            probability=self.virtual_probability,
            gsd_factor=(1.0, self.virtual_gsd_factor),
        )


def make_config(
    quick: bool,
    seed: int,
    steps: int | None = None,
    virtual_sensors: bool = True,
    virtual_probability: float = VIRTUAL_SENSORS.probability,
    virtual_gsd_factor: float = VIRTUAL_SENSORS.gsd_factor[1],
) -> Config:
    """The configuration of the quick (CI) or full mode.

    Args:
        quick: the CI mode.
        seed: seed of every draw.
        steps: training steps of experiments 1, 3 and 4 instead of the mode's.
        virtual_sensors: train experiment 1's virtual-sensor variant.
        virtual_probability: share of its windows seen through a virtual sensor.
        virtual_gsd_factor: its coarsest virtual GSD over the source's.
    """
    if quick:
        cfg = Config(
            "quick", seed, 960.0, 3, 2, 48, 4, 40, 4, 20, 32, 4, 25, 1, 8, 64, 2, 32, 4, 70
        )
    else:
        cfg = Config(
            "full", seed, 1920.0, 10, 4, 64, 8, 1000, 16, 300, 48, 8, 600, 3, 8, 128, 3, 64, 8,
            1750,
        )  # fmt: skip
    return dataclasses.replace(
        cfg,
        steps=cfg.steps if steps is None else steps,
        virtual_sensors=virtual_sensors,
        virtual_probability=virtual_probability,
        virtual_gsd_factor=virtual_gsd_factor,
    )


def _seeded_model(seed: int, **kwargs: Any) -> Stsun:
    torch.manual_seed(seed)
    return create_model(MODEL, **kwargs)


def _predict(model: Stsun, batch: Batch) -> Tensor:
    """(B, H, W) classes of the single output slot."""
    output = model(batch).logits
    assert output is not None
    return output[:, 0].argmax(1)


@torch.inference_mode()
def score_stsun(
    model: Stsun,
    stack: Stack,
    task: str,
    output: OutputKind = OutputKind.STATE,
    transform: Callable[[Batch], Batch] | None = None,
    frames: Sequence[Sequence[int]] | None = None,
    labels: Tensor | None = None,
    pool: int = 1,
) -> dict[str, float]:
    """Scores of ``model`` on every scene of ``stack``, whole.

    Args:
        model: the network (its category rows must include the stack's classes).
        stack: standardised scenes.
        task: task name.
        output: the output slot's kind.
        transform: applied to each scene's batch (band removal).
        frames: per evaluation, the dates kept of scene ``i % N`` (default: all, once).
        labels: (N, H / pool, W / pool) classes scored against (default ``stack.label``).
        pool: each map is pooled by majority over ``pool × pool`` blocks first
            (:func:`~stsun_lightning.data.transforms.coarsen.block_majority`).
    """
    model.eval()
    rows = model.category_embedding.rows(stack.classes).tolist()
    task_row = model.task_embedding.vocabulary.index(task)
    k = len(stack.classes)
    metrics = ClassMetrics(stack.classes)
    n = stack.image.shape[0]
    plans = [list(range(stack.image.shape[1]))] * n if frames is None else frames
    for i, keep in enumerate(plans):
        s = i % n
        image, dates = select_dates(stack.image[s : s + 1], stack.dates[s : s + 1], keep)
        batch = make_batch(
            image, dates, stack.bands, stack.gsd_m, task_row, k, output=output, category_rows=rows
        )
        if transform is not None:
            batch = transform(batch)
        prediction = _predict(model, batch)
        if pool > 1:
            prediction = block_majority(prediction, pool, k)
        metrics.update(prediction, (stack.label if labels is None else labels)[s : s + 1])
    return scores(metrics)


@torch.inference_mode()
def score_unet(model: nn.Module, stack: Stack) -> dict[str, float]:
    """Scores of a U-Net on every scene of ``stack``, whole."""
    model.eval()
    metrics = ClassMetrics(stack.classes)
    for s in range(stack.image.shape[0]):
        prediction = model(stack.image[s : s + 1]).argmax(1)
        metrics.update(prediction, stack.label[s : s + 1])
    return scores(metrics)


def train_stsun(
    model: Stsun,
    stack: Stack,
    cfg: Config,
    task: str,
    seed: int,
    output: OutputKind = OutputKind.STATE,
    frames: Callable[[torch.Generator], list[int]] | None = None,
    patch: int | None = None,
    batch_size: int | None = None,
    steps: int | None = None,
    band_dropout: float = 0.0,
    coarsen: float = 0.0,
    coarsen_windows: bool = False,
) -> dict[str, float]:
    """Train ``model`` on random windows of ``stack``; the windows depend on ``seed`` only.

    Args:
        model: the network.
        stack: standardised training scenes.
        cfg: the mode's configuration.
        task: task name.
        seed: seed of the windows (and of the dates kept).
        output: the output slot's kind.
        frames: draws the dates kept for a batch (default: all).
        patch: window side (default ``cfg.patch``).
        batch_size: windows per batch (default ``cfg.batch``).
        steps: optimiser steps (default ``cfg.steps``).
        band_dropout: share of windows whose bands are thinned to a random subset
            (:func:`~stsun_lightning.data.transforms.band_dropout.drop_random_bands`, the option
            ``StsunTask(band_dropout=...)`` applies); drawn from ``seed`` too.
        coarsen: share of batches shown at 2 or 3 times the GSD
            (:func:`~stsun_lightning.data.transforms.coarsen.draw_factor`, then
            :func:`~stsun_lightning.data.transforms.coarsen.coarsen_batch`); drawn from
            ``seed`` too.
        coarsen_windows: each window draws its own factor ``f`` (as the datamodules'
            ``RandomCrops`` does per crop) and is cut ``f`` times larger, then averaged
            down, so every step sees ``patch²`` pixels per window and a batch mixes GSDs;
            only the factors whose windows fit the scenes are drawn, and ``frames`` must
            be None. False draws one factor per batch and averages the drawn windows down
            themselves (``patch² / f²`` pixels), the ablation of drawing them larger.
    """
    model.train()
    generator = torch.Generator().manual_seed(seed)
    rows = model.category_embedding.rows(stack.classes).tolist()
    task_row = model.task_embedding.vocabulary.index(task)
    side, count = patch or cfg.patch, batch_size or cfg.batch
    scene_side = min(stack.image.shape[-2:])
    window_factors = [f for f in DEFAULT_FACTORS if side * f <= scene_side]
    if coarsen_windows and coarsen > 0 and (not window_factors or frames is not None):
        raise ValueError(
            f"coarse windows need scenes of at least {2 * side} px a side (twice the "
            f"window; got {scene_side} px) and all dates (frames=None)."
        )

    def windows(size: int, number: int) -> Batch:
        image, dates, label = random_crops(stack, size, number, generator)
        if frames is not None:
            image, dates = select_dates(image, dates, frames(generator))
        return make_batch(
            image, dates, stack.bands, stack.gsd_m, task_row, len(rows), label, output, rows
        )

    def loss(_: int) -> Tensor:
        if coarsen_windows:
            factors = [draw_factor(coarsen, window_factors, generator) for _ in range(count)]
            batch = collate_batches([coarsen_batch(windows(side * f, 1), f) for f in factors])
        else:  # the draws in the order of runs before coarse windows existed
            batch = windows(side, count)
            batch = coarsen_batch(batch, draw_factor(coarsen, generator=generator))
        batch = drop_random_bands(batch, band_dropout, generator=generator)
        logits = model(batch).logits
        assert logits is not None and batch.target is not None
        return category_loss(logits, batch.target)

    return fit(model, loss, steps or cfg.steps)


def world_root(cfg: Config) -> Path:
    """The default cache folder of the SpectralWorld of ``cfg``'s mode and seed.

    One world per mode and seed: seeds run as separate commands never regenerate each
    other's world, and a rerun of a seed (or another script on the same seed) reuses it.
    """
    return Path("data") / f"accuracy_world_{cfg.mode}_seed{cfg.seed}"


def train_unet(model: nn.Module, stack: Stack, cfg: Config, seed: int) -> dict[str, float]:
    """Train a U-Net on the same random windows as :func:`train_stsun` with ``seed``."""
    model.train()
    generator = torch.Generator().manual_seed(seed)
    ce = nn.CrossEntropyLoss(ignore_index=-1)

    def loss(_: int) -> Tensor:
        image, _dates, label = random_crops(stack, cfg.patch, cfg.batch, generator)
        if not bool((label >= 0).any()):
            return model(image).sum() * 0.0
        return ce(model(image), label)

    return fit(model, loss, cfg.steps)


def _row(
    experiment: str,
    setting: str,
    metric: str,
    value: float,
    baseline: str,
    baseline_value: float | None,
    goal: str,
    met: bool | None,
) -> dict[str, Any]:
    return {
        "experiment": experiment,
        "setting": setting,
        "metric": metric,
        "value": round(value, 4),
        "baseline": baseline,
        "baseline_value": None if baseline_value is None else round(baseline_value, 4),
        "goal": goal,
        "met": met,
    }


def _goal(label: str) -> str:
    """Experiment 1's goal for ``label``, as the rows write it (``>= 0.90``)."""
    return f">= {TRANSFER_GOALS.get(label, 0.9):.2f}"


def _ratio(value: float, reference: float) -> float:
    return value / reference if reference > 0 else 0.0


def landcover(cfg: Config, wanted: set[str]) -> dict[str, Any]:
    """Experiments 1 (unseen sensor), 3 (new class set) and 4 (other resolutions)."""
    s2 = get_sensor("sentinel2_l2a").bands
    train_layouts = make_layouts(cfg.seed, cfg.train_scenes, cfg.extent_m, LANDCOVER_SPEC)
    val_layouts = make_layouts(cfg.seed + 1000, cfg.val_scenes, cfg.extent_m, LANDCOVER_SPEC)
    date = [LANDCOVER_DATE]
    train_raw = render_stack(train_layouts, s2, 10.0, date, "coarse", cfg.seed)
    val_raw = render_stack(val_layouts, s2, 10.0, date, "coarse", cfg.seed + 1)
    train, s2_stats = standardise(train_raw)
    val, _ = standardise(val_raw, s2_stats)
    task = "semantic_segmentation"
    result: dict[str, Any] = {"rows": [], "training": {}}
    virtual: Stsun | None = None  # experiment 1's virtual-sensor variant, where trained

    metadata = _seeded_model(cfg.seed, categories=COARSE_CLASSES)
    result["training"]["stsun_metadata"] = train_stsun(
        metadata, train, cfg, task, cfg.seed, band_dropout=BAND_DROPOUT
    )
    in_sensor = score_stsun(metadata, val, task)
    result["scores"] = {"stsun_metadata": {"sentinel2_10m": in_sensor}}
    result["band_dropout"] = BAND_DROPOUT

    if "unseen_sensor" in wanted:
        index = _seeded_model(cfg.seed, categories=COARSE_CLASSES, band_encoding="index")
        result["training"]["stsun_index"] = train_stsun(
            index, train, cfg, task, cfg.seed, band_dropout=BAND_DROPOUT
        )
        index_in = score_stsun(index, val, task)
        result["scores"]["stsun_index"] = {"sentinel2_10m": index_in}
        plain = _seeded_model(cfg.seed, categories=COARSE_CLASSES)
        result["training"]["stsun_metadata_no_dropout"] = train_stsun(
            plain, train, cfg, task, cfg.seed
        )
        plain_in = score_stsun(plain, val, task)
        result["scores"]["stsun_metadata_no_dropout"] = {"sentinel2_10m": plain_in}
        tests: list[tuple[str, Stack, Callable[[Batch], Batch] | None, Any]] = []
        raw_tests: dict[str, Stack] = {}  # unstandardised, for the fixed normalisation
        for label, l8_names in LANDSAT8_TESTS.items():
            l8 = get_sensor("landsat8_oli_tirs").select(l8_names)
            l8_train = render_stack(train_layouts, l8, 10.0, date, "coarse", cfg.seed)
            raw_tests[label] = render_stack(val_layouts, l8, 10.0, date, "coarse", cfg.seed + 1)
            val_l8, _ = standardise(raw_tests[label], standardise(l8_train)[1])
            tests.append((label, val_l8, None, None))
        names = [b.name for b in s2]
        for label, removed in REMOVALS.items():
            positions = [names.index(n) for n in removed]
            raw_tests[label] = val_raw
            tests.append(
                (
                    label,
                    val,
                    lambda b, p=positions: drop_bands(b, p),
                    lambda b, p=positions: mask_bands(b, p),
                )
            )
        rows = [
            _row(
                "unseen_sensor",
                "Sentinel-2 (in-sensor reference)",
                "mIoU",
                in_sensor["miou"],
                "band-index embeddings",
                index_in["miou"],
                "reference",
                None,
            )
        ]
        details = [
            _row(
                "unseen_sensor",
                "Sentinel-2 (in-sensor reference)",
                "mIoU",
                in_sensor["miou"],
                "STSUN trained without band dropout",
                plain_in["miou"],
                "(detail)",
                None,
            )
        ]
        for label, stack, ours_transform, index_transform in tests:
            ours = score_stsun(metadata, stack, task, transform=ours_transform)
            theirs = score_stsun(index, stack, task, transform=index_transform)
            without = score_stsun(plain, stack, task, transform=ours_transform)
            result["scores"]["stsun_metadata"][label] = ours
            result["scores"]["stsun_index"][label] = theirs
            result["scores"]["stsun_metadata_no_dropout"][label] = without
            ratio = _ratio(ours["miou"], in_sensor["miou"])
            rows.append(
                _row(
                    "unseen_sensor",
                    label,
                    "mIoU / in-sensor mIoU",
                    ratio,
                    "band-index embeddings",
                    _ratio(theirs["miou"], index_in["miou"]),
                    _goal(label),
                    ratio >= TRANSFER_GOALS.get(label, 0.9),
                )
            )
            details.append(
                _row(
                    "unseen_sensor",
                    label,
                    "mIoU / in-sensor mIoU",
                    ratio,
                    "STSUN trained without band dropout",
                    _ratio(without["miou"], plain_in["miou"]),
                    "(detail)",
                    None,
                )
            )
        result["rows"] += rows + details
        if cfg.virtual_sensors:
            virtual_rows, virtual = virtual_sensor_rows(
                cfg, result, train_layouts, train_raw, val_raw, tests, raw_tests, task
            )
            result["rows"] += virtual_rows

    if "resolution" in wanted:
        unet = _seeded_unet(cfg.seed, len(s2), len(COARSE_CLASSES))
        result["training"]["unet"] = train_unet(unet, train, cfg, cfg.seed)
        unet_10 = score_unet(unet, val)
        result["scores"]["unet"] = {"sentinel2_10m": unet_10}
        result["rows"].append(
            _row(
                "resolution",
                "10 m (training GSD, reference)",
                "mIoU",
                in_sensor["miou"],
                "U-Net (ResNet-18)",
                unet_10["miou"],
                "reference",
                None,
            )
        )
        coarse = _seeded_model(cfg.seed, categories=COARSE_CLASSES)
        result["training"]["stsun_coarse_crops"] = train_stsun(
            coarse,
            train,
            cfg,
            task,
            cfg.seed,
            band_dropout=BAND_DROPOUT,
            coarsen=COARSE_CROPS,
            coarsen_windows=True,
        )
        coarse_10 = score_stsun(coarse, val, task)
        result["scores"]["stsun_coarse_crops"] = {"sentinel2_10m": coarse_10}
        result["rows"].append(
            _row(
                "resolution",
                f"10 m, {COARSE_CROPS_ROWS}",
                "mIoU",
                coarse_10["miou"],
                "STSUN trained at 10 m only",
                in_sensor["miou"],
                "reference",
                None,
            )
        )
        for gsd in (20.0, 30.0):
            raw = render_stack(val_layouts, s2, gsd, date, "coarse", cfg.seed + 1)
            stack, _ = standardise(raw, s2_stats)
            ours, theirs = score_stsun(metadata, stack, task), score_unet(unet, stack)
            key = f"sentinel2_{gsd:.0f}m"
            result["scores"]["stsun_metadata"][key] = ours
            result["scores"]["unet"][key] = theirs
            ratio = _ratio(ours["miou"], in_sensor["miou"])
            result["rows"].append(
                _row(
                    "resolution",
                    f"{gsd:.0f} m",
                    "mIoU / 10 m mIoU",
                    ratio,
                    "U-Net (ResNet-18)",
                    _ratio(theirs["miou"], unet_10["miou"]),
                    ">= 0.90",
                    ratio >= 0.9,
                )
            )
            own = result["scores"]["stsun_coarse_crops"]
            result["rows"].append(
                _variant_resolution_row(coarse, own, COARSE_CROPS_ROWS, stack, gsd, ratio)
            )
            if virtual is not None:
                own = result["scores"]["stsun_virtual_sensors"]
                fixed = standardise(raw, fixed_statistics(raw.bands))[0]
                result["rows"].append(
                    _variant_resolution_row(virtual, own, VIRTUAL_SENSORS_ROWS, fixed, gsd, ratio)
                )

    if "new_classes" in wanted:
        result.update(new_classes(cfg, metadata, train, train_layouts, val, val_layouts))
    return result


def train_virtual(
    model: Stsun, surfaces: Any, train: Stack, cfg: Config, task: str
) -> dict[str, float]:
    """Train on windows seen through virtual sensors or Sentinel-2 (:mod:`accuracy_virtual`)."""
    model.train()
    generator = torch.Generator().manual_seed(cfg.seed)
    rows = model.category_embedding.rows(train.classes).tolist()
    task_row = model.task_embedding.vocabulary.index(task)

    def loss(step: int) -> Tensor:
        batch = virtual_batch(
            surfaces, train, cfg.virtual, cfg.patch, cfg.batch, cfg.seed, step, task_row, rows
        )
        batch = drop_random_bands(batch, BAND_DROPOUT, generator=generator)
        logits = model(batch).logits
        assert logits is not None and batch.target is not None
        return category_loss(logits, batch.target)

    return fit(model, loss, cfg.steps)


def virtual_sensor_rows(
    cfg: Config,
    result: dict[str, Any],
    train_layouts: Sequence[Any],
    train_raw: Stack,
    val_raw: Stack,
    tests: Sequence[tuple[str, Stack, Callable[[Batch], Batch] | None, Any]],
    raw_tests: dict[str, Stack],
    task: str,
) -> tuple[list[dict[str, Any]], Stsun]:
    """Experiment 1's variant: trained with virtual sensors, every sensor normalised alike.

    Every input, Sentinel-2 and Landsat-8 alike, is normalised with the fixed
    reflectance statistics (a virtual sensor has no statistics of its own).

    Returns:
        The result rows, and the trained network (experiment 4 scores it at 20 m and 30 m).
    """
    s2 = train_raw.bands
    train, _ = standardise(train_raw, fixed_statistics(s2))
    val, _ = standardise(val_raw, fixed_statistics(s2))
    surfaces = render_surfaces(train_layouts, 10.0, LANDCOVER_DATE)
    model = _seeded_model(cfg.seed, categories=COARSE_CLASSES)
    result["training"]["stsun_virtual_sensors"] = train_virtual(model, surfaces, train, cfg, task)
    in_sensor = score_stsun(model, val, task)
    scores_out = result["scores"]["stsun_virtual_sensors"] = {"sentinel2_10m": in_sensor}
    result["virtual_sensors"] = dataclasses.asdict(cfg.virtual)
    plain = result["scores"]["stsun_metadata"]
    rows = [
        _row(
            "unseen_sensor",
            "Sentinel-2 (in-sensor reference), trained with virtual sensors",
            "mIoU",
            in_sensor["miou"],
            "STSUN with band dropout only",
            plain["sentinel2_10m"]["miou"],
            "reference",
            None,
        )
    ]
    for label, _stack, transform, _index_transform in tests:
        raw = raw_tests[label]
        stack = val if raw is val_raw else standardise(raw, fixed_statistics(raw.bands))[0]
        ours = score_stsun(model, stack, task, transform=transform)
        scores_out[label] = ours
        ratio = _ratio(ours["miou"], in_sensor["miou"])
        rows.append(
            _row(
                "unseen_sensor",
                f"{label}, trained with virtual sensors",
                "mIoU / in-sensor mIoU",
                ratio,
                "STSUN with band dropout only",
                _ratio(plain[label]["miou"], plain["sentinel2_10m"]["miou"]),
                _goal(label),
                ratio >= TRANSFER_GOALS.get(label, 0.9),
            )
        )
    return rows, model


def _variant_resolution_row(
    model: Stsun,
    own: dict[str, Any],
    trained: str,
    stack: Stack,
    gsd: float,
    plain_ratio: float,
) -> dict[str, Any]:
    """Experiment 4 for a variant of experiment 1's network, against the plain network.

    Args:
        model: the variant's network.
        own: the variant's scores by GSD, with ``"sentinel2_10m"``; its score at ``gsd``
            is added there.
        trained: how the variant was trained, for the row's setting
            (:data:`VIRTUAL_SENSORS_ROWS` or :data:`COARSE_CROPS_ROWS`).
        stack: the validation scenes at ``gsd``, standardised as the variant was trained
            (the fixed reflectance scale for virtual sensors, else the training statistics).
        gsd: the test GSD in metres.
        plain_ratio: the network trained at 10 m only, its mIoU at ``gsd`` over its 10 m mIoU.
    """
    at_gsd = own[f"sentinel2_{gsd:.0f}m"] = score_stsun(model, stack, "semantic_segmentation")
    ratio = _ratio(at_gsd["miou"], own["sentinel2_10m"]["miou"])
    return _row(
        "resolution",
        f"{gsd:.0f} m, {trained}",
        "mIoU / 10 m mIoU",
        ratio,
        "STSUN trained at 10 m only",
        plain_ratio,
        ">= 0.90",
        ratio >= 0.9,
    )


def _seeded_unet(seed: int, in_channels: int, outputs: int) -> UnetBaseline:
    torch.manual_seed(seed)
    return UnetBaseline(in_channels, outputs)


@torch.no_grad()
def _features(model: Stsun, stack: Stack, image: Tensor, dates: Tensor) -> Tensor:
    """(N, 1, De, H, W) pixel features of the frozen network (what its heads see)."""
    captured: list[Tensor] = []
    hook = model.category_head.register_forward_hook(lambda _m, a, _o: captured.append(a[0]))
    try:
        model.eval()
        task_row = model.task_embedding.vocabulary.index("semantic_segmentation")
        for i in range(image.shape[0]):
            model(
                make_batch(
                    image[i : i + 1], dates[i : i + 1], stack.bands, stack.gsd_m, task_row, 1
                )
            )
    finally:
        hook.remove()
    return torch.cat(captured)


def new_classes(
    cfg: Config,
    trained: Stsun,
    train: Stack,
    train_layouts: Sequence[Any],
    val: Stack,
    val_layouts: Sequence[Any],
) -> dict[str, Any]:
    """Experiment 3: new category rows through the fine-tuning workflow, or a new head.

    Ours is :func:`finetune.adapt` with ``"rows"``: the checkpoint's vocabulary merged with
    the fine class set, the new rows imprinted from the mean pixel features of their
    labelled pixels, everything but the category vocabulary frozen, the known rows, their
    biases and the scale at the same rate (``benchmarks/finetune.py``).
    """
    fine_train = dataclasses.replace(
        train, label=render_labels(train_layouts, 10.0, "fine"), classes=FINE_CLASSES
    )
    fine_val = dataclasses.replace(
        val, label=render_labels(val_layouts, 10.0, "fine"), classes=FINE_CLASSES
    )
    generator = torch.Generator().manual_seed(cfg.seed + 3)
    image, dates, label = random_crops(fine_train, cfg.patch, cfg.fewshot_patches, generator)
    k = len(FINE_CLASSES)
    before = copy.deepcopy(trained.state_dict())
    predict, ours_training = finetune.adapt(
        "rows", trained, fine_train, (image, dates, label), cfg.fewshot_steps, cfg.seed
    )
    assert all(
        torch.equal(v, trained.state_dict()[n]) for n, v in before.items() if torch.is_tensor(v)
    ), "the trained network changed"
    ours = finetune.score(predict, fine_val)
    new_names = ours_training.pop("new_names")

    features = _features(trained, train, image, dates)  # frozen: computed once
    val_features = _features(trained, val, val.image, val.dates)
    torch.manual_seed(cfg.seed)
    head = nn.Conv2d(features.shape[2], k, 1)
    ce = nn.CrossEntropyLoss(ignore_index=-1)
    head_training = fit(
        head,
        lambda _: ce(head(features[:, 0]), label),
        cfg.fewshot_steps,
        learning_rate=1e-2,
        weight_decay=0.0,
        warmup_steps=10,
    )
    with torch.no_grad():
        theirs_metrics = ClassMetrics(FINE_CLASSES)
        theirs_metrics.update(head(val_features[:, 0]).argmax(1), fine_val.label)
        theirs = scores(theirs_metrics)
    rows_out = [
        _row(
            "new_classes",
            f"{k} fine classes ({', '.join(new_names)} new), "
            f"{cfg.fewshot_patches} patches of {cfg.patch}²",
            "mIoU",
            ours["miou"],
            "new 1×1 head on frozen features",
            theirs["miou"],
            ">= baseline",
            ours["miou"] >= theirs["miou"],
        )
    ]
    for name in new_names:
        ours_iou, theirs_iou = ours.get(f"iou_{name}", 0.0), theirs.get(f"iou_{name}", 0.0)
        rows_out.append(
            _row(
                "new_classes",
                f"IoU of the new class {name}",
                "IoU",
                ours_iou,
                "new 1×1 head on frozen features",
                theirs_iou,
                "(detail)",
                None,
            )
        )
    return {
        "new_classes": {
            "new_names": new_names,
            "trained_parameters": {
                "rows": ours_training["trainable_parameters"],
                "head": sum(p.numel() for p in head.parameters()),
            },
            "training": {"rows": ours_training, "head": head_training},
            "scores": {"rows": ours, "head": theirs},
        },
        "rows_new_classes": rows_out,
    }


def time_series(cfg: Config) -> dict[str, Any]:
    """Experiment 5: variable-length series against a fixed 8-date schedule."""
    s2 = get_sensor("sentinel2_l2a").bands
    pool = date_pool(30, 320, cfg.date_step_days)
    doys = [d.timetuple().tm_yday for d in pool]
    fixed = [min(range(len(doys)), key=lambda i, d=d: abs(doys[i] - d)) for d in FIXED_SCHEDULE_DOY]
    train_layouts = make_layouts(cfg.seed + 2, cfg.train_scenes, cfg.extent_m, FARMLAND_SPEC)
    val_layouts = make_layouts(cfg.seed + 2002, cfg.val_scenes, cfg.extent_m, FARMLAND_SPEC)
    train, stats = standardise(render_stack(train_layouts, s2, 10.0, pool, "crops", cfg.seed + 2))
    val, _ = standardise(render_stack(val_layouts, s2, 10.0, pool, "crops", cfg.seed + 3), stats)
    days = train.dates[0].tolist()
    task, kind = "time_series_segmentation", OutputKind.AGGREGATE

    def variable_frames(generator: torch.Generator) -> list[int]:
        count = int(torch.randint(4, 13, (1,), generator=generator))
        return subsample_dates(days, count, 0.0, generator)

    result: dict[str, Any] = {"rows": [], "training": {}, "scores": {}}
    models = {}
    for name, frames in (("variable_4_12", variable_frames), ("fixed_8", lambda _g: fixed)):
        model = _seeded_model(cfg.seed, categories=CROP_TYPES)
        result["training"][name] = train_stsun(
            model, train, cfg, task, cfg.seed + 5, kind, frames,
            cfg.series_patch, cfg.series_batch, cfg.series_steps,
        )  # fmt: skip
        models[name] = model
    generator = torch.Generator().manual_seed(cfg.seed + 7)
    plans: dict[str, list[list[int]]] = {
        "8 dates (fixed schedule, reference)": [fixed] * cfg.val_scenes
    }
    for count in TEST_SERIES:
        plans[f"{count} dates, {GAP_DAYS:.0f}-day gap"] = [
            subsample_dates(days, count, GAP_DAYS, generator)
            for _ in range(cfg.val_scenes * cfg.series_draws)
        ]
    for name, model in models.items():
        result["scores"][name] = {
            p: score_stsun(model, val, task, kind, frames=f) for p, f in plans.items()
        }
    reference = next(iter(plans))
    ref_ours = result["scores"]["variable_4_12"][reference]["miou"]
    ref_fixed = result["scores"]["fixed_8"][reference]["miou"]
    result["rows"].append(
        _row(
            "time_series",
            reference,
            "mIoU",
            ref_ours,
            "trained on fixed 8 dates",
            ref_fixed,
            "reference",
            None,
        )
    )
    for plan in list(plans)[1:]:
        ours = result["scores"]["variable_4_12"][plan]["miou"]
        theirs = result["scores"]["fixed_8"][plan]["miou"]
        if plan.startswith("2 "):
            value, base, goal, met = ours, theirs, ">= baseline", ours >= theirs
            metric = "mIoU"
        else:
            value, base = _ratio(ours, ref_ours), _ratio(theirs, ref_fixed)
            goal, met, metric = ">= 0.90", _ratio(ours, ref_ours) >= 0.9, "mIoU / 8-date mIoU"
        result["rows"].append(
            _row("time_series", plan, metric, value, "trained on fixed 8 dates", base, goal, met)
        )
    result["dates"] = {"pool_doy": doys, "fixed_schedule_doy": [doys[i] for i in fixed]}
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the experiments and write the results."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few steps, small scenes (CI)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every draw")
    parser.add_argument(
        "--only",
        nargs="*",
        choices=EXPERIMENTS,
        help="run only these (same file names: pair with --out-dir to keep a full run)",
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="results folder")
    parser.add_argument(
        "--name",
        help="file stem of the results (default accuracy[_quick]; e.g. accuracy_seed1 for "
        "one seed of several, merged by accuracy_report.py --merge)",
    )
    parser.add_argument("--world-root", type=Path, help="SpectralWorld cache of experiment 2")
    parser.add_argument(
        "--steps", type=int, help="training steps of experiments 1, 3 and 4 (default: the mode's)"
    )
    parser.add_argument(
        "--no-virtual-sensors",
        action="store_true",
        help="skip experiment 1's variant trained with virtual sensors",
    )
    parser.add_argument(
        "--virtual-probability",
        type=float,
        default=VIRTUAL_SENSORS.probability,
        help="share of the variant's windows through a virtual sensor (0: fixed "
        "normalisation, jitter and band dropout only)",
    )
    parser.add_argument(
        "--virtual-gsd-factor",
        type=float,
        default=VIRTUAL_SENSORS.gsd_factor[1],
        help="coarsest virtual GSD over the source's (1: the source's GSD only)",
    )
    args = parser.parse_args(argv)
    cfg = make_config(
        args.quick,
        args.seed,
        args.steps,
        not args.no_virtual_sensors,
        args.virtual_probability,
        args.virtual_gsd_factor,
    )
    wanted = set(args.only or EXPERIMENTS)
    world = args.world_root or world_root(cfg)
    start = time.perf_counter()
    results: dict[str, Any] = {
        "mode": cfg.mode,
        "config": dataclasses.asdict(cfg),
        "seed": cfg.seed,
        "model": MODEL,
        "experiments": sorted(wanted, key=EXPERIMENTS.index),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "command": " ".join(
            ["python benchmarks/accuracy.py"]
            + (["--quick"] if args.quick else [])
            + ([f"--seed {args.seed}"] if args.seed else [])
            + (["--only", *args.only] if args.only else [])
            + ([f"--steps {args.steps}"] if args.steps else [])
            + (["--no-virtual-sensors"] if args.no_virtual_sensors else [])
            + ([f"--name {args.name}"] if args.name else [])
            + (
                [f"--virtual-probability {args.virtual_probability}"]
                if args.virtual_probability != VIRTUAL_SENSORS.probability
                else []
            )
            + (
                [f"--virtual-gsd-factor {args.virtual_gsd_factor}"]
                if args.virtual_gsd_factor != VIRTUAL_SENSORS.gsd_factor[1]
                else []
            )
        ),
        "rows": [],
        "details": {},
        "seconds": {},
    }
    parts: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    if wanted & {"unseen_sensor", "new_classes", "resolution"}:
        parts.append(("landcover", lambda: landcover(cfg, wanted)))
    if "time_series" in wanted:
        parts.append(("time_series", lambda: time_series(cfg)))
    if "unified" in wanted:
        parts.append(
            (
                "unified",
                lambda: unified_vs_specialists(
                    world,
                    cfg.seed,
                    cfg.world_scene_size,
                    cfg.world_scenes,
                    cfg.world_patch,
                    cfg.world_batch,
                    cfg.joint_steps,
                ),
            )
        )
    for number, (name, run) in enumerate(parts, start=1):
        t0 = time.perf_counter()
        part = run()
        results["rows"] += part.pop("rows") + part.pop("rows_new_classes", [])
        results["details"][name] = part
        results["seconds"][name] = round(time.perf_counter() - t0, 1)
        # Written after every part, so that a long run shows what it has so far.
        _summarise(results, start, complete=number == len(parts))
        write_report(results, args.out_dir, args.name)
    return results


def _summarise(results: dict[str, Any], start: float, complete: bool) -> None:
    """Sort the rows, list the goals and the total time; mark an unfinished run."""
    order = {e: i for i, e in enumerate(EXPERIMENTS)}
    results["rows"].sort(key=lambda r: order[r["experiment"]])
    results["goals"] = [
        {
            "goal": f"{r['experiment']}: {r['setting']} ({r['metric']} {r['goal']})",
            "value": r["value"],
            "met": r["met"],
        }
        for r in results["rows"]
        if r["met"] is not None
    ]
    results["complete"] = complete
    results["seconds"]["total"] = round(time.perf_counter() - start, 1)


if __name__ == "__main__":
    main()
