"""Joint-model ablation: which options move the joint STSUN of experiment 2.

Run from the repository root::

    python benchmarks/joint_ablation.py --quick              # CI (~1 min)
    python benchmarks/joint_ablation.py --seeds 0 1          # full settings, ~22 min a seed
    python benchmarks/joint_ablation.py --merge benchmarks/results/joint_ablation.json \
        benchmarks/results/joint_ablation_probe.json --name joint_ablation  # add variants

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

from accuracy import Config, make_config, world_root
from accuracy_report import spread, write_pages
from accuracy_unified import (
    mean_miou,
    specialists,
    train_joint,
    train_unet_specialist,
    world_datamodule,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
OPTIONS: dict[str, dict[str, Any]] = {
    "bilinear": {"upsampling": "bilinear"},
    "patch 4": {"patch_size": 4},
    "conv stem 16": {"conv_stem": 16},
    "conv stem 32": {"conv_stem": 32},
    "decoder 32": {"decoder_dim": 32},
    "decoder 64": {"decoder_dim": 64},
    "stem 16": {"stem_dim": 16},
    "stem 32": {"stem_dim": 32},
    "width 96": {"dim": 96},
    "depth 3": {"depth": 3},
    "depth 4": {"depth": 4},
    "window 16": {"window": 16},
    "basis kernels": {"basis_kernels": True},
    "balanced bands": {"balanced_band_init": True},
    "fourier bands": {"wavelength_encoding": "fourier"},
    "index bands": {"band_encoding": "index"},
    "dense refine 1": {"dense_refine": 1},
    "dense refine 2": {"dense_refine": 2},
    "EMA 0.99": {"ema_decay": 0.99},
    "EMA 0.995": {"ema_decay": 0.995},
    "EMA 0.998": {"ema_decay": 0.998},
    "learning rate 1e-3": {"learning_rate": 1e-3},
    "learning rate 3e-3": {"learning_rate": 3e-3},
    "aerial weight 1.5": {"source_weights": {"aerial_landcover": 1.5}},
    "aerial weight 2": {"source_weights": {"aerial_landcover": 2.0}},
}
"""The phrases a variant's name is made of, each with the network options it sets."""


def _variant(*phrases: str) -> tuple[str, dict[str, Any]]:
    """A variant named by its phrases, joined: ``("patch 4", "bilinear")`` -> "patch 4, bilinear"."""
    options: dict[str, Any] = {}
    for phrase in phrases:
        options.update(OPTIONS[phrase])
    return ", ".join(phrases), options


VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "bilinear decoder": OPTIONS["bilinear"],
    **dict(
        _variant(*phrases)
        for phrases in (
            ("bilinear", "decoder 32", "stem 16"),
            ("bilinear", "decoder 32", "stem 16", "width 96", "depth 4"),
            ("patch 4",),
            ("patch 4", "bilinear"),
            ("conv stem 16",),
            ("conv stem 16", "bilinear"),
            ("conv stem 32",),
            ("conv stem 16", "patch 4", "bilinear"),
            ("conv stem 16", "patch 4", "bilinear", "decoder 32", "stem 16"),
            ("conv stem 16", "patch 4", "bilinear", "decoder 32", "stem 16", "window 16"),
            ("conv stem 16", "patch 4", "bilinear", "decoder 32", "stem 16", "dense refine 1"),
            ("conv stem 16", "patch 4", "bilinear", "decoder 32", "stem 16", "dense refine 2"),
            ("conv stem 16", "patch 4", "bilinear", "decoder 32", "stem 16", "EMA 0.99"),
            ("conv stem 16", "patch 4", "bilinear", "decoder 32", "stem 16", "EMA 0.995"),
            ("conv stem 16", "patch 4", "bilinear", "decoder 32", "stem 16", "EMA 0.998"),
            ("conv stem 16", "patch 4", "bilinear", "decoder 32", "stem 16", "aerial weight 1.5"),
            ("conv stem 16", "patch 4", "bilinear", "decoder 32", "stem 16", "aerial weight 2"),
            ("conv stem 16", "patch 4", "bilinear", "decoder 32", "stem 16", "basis kernels"),
            ("conv stem 16", "patch 4", "bilinear", "decoder 32", "stem 16", "balanced bands"),
            (
                "conv stem 16",
                "patch 4",
                "bilinear",
                "decoder 32",
                "stem 16",
                "balanced bands",
                "basis kernels",
            ),
            ("conv stem 16", "patch 4", "bilinear", "decoder 32", "stem 16", "fourier bands"),
            ("conv stem 16", "patch 4", "bilinear", "decoder 32", "stem 16", "index bands"),
            ("conv stem 16", "patch 4", "bilinear", "decoder 32", "stem 16", "depth 3"),
            ("conv stem 16", "patch 4", "bilinear", "decoder 32", "stem 16", "learning rate 1e-3"),
            ("conv stem 16", "patch 4", "bilinear", "decoder 32", "stem 16", "learning rate 3e-3"),
            ("conv stem 16", "patch 4", "bilinear", "decoder 32", "stem 16", "depth 4"),
            ("conv stem 32", "patch 4", "bilinear", "decoder 32", "stem 16"),
            ("conv stem 16", "patch 4", "bilinear", "decoder 64", "stem 32"),
            ("conv stem 16", "patch 4", "bilinear", "width 96", "depth 4"),
            ("conv stem 32", "patch 4"),
            ("conv stem 32", "patch 4", "bilinear"),
        )
    ),
    "learning rate 4e-3 (2e-3)": {"learning_rate": 4e-3},
    "losses balanced (initial_mean)": {"loss_balance": "initial_mean"},
}
TASK_OPTIONS = ("learning_rate", "loss_balance")
"""Keys of a variant that are options of ``StsunTask``, not of the network."""
TRAINING_OPTIONS = ("ema_decay",)
"""Keys of a variant that are options of the training (``train_joint``)."""
DATA_OPTIONS = ("source_weights",)
"""Keys of a variant that are options of the datamodule (``world_datamodule``): the
sources' shares of the training batches, at the same total steps."""


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


def held_out_world(cfg: Config, val_scenes: int) -> tuple[Path, int]:
    """The cache folder and scene count of ``cfg``'s world with ``val_scenes`` held out.

    One held-out scene is experiment 2's world; more get their own folder, with that
    many scenes after the same training scenes.
    """
    root = world_root(cfg)
    if val_scenes == 1:
        return root, cfg.world_scenes
    return root.with_name(f"{root.name}_val{val_scenes}"), cfg.world_scenes - 1 + val_scenes


def run(
    quick: bool,
    seed: int,
    variants: Sequence[str],
    val_scenes: int = 1,
    unets_from: dict[str, Any] | None = None,
    sources: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Train the joint network once per variant; per-source scores and mean mIoU.

    Args:
        quick: the CI settings.
        seed: seed of the world, the sampling and the initialisations.
        variants: names in :data:`VARIANTS`.
        val_scenes: held-out scenes per source. With 1 (experiment 2's world), the U-Net
            specialists are read from ``accuracy_seed{seed}.json``; with more, the world
            gets that many more scenes after the same training scenes (its own cache
            folder) and the U-Net specialists are trained here and scored on them too.
        unets_from: an earlier result of this script with the same settings, whose U-Net
            specialists of ``seed`` are taken instead of training them again (they repeat
            exactly: measured).
        sources: train and score on these sources only (all of them by default), for
            the same steps; one source reads the cache of its U-Net specialist's world.

    Raises:
        ValueError: ``unets_from`` ran other settings, or lacks this seed's U-Nets.
    """
    cfg = make_config(quick, seed)
    root, scenes = held_out_world(cfg, val_scenes)
    world = (seed, cfg.world_scene_size, scenes, cfg.world_patch, cfg.world_batch)
    names = list(sources) if sources else None
    folder = root / (names[0] if names and len(names) == 1 else "all")
    data = world_datamodule(folder, *world, cfg.joint_steps, names, val_scenes)
    out: dict[str, Any] = {"steps": cfg.joint_steps, "val_scenes": val_scenes, "variants": {}}
    if names:
        out["sources"] = names
    for name in variants:
        options = VARIANTS[name]
        others = TASK_OPTIONS + TRAINING_OPTIONS + DATA_OPTIONS
        network = {k: v for k, v in options.items() if k not in others}
        task = {k: v for k, v in options.items() if k in TASK_OPTIONS}
        training = {k: v for k, v in options.items() if k in TRAINING_OPTIONS}
        sampling = {k: v for k, v in options.items() if k in DATA_OPTIONS}
        variant_data = (
            world_datamodule(folder, *world, cfg.joint_steps, names, val_scenes, **sampling)
            if sampling
            else data
        )
        result = train_joint(
            variant_data, cfg.joint_steps, seed, network or None, task or None, **training
        )
        result["mean_miou"] = round(mean_miou(result["scores"]), 4)
        out["variants"][name] = result
        print(name, result, flush=True)
    if unets_from is not None:
        reference = _earlier_unets(unets_from, seed, out, names)
    elif val_scenes > 1:
        every = [s.name for s in data.source_infos]
        each = max(1, cfg.joint_steps // len(every))
        unets = specialists(train_unet_specialist, root, every, *world, each, val_scenes)
        reference = {**unets, "mean_miou": round(mean_miou(unets["scores"]), 4), "trained": True}
        print("U-Net specialists", reference, flush=True)
    else:
        reference = _reference(seed) if not quick else None
    if reference is not None:
        out["unet_specialists"] = reference
    return out


def _earlier_unets(
    earlier: dict[str, Any],
    seed: int,
    settings: dict[str, Any],
    sources: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The U-Net specialists of ``seed`` in an earlier result of the same ``settings``.

    With ``sources``, only theirs (their mean mIoU recomputed over them).
    """
    run = earlier["per_seed"].get(str(seed), {})
    if "unet_specialists" not in run:
        raise ValueError(f"--unets-from: expected U-Net specialists of seed {seed}, found none")
    for key in ("steps", "val_scenes"):
        if run.get(key, 1) != settings[key]:
            raise ValueError(
                f"--unets-from: expected {key} = {settings[key]}, the file's run has {run.get(key, 1)}"
            )
    reference = run["unet_specialists"]
    if not sources:
        return reference
    scores = {name: reference["scores"][name] for name in sources}
    return {**reference, "scores": scores, "mean_miou": round(mean_miou(scores), 4)}


def _hashable(value: Any) -> Any:
    """A setting of a run as a set member: a list of sources as a tuple."""
    return tuple(value) if isinstance(value, list) else value


def combine(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Result files combined in order: seeds joined, a seed's later variants added or replaced.

    A seed run as its own command, or a variant probed after the others, joins the table
    without retraining the rest; a variant of one seed in several runs keeps the latest
    run's scores. Every run of this script is seeded, and a variant's rerun repeats its
    scores exactly (measured), so the order only matters after a change.

    Raises:
        ValueError: runs of different settings (training steps, held-out scenes, sources
            trained on), whose scores do not compare.
    """
    for key, flag, default in (
        ("steps", "steps (--quick or not)", 1),
        ("val_scenes", "--val-scenes", 1),
        ("sources", "--sources", None),
    ):
        values = {
            _hashable(run.get(key, default)) for r in results for run in r["per_seed"].values()
        }
        if len(values) > 1:
            raise ValueError(
                f"combine: expected runs with the same {flag}, got {sorted(values, key=str)}"
            )
    per_seed: dict[str, dict[str, Any]] = {}
    for result in results:
        for seed, run in result["per_seed"].items():
            if seed not in per_seed:
                per_seed[seed] = {**run, "variants": dict(run["variants"])}
                continue
            per_seed[seed]["variants"].update(run["variants"])
            if "unet_specialists" in run:
                per_seed[seed]["unet_specialists"] = run["unet_specialists"]
    seeds = sorted(int(seed) for seed in per_seed)
    command = "; ".join(r["command"] for r in results)
    return {
        "command": command,
        "seeds": seeds,
        "per_seed": {str(s): per_seed[str(s)] for s in seeds},
    }


def markdown(results: dict[str, Any]) -> str:
    """One row per variant: mean mIoU over the class sources (± std over seeds), per source.

    A variant (or reference) missing from some seeds is averaged over the seeds it has,
    which its row names.
    """
    seeds = results["seeds"]
    runs_of = [results["per_seed"][str(s)] for s in seeds]
    first = runs_of[0]
    sources = [
        n for n, s in next(iter(first["variants"].values()))["scores"].items() if "miou" in s
    ]
    lines = [
        "# Joint-model ablation",
        "",
        f"`{results['command']}`: the joint STSUN of accuracy.py's experiment 2"
        + (f", trained on {', '.join(first['sources'])} only" if first.get("sources") else "")
        + f", {first['steps']} steps, seed{'s' if len(seeds) > 1 else ''} "
        f"{', '.join(map(str, seeds))}; mIoU on the {first.get('val_scenes', 1)} validation "
        "scene(s) of each source, mean over the seeds"
        + (" (± std of the mean mIoU)." if len(seeds) > 1 else "."),
        "",
        "| variant | parameters | mean mIoU | " + " | ".join(sources) + " |",
        "|---|---:|---:|" + "---:|" * len(sources),
    ]

    def row(name: str, found: list[tuple[int, dict[str, Any]]], parameters: str) -> str:
        runs = [r for _, r in found]
        if len(found) < len(seeds):
            name += f" (seed{'s' if len(found) > 1 else ''} {', '.join(str(s) for s, _ in found)})"
        mean, std = spread([r["mean_miou"] for r in runs])
        cell = f"{mean:.3f}" + (f" ± {std:.3f}" if len(runs) > 1 else "")
        per = [spread([r["scores"][s]["miou"] for r in runs])[0] for s in sources]
        return f"| {name} | {parameters} | {cell} | " + " | ".join(f"{v:.3f}" for v in per) + " |"

    names = list(dict.fromkeys(name for run in runs_of for name in run["variants"]))
    for name in names:
        found = [
            (s, r["variants"][name])
            for s, r in zip(seeds, runs_of, strict=True)
            if name in r["variants"]
        ]
        lines.append(row(name, found, f"{found[0][1]['parameters']:,}"))
    references = [
        (s, r["unet_specialists"])
        for s, r in zip(seeds, runs_of, strict=True)
        if "unet_specialists" in r
    ]
    if references:
        trained = references[0][1].get("trained", False)
        label = "U-Net specialists" + (" (trained here)" if trained else " (accuracy.py)")
        parameters = f"{references[0][1]['parameters']:,}" if trained else "–"
        lines.append(row(label, references, parameters))
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``--quick``, ``--seeds``, ``--variants``, ``--name``, ``--merge``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI settings (~1 min)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed")
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), help="train these only (default: all)"
    )
    parser.add_argument(
        "--val-scenes",
        type=int,
        default=1,
        help="held-out scenes per source (default 1: experiment 2's world, U-Nets read from "
        "accuracy_seed{N}.json; more: U-Nets trained here on the same scenes)",
    )
    parser.add_argument(
        "--unets-from",
        type=Path,
        metavar="JSON",
        help="take the U-Net specialists from this earlier result of the same settings "
        "instead of training them",
    )
    parser.add_argument(
        "--sources",
        nargs="+",
        metavar="SOURCE",
        help="train and score on these sources only (default: all), for the same steps",
    )
    parser.add_argument("--name", help="stem of the result files (default: joint_ablation[_quick])")
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="combine these result files (seeds joined; a seed's later variants added or "
        "replaced) into --name, training nothing",
    )
    args = parser.parse_args(argv)
    if args.merge and not args.name:
        parser.error("--merge needs --name: the stem of the combined files")
    if args.merge:
        results = combine([json.loads(path.read_text()) for path in args.merge])
        write_pages(RESULTS_DIR, args.name, results, markdown(results))
        return results
    torch.set_num_threads(min(2, torch.get_num_threads()))
    variants = args.variants or list(VARIANTS)
    earlier = json.loads(args.unets_from.read_text()) if args.unets_from else None
    per_seed = {
        str(seed): run(args.quick, seed, variants, args.val_scenes, earlier, args.sources)
        for seed in args.seeds
    }
    command = " ".join(
        ["python benchmarks/joint_ablation.py"]
        + (["--quick"] if args.quick else [])
        + (["--seeds", *map(str, args.seeds)] if args.seeds != [0] else [])
        + (["--variants", *(repr(v) for v in args.variants)] if args.variants else [])
        + (["--val-scenes", str(args.val_scenes)] if args.val_scenes != 1 else [])
        + (["--unets-from", str(args.unets_from)] if args.unets_from else [])
        + (["--sources", *args.sources] if args.sources else [])
        + (["--name", args.name] if args.name else [])
    )
    results = {"command": command, "seeds": args.seeds, "per_seed": per_seed}
    stem = args.name or "joint_ablation" + ("_quick" if args.quick else "")
    write_pages(RESULTS_DIR, stem, results, markdown(results))
    return results


if __name__ == "__main__":
    main()
