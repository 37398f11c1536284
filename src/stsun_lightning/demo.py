"""The demo: train one STSUN model on every SpectralWorld source, report, predict scenes.

``python -m stsun_lightning.demo --config configs/demo.yaml`` (what ``make demo`` runs):

1. ``stsun fit`` with the config (the world is generated on first use);
2. ``stsun validate`` of the last checkpoint: every source's metrics against the
   demo's goals, written to ``<run>/demo_metrics.json`` and ``.md``;
3. ``stsun predict`` of the validation scene of every source, whole, with sliding
   windows, to Cloud-Optimized GeoTIFFs (class maps or values, and class
   probabilities) in ``<run>/predictions/<source>/``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from stsun_lightning.cli import build_cli
from stsun_lightning.data.datamodules.world import SpectralWorldDataModule
from stsun_lightning.io import write_json_atomic
from stsun_lightning.predict import GeoTiffPredictionWriter

__all__ = ["GOALS", "main", "run_demo"]

GOALS: dict[str, tuple[str, str, float]] = {
    # source: (metric, comparison, threshold); "height_std" is replaced by the measured std.
    "landsat8_landcover": ("miou", ">=", 0.70),
    "aerial_landcover": ("miou", ">=", 0.70),
    "s1s2_landcover": ("miou", ">=", 0.70),
    "s2_clouds": ("iou_cloud", ">=", 0.80),
    "s2_change": ("f1_change", ">=", 0.60),
    "s2_crops": ("miou", ">=", 0.60),
    "canopy_height": ("mae", "<=", 0.5),  # × the standard deviation of the heights
}


def _height_std(datamodule: SpectralWorldDataModule) -> float:
    """Standard deviation of the labelled canopy heights of the validation scenes."""
    import numpy as np

    values = []
    for scene in datamodule.scenes("canopy_height", "val"):
        assert scene.labels is not None
        values.append(scene.labels.read(scene.extent.bounds).ravel())
    all_values = np.concatenate(values)
    return float(all_values[np.isfinite(all_values)].std())


def _report(metrics: dict[str, float], datamodule: SpectralWorldDataModule) -> list[dict[str, Any]]:
    rows = []
    for source, (metric, comparison, threshold) in GOALS.items():
        if source not in datamodule.sources:
            continue
        if source == "canopy_height":
            threshold = threshold * _height_std(datamodule)
        value = metrics.get(f"val/{source}/{metric}", float("nan"))
        met = value >= threshold if comparison == ">=" else value <= threshold
        rows.append(
            {
                "source": source,
                "metric": metric,
                "value": value,
                "goal": f"{comparison} {threshold:.3f}",
                "met": bool(met),
            }
        )
    return rows


def run_demo(config: str, extra: list[str] | None = None) -> dict[str, Any]:
    """Train, validate and predict as the module docstring says.

    Args:
        config: path of the LightningCLI config.
        extra: more CLI arguments (e.g. ``["--trainer.max_steps=10"]``).

    Returns:
        The summary written to ``demo_metrics.json``.
    """
    extra = extra or []
    started = time.perf_counter()
    fit = build_cli(["fit", f"--config={config}", *extra])
    train_seconds = time.perf_counter() - started
    run_dir = Path(fit.trainer.log_dir or fit.trainer.default_root_dir)
    checkpoint = (
        fit.trainer.checkpoint_callback.last_model_path
        or fit.trainer.checkpoint_callback.best_model_path
    )
    validation = build_cli(
        [
            "validate",
            f"--config={config}",
            *extra,
            f"--ckpt_path={checkpoint}",
            "--trainer.logger=false",
        ]
    )
    metrics = {k: float(v) for k, v in validation.trainer.callback_metrics.items()}
    datamodule = validation.datamodule
    rows = _report(metrics, datamodule)
    prediction = build_cli(
        [
            "predict",
            f"--config={config}",
            *extra,
            f"--ckpt_path={checkpoint}",
            "--trainer.logger=false",
            "--trainer.callbacks+=stsun_lightning.predict.GeoTiffPredictionWriter",
            f"--trainer.callbacks.output_dir={run_dir / 'predictions'}",
            "--trainer.callbacks.probabilities=uint8",
            "--trainer.callbacks.overwrite=true",
        ]
    )
    writer = next(c for c in prediction.trainer.callbacks if isinstance(c, GeoTiffPredictionWriter))
    predictions = writer.written
    summary = {
        "config": config,
        "extra_arguments": extra,
        "checkpoint": str(checkpoint),
        "train_seconds": round(train_seconds, 1),
        "steps": fit.trainer.global_step,
        "torch_threads": torch.get_num_threads(),
        "goals": rows,
        "metrics": metrics,
        "predictions": [str(p) for p in predictions],
    }
    write_json_atomic(run_dir / "demo_metrics.json", summary)
    (run_dir / "demo_metrics.md").write_text(_markdown(summary))
    print(_markdown(summary))
    print(
        f"TensorBoard: tensorboard --logdir {run_dir.parent}\nPredictions: {run_dir / 'predictions'}"
    )
    return summary


def _markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# Demo: {summary['steps']} steps in {summary['train_seconds']:.0f} s ({summary['torch_threads']} threads)",
        "",
        "| source | metric | value | goal | met |",
        "|---|---|---:|---|---|",
    ]
    for row in summary["goals"]:
        lines.append(
            f"| {row['source']} | {row['metric']} | {row['value']:.3f} | {row['goal']} | {'yes' if row['met'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """``python -m stsun_lightning.demo --config configs/demo.yaml [CLI overrides...]``."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; on 2 cores one thread computes and one DataLoader worker reads (measured fastest)",
    )
    args, extra = parser.parse_known_args(argv)
    torch.set_num_threads(args.threads)
    summary = run_demo(args.config, extra)
    print(json.dumps({r["source"]: r["met"] for r in summary["goals"]}))


if __name__ == "__main__":
    main()
