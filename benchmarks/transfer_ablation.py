"""Transfer ablation: each change of issue 16 to the network on and off, on the transfers it should move.

Run from the repository root::

    python benchmarks/transfer_ablation.py --quick   # ~2 min on 2 CPU cores
    python benchmarks/transfer_ablation.py           # more steps and scenes
    python benchmarks/transfer_ablation.py --steps 1000 --seeds 0 1 2   # mean ± std

Variants of ``stsun_tiny``, all trained alike (the recipe, windows and band dropout of
``accuracy.py``'s unseen-sensor experiment, one seed) on Sentinel-2 land cover at 10 m,
then scored on unseen inputs:

- ``earlier``: Fourier wavelength features, kernels from each band's own metadata,
  per-token unpatch decoder (the network before the issue);
- ``+response``: the wavelength encoding smooth in wavelength;
- ``+band set``: kernels generated from the whole band set;
- ``+bilinear``: the mask-normalised bilinear decoder;
- ``default``: the network's defaults, the first two together;
- ``all``: the three together;
- ``default + coarse crops 0.25`` and ``0.5``: the defaults, trained with that share of
  the crops drawn 2 or 3 times larger and averaged down to the 64² patch (at 2 or 3 times
  the GSD): what the datamodules' ``coarsen`` option does
  (``train_stsun(coarsen=..., coarsen_windows=True)``);
- ``default + coarsened batches 0.25`` and ``0.5``: the same share of batches averaged
  down from the 64² windows themselves (32² or 21² pixels at 2 or 3 times the GSD;
  ``coarsen_windows=False``): the ablation of drawing the crops larger.

Scored: Sentinel-2 at 10 m (in-sensor reference), Landsat-8 B1-B7, Landsat-8 B1-B7
with B10-B11 (thermal), the same with B10-B11 declared optical (the thermal modality
off: what the network saw before thermal bands had a modality of their own),
Sentinel-2 10 m bands only, Sentinel-2 at 30 m, and the variant's own 10 m map pooled to
30 m (the majority of each 3 × 3 block, scored on the 30 m labels: what scoring on
coarser pixels costs by itself, with no change of input), and Sentinel-2 at 30 m read at
10 m (the 30 m scenes resampled bilinearly onto a 10 m grid, as the reader does for an
input given ``res`` finer than its own, and the map pooled back to 30 m); each transfer as
mIoU over the variant's own in-sensor mIoU. With several ``--seeds`` the table gives
mean ± std; ``--variants`` trains a subset.

Results go to ``benchmarks/results/transfer_ablation{,_quick}.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import (
    BAND_DROPOUT,
    LANDCOVER_DATE,
    MODEL,
    REMOVALS,
    make_config,
    score_stsun,
    train_stsun,
)
from accuracy_data import (
    LANDCOVER_SPEC,
    Stack,
    drop_bands,
    make_layouts,
    render_labels,
    render_stack,
    standardise,
)
from accuracy_report import spread, write_pages
from stsun_lightning.batch import Batch, Modality
from stsun_lightning.data.datasets.world.sources import COARSE_CLASSES
from stsun_lightning.data.sensors import get_sensor
from stsun_lightning.models import create_model

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TASK = "semantic_segmentation"
EARLIER = {"wavelength_encoding": "fourier", "band_context": False, "upsampling": "unpatch"}
DEFAULT = {**EARLIER, "wavelength_encoding": "response", "band_context": True}
VARIANTS: dict[str, dict[str, Any]] = {
    "earlier": EARLIER,
    "+response": {**EARLIER, "wavelength_encoding": "response"},
    "+band set": {**EARLIER, "band_context": True},
    "+bilinear": {**EARLIER, "upsampling": "bilinear"},
    "default (+response, +band set)": DEFAULT,
    "all": {**DEFAULT, "upsampling": "bilinear"},
    **{
        f"default + coarse crops {share}": {**DEFAULT, "coarsen": share, "coarsen_windows": True}
        for share in (0.25, 0.5)
    },
    **{
        f"default + coarsened batches {share}": {**DEFAULT, "coarsen": share}
        for share in (0.25, 0.5)
    },
}
TRAINING_OPTIONS = ("coarsen", "coarsen_windows")
"""Keys of a variant that are training options (of ``train_stsun``), not the network's."""
S2_10M_ONLY = "Sentinel-2 10 m bands only (B02-B04, B08)"
THERMAL_AS_OPTICAL = "Landsat-8 B1-B7 + B10-B11 declared optical"
POOLED_30M = "10 m map pooled to 30 m"
READ_AT_10M = "Sentinel-2 at 30 m read at 10 m"
COLUMNS = (
    "Sentinel-2 10 m mIoU",
    "Landsat-8 B1-B7",
    "Landsat-8 B1-B7 + B10-B11",
    THERMAL_AS_OPTICAL,
    S2_10M_ONLY,
    "Sentinel-2 at 30 m",
    POOLED_30M,
    READ_AT_10M,
)


def _declared_optical(stack: Stack) -> Stack:
    """``stack`` with its thermal bands declared optical (the thermal modality off)."""
    bands = [
        dataclasses.replace(b, modality=Modality.OPTICAL) if b.modality == Modality.THERMAL else b
        for b in stack.bands
    ]
    return dataclasses.replace(stack, bands=type(stack.bands)(bands))


def _read_finer(factor: int) -> Callable[[Batch], Batch]:
    """A transform that resamples a batch bilinearly onto a grid ``factor`` times finer.

    The reader's default resampling for an input asked for at a finer ``res`` than its
    own; ``gsd_m`` is divided by ``factor``, the valid mask is taken by nearest pixel.
    """

    def read(batch: Batch) -> Batch:
        b, t, c, h, w = batch.image.shape
        image = F.interpolate(
            batch.image.reshape(b, t * c, h, w), scale_factor=factor, mode="bilinear"
        )
        valid = F.interpolate(batch.valid_mask[:, None].float(), scale_factor=factor)
        return dataclasses.replace(
            batch,
            image=image.reshape(b, t, c, h * factor, w * factor),
            valid_mask=valid[:, 0] > 0.5,
            gsd_m=batch.gsd_m / factor,
        )

    return read


def run(
    quick: bool, seed: int, steps: int | None, variants: Sequence[str] | None = None
) -> dict[str, Any]:
    """Train every variant (or those named) and score it on each transfer."""
    cfg = make_config(quick, seed)
    if steps is not None:
        cfg = dataclasses.replace(cfg, steps=steps)
    s2 = get_sensor("sentinel2_l2a").bands
    l8 = get_sensor("landsat8_oli_tirs")
    l8_optical = l8.select(("B1", "B2", "B3", "B4", "B5", "B6", "B7"))
    l8_thermal = l8.select(("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B10", "B11"))
    train_layouts = make_layouts(cfg.seed, cfg.train_scenes, cfg.extent_m, LANDCOVER_SPEC)
    val_layouts = make_layouts(cfg.seed + 1000, cfg.val_scenes, cfg.extent_m, LANDCOVER_SPEC)
    date = [LANDCOVER_DATE]
    train, s2_stats = standardise(render_stack(train_layouts, s2, 10.0, date, "coarse", cfg.seed))

    def val_stack(bands, gsd, stats=None):
        if stats is None:  # a new sensor's statistics come from its own training scenes
            _, stats = standardise(render_stack(train_layouts, bands, gsd, date, "coarse", seed))
        return standardise(render_stack(val_layouts, bands, gsd, date, "coarse", seed + 1), stats)[
            0
        ]

    names = [b.name for b in s2]
    removed = [names.index(n) for n in REMOVALS[S2_10M_ONLY]]
    thermal = val_stack(l8_thermal, 10.0)
    tests = {
        "Landsat-8 B1-B7": (val_stack(l8_optical, 10.0), None),
        "Landsat-8 B1-B7 + B10-B11": (thermal, None),
        THERMAL_AS_OPTICAL: (_declared_optical(thermal), None),
        S2_10M_ONLY: (val_stack(s2, 10.0, s2_stats), lambda b: drop_bands(b, removed)),
        "Sentinel-2 at 30 m": (val_stack(s2, 30.0, s2_stats), None),
    }
    reference = val_stack(s2, 10.0, s2_stats)
    s2_30m = tests["Sentinel-2 at 30 m"][0]
    label_30m = render_labels(val_layouts, 30.0, "coarse")
    results: dict[str, Any] = {"config": dataclasses.asdict(cfg), "variants": {}}
    for name in variants or VARIANTS:
        options = VARIANTS[name]
        torch.manual_seed(cfg.seed)
        network = {k: v for k, v in options.items() if k not in TRAINING_OPTIONS}
        training_options = {k: v for k, v in options.items() if k in TRAINING_OPTIONS}
        model = create_model(MODEL, categories=COARSE_CLASSES, **network)
        start = time.perf_counter()
        training = train_stsun(
            model, train, cfg, TASK, cfg.seed, band_dropout=BAND_DROPOUT, **training_options
        )
        in_sensor = score_stsun(model, reference, TASK)["miou"]
        row: dict[str, Any] = {
            "options": options,
            "train_seconds": round(training["seconds"], 1),
            "last_loss": round(training["last_loss"], 4),
            "Sentinel-2 10 m mIoU": in_sensor,
        }
        for label, (stack, transform) in tests.items():
            miou = score_stsun(model, stack, TASK, transform=transform)["miou"]
            row[label] = round(miou / in_sensor, 4) if in_sensor > 0 else 0.0
        pooled = score_stsun(model, reference, TASK, labels=label_30m, pool=3)["miou"]
        row[POOLED_30M] = round(pooled / in_sensor, 4) if in_sensor > 0 else 0.0
        finer = score_stsun(
            model, s2_30m, TASK, transform=_read_finer(3), labels=s2_30m.label, pool=3
        )["miou"]
        row[READ_AT_10M] = round(finer / in_sensor, 4) if in_sensor > 0 else 0.0
        row["seconds"] = round(time.perf_counter() - start, 1)
        results["variants"][name] = row
        print(name, row, flush=True)
    return results


def aggregate(per_seed: dict[int, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean and standard deviation over seeds of every variant's columns and train time."""
    first = next(iter(per_seed.values()))
    out: dict[str, dict[str, Any]] = {}
    for name in first["variants"]:
        rows = [run["variants"][name] for run in per_seed.values()]
        out[name] = {"options": rows[0]["options"]}
        for column in (*COLUMNS, "train_seconds"):
            out[name][column], out[name][f"{column} std"] = spread([r[column] for r in rows])
    return out


def markdown(results: dict[str, Any]) -> str:
    """A short table: one row per variant (mean ± std over seeds where there are several)."""
    cfg = results["config"]
    seeds = results["seeds"]
    spread = len(seeds) > 1
    lines = [
        "# Transfer ablation",
        "",
        f"`{results['command']}`: `stsun_tiny`, {cfg['mode']} settings of "
        f"accuracy.py, seed{'s' if spread else ''} {', '.join(map(str, seeds))}, "
        f"{cfg['train_scenes']} training and {cfg['val_scenes']} validation scenes of "
        f"{cfg['extent_m']:.0f} m, {cfg['steps']} steps of batch {cfg['batch']} "
        f"on {cfg['patch']}² windows, band dropout {BAND_DROPOUT}. Transfers are mIoU over "
        "the variant's own Sentinel-2 10 m mIoU"
        + (
            ", mean ± standard deviation over the seeds."
            if spread
            else ". One seed: differences under about 0.05 are within the noise of one run."
        )
        + (
            " Quick mode trains for a few dozen steps: it shows that the script runs, "
            "and its numbers mean nothing about accuracy."
            if cfg["mode"] == "quick" and cfg["steps"] < 100
            else ""
        ),
        "",
        "| variant | " + " | ".join(COLUMNS) + " | train s |",
        "|---|" + "---:|" * (len(COLUMNS) + 1),
    ]
    for name, row in results["variants"].items():

        def cell(column: str, row: dict[str, Any] = row) -> str:
            if not spread:
                return f"{row[column]:.3f}"
            return f"{row[column]:.3f} ± {row[f'{column} std']:.3f}"

        values = " | ".join(cell(c) for c in COLUMNS)
        lines.append(f"| {name} | {values} | {row['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``--quick``, ``--seeds``, ``--steps``, ``--name``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI settings (~2 min)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed")
    parser.add_argument("--steps", type=int, default=None, help="override training steps")
    parser.add_argument("--name", help="file stem (default transfer_ablation[_quick])")
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), help="train these only (default: all)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    per_seed = {seed: run(args.quick, seed, args.steps, args.variants) for seed in args.seeds}
    command = " ".join(
        ["benchmarks/transfer_ablation.py"]
        + (["--quick"] if args.quick else [])
        + ([f"--steps {args.steps}"] if args.steps else [])
        + (["--seeds", *map(str, args.seeds)] if args.seeds != [0] else [])
        + ([f"--name {args.name}"] if args.name else [])
        + (["--variants", *(repr(v) for v in args.variants)] if args.variants else [])
    )
    first = next(iter(per_seed.values()))
    results = {
        "command": f"python {command}",
        "config": first["config"],
        "seeds": args.seeds,
        "variants": aggregate(per_seed),
        "per_seed": {str(seed): run["variants"] for seed, run in per_seed.items()},
    }
    stem = args.name or "transfer_ablation" + ("_quick" if args.quick else "")
    write_pages(RESULTS_DIR, stem, results, markdown(results))
    return results


if __name__ == "__main__":
    main()
