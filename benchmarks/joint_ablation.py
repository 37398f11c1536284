"""Joint-model ablation: which options move the joint STSUN of experiment 2.

Run from the repository root::

    python benchmarks/joint_ablation.py --quick              # CI (~1 min)
    python benchmarks/joint_ablation.py --seeds 0 1          # full settings, ~22 min a seed

Each variant is the joint STSUN of ``accuracy.py``'s experiment 2 (``accuracy_unified``:
the same SpectralWorld sources, sampling, recipe and 1750 steps in full mode), with some
options of the network (decoder, widths, patch size) or of the task's training
(``learning_rate``, ``loss_balance``: :data:`TASK_OPTIONS`) changed; it is scored per
source on the validation scenes. The U-Net specialists of the same seed are read from
``results/accuracy_seed{N}.json`` where that file exists (they are not retrained here),
as the reference the joint model must reach. The world is the one ``accuracy.py``
caches for the mode and seed (``world_root``).

Results go to ``benchmarks/results/joint_ablation{,_quick}.{json,md}`` (``--name``: another
stem, e.g. for a further seed of some variants).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import make_config, world_root
from accuracy_report import spread, write_pages
from accuracy_unified import mean_miou, train_joint, world_datamodule

RESULTS_DIR = Path(__file__).resolve().parent / "results"
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "bilinear decoder": {"upsampling": "bilinear"},
    "bilinear, decoder 32, stem 16": {"upsampling": "bilinear", "decoder_dim": 32, "stem_dim": 16},
    "bilinear, decoder 32, stem 16, width 96, depth 4": {
        "upsampling": "bilinear",
        "decoder_dim": 32,
        "stem_dim": 16,
        "dim": 96,
        "depth": 4,
    },
    "patch 4": {"patch_size": 4},
    "patch 4, bilinear": {"patch_size": 4, "upsampling": "bilinear"},
    "conv stem 16": {"conv_stem": 16},
    "conv stem 16, bilinear": {"conv_stem": 16, "upsampling": "bilinear"},
    "conv stem 32": {"conv_stem": 32},
    "conv stem 16, patch 4, bilinear": {"conv_stem": 16, "patch_size": 4, "upsampling": "bilinear"},
    "conv stem 32, patch 4": {"conv_stem": 32, "patch_size": 4},
    "conv stem 32, patch 4, bilinear": {"conv_stem": 32, "patch_size": 4, "upsampling": "bilinear"},
    "learning rate 4e-3 (2e-3)": {"learning_rate": 4e-3},
    "losses balanced (initial_mean)": {"loss_balance": "initial_mean"},
}
TASK_OPTIONS = ("learning_rate", "loss_balance")
"""Keys of a variant that are options of ``StsunTask``, not of the network."""


def _reference(seed: int) -> dict[str, Any] | None:
    """The U-Net specialists' scores of ``accuracy_seed{seed}.json``, if there."""
    path = RESULTS_DIR / f"accuracy_seed{seed}.json"
    if not path.exists():
        return None
    unified = json.loads(path.read_text())["details"].get("unified")
    if unified is None:
        return None
    scores = unified["unet_specialists"]["scores"]
    return {"scores": scores, "mean_miou": round(mean_miou(scores), 4)}


def run(quick: bool, seed: int, variants: Sequence[str]) -> dict[str, Any]:
    """Train the joint network once per variant; per-source scores and mean mIoU."""
    cfg = make_config(quick, seed)
    data = world_datamodule(
        world_root(cfg) / "all",
        seed,
        cfg.world_scene_size,
        cfg.world_scenes,
        cfg.world_patch,
        cfg.world_batch,
        cfg.joint_steps,
        None,
    )
    out: dict[str, Any] = {"steps": cfg.joint_steps, "variants": {}}
    for name in variants:
        options = VARIANTS[name]
        network = {k: v for k, v in options.items() if k not in TASK_OPTIONS}
        task = {k: v for k, v in options.items() if k in TASK_OPTIONS}
        result = train_joint(data, cfg.joint_steps, seed, network or None, task or None)
        result["mean_miou"] = round(mean_miou(result["scores"]), 4)
        out["variants"][name] = result
        print(name, result, flush=True)
    reference = _reference(seed) if not quick else None
    if reference is not None:
        out["unet_specialists"] = reference
    return out


def markdown(results: dict[str, Any]) -> str:
    """One row per variant: mean mIoU over the class sources (± std over seeds), per source."""
    seeds = results["seeds"]
    first = results["per_seed"][str(seeds[0])]
    sources = [
        n for n, s in next(iter(first["variants"].values()))["scores"].items() if "miou" in s
    ]
    lines = [
        "# Joint-model ablation",
        "",
        f"`{results['command']}`: the joint STSUN of accuracy.py's experiment 2, "
        f"{first['steps']} steps, seed{'s' if len(seeds) > 1 else ''} "
        f"{', '.join(map(str, seeds))}; mIoU on the validation scenes, mean over the seeds"
        + (" (± std of the mean mIoU)." if len(seeds) > 1 else "."),
        "",
        "| variant | parameters | mean mIoU | " + " | ".join(sources) + " |",
        "|---|---:|---:|" + "---:|" * len(sources),
    ]

    def row(name: str, runs: list[dict[str, Any]], parameters: str) -> str:
        mean, std = spread([r["mean_miou"] for r in runs])
        cell = f"{mean:.3f}" + (f" ± {std:.3f}" if len(runs) > 1 else "")
        per = [spread([r["scores"][s]["miou"] for r in runs])[0] for s in sources]
        return f"| {name} | {parameters} | {cell} | " + " | ".join(f"{v:.3f}" for v in per) + " |"

    for name in first["variants"]:
        runs = [results["per_seed"][str(s)]["variants"][name] for s in seeds]
        lines.append(row(name, runs, f"{runs[0]['parameters']:,}"))
    references = [results["per_seed"][str(s)].get("unet_specialists") for s in seeds]
    if all(r is not None for r in references):
        lines.append(row("U-Net specialists (accuracy.py)", references, "–"))
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``--quick``, ``--seeds``, ``--variants``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI settings (~1 min)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed")
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), help="train these only (default: all)"
    )
    parser.add_argument("--name", help="stem of the result files (default: joint_ablation[_quick])")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    variants = args.variants or list(VARIANTS)
    per_seed = {str(seed): run(args.quick, seed, variants) for seed in args.seeds}
    command = " ".join(
        ["python benchmarks/joint_ablation.py"]
        + (["--quick"] if args.quick else [])
        + (["--seeds", *map(str, args.seeds)] if args.seeds != [0] else [])
        + (["--variants", *(repr(v) for v in args.variants)] if args.variants else [])
        + (["--name", args.name] if args.name else [])
    )
    results = {"command": command, "seeds": args.seeds, "per_seed": per_seed}
    stem = args.name or "joint_ablation" + ("_quick" if args.quick else "")
    write_pages(RESULTS_DIR, stem, results, markdown(results))
    return results


if __name__ == "__main__":
    main()
