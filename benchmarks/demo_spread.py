"""How much of the demo's seed-to-seed spread is the validation's, and how much the training's?

Run from the repository root, on the checkpoints of demo runs of one config with
different ``--seed_everything`` (the same world)::

    python benchmarks/demo_spread.py --config configs/demo.yaml \
        --checkpoints outputs/demo/lightning_logs/version_0/checkpoints/last.ckpt \
                      outputs/demo_seed1/lightning_logs/version_0/checkpoints/last.ckpt

Every checkpoint scores each validation scene of each source on its own (the demo's
validation tiles, the project's metric classes). The scenes are then drawn again with
replacement (a bootstrap over scenes, the same draw for every checkpoint): the spread of
a source's score over the draws is what another set of as many scenes could move it by,
the validation's share; the paired draw of the difference between two runs says
whether their gap would survive another set of scenes. What remains is the training
run's. Results: ``benchmarks/results/demo_spread.{json,md}``.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import yaml
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy_report import write_pages
from stsun_lightning.batch import collate_batches
from stsun_lightning.data.datamodules.world import SpectralWorldDataModule
from stsun_lightning.data.sources import SourceInfo
from stsun_lightning.demo import GOALS
from stsun_lightning.tasks.metrics import SourceMetrics
from stsun_lightning.tasks.module import StsunTask

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SceneOutputs = list[tuple[Tensor, Tensor]]
"""Per scene: the network's output (N, To, K or V, H, W) and the target of its tiles."""


def scene_outputs(
    task: StsunTask, dataset: Any, batch_size: int = 8
) -> tuple[SourceInfo, SceneOutputs]:
    """Run ``task`` over a validation dataset of patches, gathered by scene.

    Args:
        task: the trained module (eval mode).
        dataset: one source's validation dataset (``ScenePatchDataset``: a grid of
            ``PatchRef`` over its scenes, in scene order).
        batch_size: tiles per forward pass.

    Returns:
        The source and, per scene, its tiles' outputs and targets.
    """
    by_scene: dict[int, list[int]] = {}
    for index, patch in enumerate(dataset.patches):
        by_scene.setdefault(patch.scene, []).append(index)
    source = dataset.source
    outputs: SceneOutputs = []
    with torch.inference_mode():
        for indices in by_scene.values():
            predictions, targets = [], []
            for start in range(0, len(indices), batch_size):
                batch = collate_batches([dataset[i] for i in indices[start : start + batch_size]])
                output = task(batch)
                prediction = output.logits if output.logits is not None else output.values
                assert prediction is not None and batch.target is not None
                predictions.append(prediction)
                targets.append(batch.target)
            outputs.append((torch.cat(predictions), torch.cat(targets)))
    return source, outputs


def score(source: SourceInfo, outputs: SceneOutputs, metric: str, scenes: Sequence[int]) -> float:
    """``metric`` of the source over ``scenes`` (indices into ``outputs``, repeats allowed)."""
    metrics = SourceMetrics(source)
    for index in scenes:
        metrics.update(*outputs[index])
    return float(metrics.compute()[metric])


def bootstrap(
    scorers: Sequence[Callable[[Sequence[int]], float]], scenes: int, draws: int, seed: int
) -> np.ndarray:
    """Scores of every scorer on ``draws`` resamples of the scenes, the same for all.

    Args:
        scorers: one per run: the scenes drawn -> the score.
        scenes: scenes to draw from (with replacement, as many as there are).
        draws: resamples.
        seed: seed of the draws.

    Returns:
        (draws, runs).
    """
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, scenes, size=(draws, scenes))
    return np.array([[scorer(list(pick)) for scorer in scorers] for pick in picks])


def spread_of_runs(
    names: Sequence[str], full: Sequence[float], drawn: np.ndarray
) -> dict[str, Any]:
    """Largest gap between runs, and each run's and each pair's spread under the draws.

    Args:
        names: the runs.
        full: each run's score on all the scenes.
        drawn: (draws, runs), :func:`bootstrap`'s scores.
    """
    pairs = []
    for a, b in itertools.combinations(range(len(names)), 2):
        difference = drawn[:, a] - drawn[:, b]
        pairs.append(
            {
                "runs": [names[a], names[b]],
                "gap": round(full[a] - full[b], 4),
                "gap_std_over_scenes": round(float(difference.std()), 4),
            }
        )
    widest = max(pairs, key=lambda p: abs(p["gap"]))
    return {
        "scores": {n: round(v, 4) for n, v in zip(names, full, strict=True)},
        "largest_gap": round(abs(widest["gap"]), 4),
        "largest_gap_runs": widest["runs"],
        "largest_gap_std_over_scenes": widest["gap_std_over_scenes"],
        "score_std_over_scenes": round(float(drawn.std(0).mean()), 4),
        "pairs": pairs,
    }


def datamodule_of(config: Path) -> SpectralWorldDataModule:
    """The config's SpectralWorld datamodule (its world generated on first use)."""
    data = yaml.safe_load(config.read_text())["data"]
    options = dict(data.get("init_args", data))
    options["num_workers"] = 0
    datamodule = SpectralWorldDataModule(**options)
    datamodule.setup("validate")
    return datamodule


def run(config: Path, checkpoints: Sequence[Path], draws: int, seed: int) -> dict[str, Any]:
    """Score every checkpoint per scene and bootstrap the scenes; one entry per source."""
    datamodule = datamodule_of(config)
    names = [_run_name(path) for path in checkpoints]
    datasets = datamodule.datasets("val")  # built once, read by every checkpoint
    per_run: list[dict[str, tuple[SourceInfo, SceneOutputs]]] = []
    for path in checkpoints:
        task = StsunTask.load_from_checkpoint(str(path), map_location="cpu").eval()
        per_run.append({d.source.name: scene_outputs(task, d) for d in datasets})
    sources: dict[str, Any] = {}
    for name, (metric, _, _) in GOALS.items():
        if name not in per_run[0]:
            continue
        source, first = per_run[0][name]
        every = list(range(len(first)))
        scorers = [functools.partial(score, source, run[name][1], metric) for run in per_run]
        full = [scorer(every) for scorer in scorers]
        drawn = bootstrap(scorers, len(every), draws, seed)
        sources[name] = {
            "metric": metric,
            "scenes": len(every),
            **spread_of_runs(names, full, drawn),
        }
        print(name, sources[name]["largest_gap"], sources[name]["largest_gap_std_over_scenes"])
    return {
        "command": " ".join(
            ["python benchmarks/demo_spread.py", "--config", str(config), "--checkpoints"]
            + [str(p) for p in checkpoints]
            + (["--draws", str(draws)] if draws != 200 else [])
        ),
        "runs": names,
        "draws": draws,
        "sources": sources,
    }


def _run_name(checkpoint: Path) -> str:
    """The run's folder (``outputs/<run>/lightning_logs/...``), else the file's stem."""
    parts = checkpoint.parts
    return (
        parts[parts.index("lightning_logs") - 1] if "lightning_logs" in parts else checkpoint.stem
    )


def markdown(result: dict[str, Any]) -> str:
    """One row per source: the runs' scores, the largest gap and its spread over scenes."""
    runs = result["runs"]
    lines = [
        "# Demo seed spread: the validation's share and the training's",
        "",
        f"`{result['command']}`: each run scored per validation scene; "
        f"{result['draws']} bootstrap draws of the scenes (the same for every run).",
        "",
        "| source | metric | scenes | " + " | ".join(runs) + " | largest gap | its std over scenes "
        "| score std over scenes |",
        "|---|---|---:|" + "---:|" * len(runs) + "---:|---:|---:|",
    ]
    for name, entry in result["sources"].items():
        cells = " | ".join(f"{entry['scores'][r]:.3f}" for r in runs)
        lines.append(
            f"| {name} | {entry['metric']} | {entry['scenes']} | {cells} | "
            f"{entry['largest_gap']:.3f} | {entry['largest_gap_std_over_scenes']:.3f} | "
            f"{entry['score_std_over_scenes']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``--config``, ``--checkpoints``, ``--draws``, ``--name``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    parser.add_argument("--checkpoints", type=Path, nargs="+", required=True)
    parser.add_argument("--draws", type=int, default=200, help="bootstrap draws of the scenes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws")
    parser.add_argument("--name", default="demo_spread", help="stem of the result files")
    args = parser.parse_args(argv)
    if len(args.checkpoints) < 2:
        parser.error("--checkpoints: expected at least two runs to compare")
    missing = [str(p) for p in args.checkpoints if not p.is_file()]
    if missing:
        parser.error(f"--checkpoints: no such file: {', '.join(missing)}")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    result = run(args.config, args.checkpoints, args.draws, args.seed)
    write_pages(RESULTS_DIR, args.name, result, markdown(result))
    return result


if __name__ == "__main__":
    main()
