"""Transfer ablation: each change of issue 16 to the network on and off, on the transfers it should move.

Run from the repository root::

    python benchmarks/transfer_ablation.py --quick   # ~2 min on 2 CPU cores
    python benchmarks/transfer_ablation.py           # more steps and scenes

Variants of ``stsun_tiny``, all trained alike (the recipe, windows and band dropout of
``accuracy.py``'s unseen-sensor experiment, one seed) on Sentinel-2 land cover at 10 m,
then scored on unseen inputs:

- ``earlier``: Fourier wavelength features, kernels from each band's own metadata,
  per-token unpatch decoder (the network before the issue);
- ``+response``: the wavelength encoding smooth in wavelength;
- ``+band set``: kernels generated from the whole band set;
- ``+bilinear``: the mask-normalised bilinear decoder;
- ``default``: the network's defaults, the first two together;
- ``all``: the three together.

Scored: Sentinel-2 at 10 m (in-sensor reference), Landsat-8 B1-B7, Landsat-8 B1-B7
with B10-B11 (thermal), Sentinel-2 10 m bands only, and Sentinel-2 at 30 m; each
transfer as mIoU over the variant's own in-sensor mIoU.

Results go to ``benchmarks/results/transfer_ablation{,_quick}.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

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
from accuracy_data import LANDCOVER_SPEC, drop_bands, make_layouts, render_stack, standardise
from stsun_lightning.data.datasets.world.sources import COARSE_CLASSES
from stsun_lightning.data.sensors import get_sensor
from stsun_lightning.models import create_model

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TASK = "semantic_segmentation"
EARLIER = {"wavelength_encoding": "fourier", "band_context": False, "upsampling": "unpatch"}
VARIANTS: dict[str, dict[str, Any]] = {
    "earlier": EARLIER,
    "+response": {**EARLIER, "wavelength_encoding": "response"},
    "+band set": {**EARLIER, "band_context": True},
    "+bilinear": {**EARLIER, "upsampling": "bilinear"},
    "default (+response, +band set)": {
        **EARLIER,
        "wavelength_encoding": "response",
        "band_context": True,
    },
    "all": {"wavelength_encoding": "response", "band_context": True, "upsampling": "bilinear"},
}
S2_10M_ONLY = "Sentinel-2 10 m bands only (B02-B04, B08)"


def run(quick: bool, seed: int, steps: int | None) -> dict[str, Any]:
    """Train every variant and score it on each transfer."""
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
    tests = {
        "Landsat-8 B1-B7": (val_stack(l8_optical, 10.0), None),
        "Landsat-8 B1-B7 + B10-B11": (val_stack(l8_thermal, 10.0), None),
        S2_10M_ONLY: (val_stack(s2, 10.0, s2_stats), lambda b: drop_bands(b, removed)),
        "Sentinel-2 at 30 m": (val_stack(s2, 30.0, s2_stats), None),
    }
    reference = val_stack(s2, 10.0, s2_stats)
    results: dict[str, Any] = {"config": dataclasses.asdict(cfg), "variants": {}}
    for name, options in VARIANTS.items():
        torch.manual_seed(cfg.seed)
        model = create_model(MODEL, categories=COARSE_CLASSES, **options)
        start = time.perf_counter()
        training = train_stsun(model, train, cfg, TASK, cfg.seed, band_dropout=BAND_DROPOUT)
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
        row["seconds"] = round(time.perf_counter() - start, 1)
        results["variants"][name] = row
        print(name, row, flush=True)
    return results


def markdown(results: dict[str, Any]) -> str:
    """A short table: one row per variant."""
    cfg = results["config"]
    columns = [
        "Sentinel-2 10 m mIoU",
        "Landsat-8 B1-B7",
        "Landsat-8 B1-B7 + B10-B11",
        S2_10M_ONLY,
        "Sentinel-2 at 30 m",
    ]
    lines = [
        "# Transfer ablation",
        "",
        f"`stsun_tiny`, {cfg['mode']} settings of accuracy.py: seed {cfg['seed']}, "
        f"{cfg['train_scenes']} training and {cfg['val_scenes']} validation scenes of "
        f"{cfg['extent_m']:.0f} m, {cfg['steps']} steps of batch {cfg['batch']} "
        f"on {cfg['patch']}² windows, band dropout {BAND_DROPOUT}. Transfers are mIoU over "
        "the variant's own Sentinel-2 10 m mIoU. One seed: differences under about 0.05 "
        "are within the noise of so short a run."
        + (
            " Quick mode trains for a few dozen steps: it shows that the script runs, "
            "and its numbers mean nothing about accuracy."
            if cfg["mode"] == "quick" and cfg["steps"] < 100
            else ""
        ),
        "",
        "| variant | " + " | ".join(columns) + " | train s |",
        "|---|" + "---:|" * (len(columns) + 1),
    ]
    for name, row in results["variants"].items():
        values = " | ".join(f"{row[c]:.3f}" for c in columns)
        lines.append(f"| {name} | {values} | {row['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``--quick``, ``--seed``, ``--steps``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI settings (~2 min)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="override training steps")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    results = run(args.quick, args.seed, args.steps)
    stem = "transfer_ablation" + ("_quick" if args.quick else "")
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS_DIR / f"{stem}.md").write_text(markdown(results))
    return results


if __name__ == "__main__":
    main()
