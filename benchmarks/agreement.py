"""Do ``stsun validate`` and the maps ``stsun predict`` writes earn the same score?

Run from the repository root::

    python benchmarks/agreement.py            # 3 sources, 600 steps (~15 min, 2 cores)
    python benchmarks/agreement.py --quick    # 3 sources, 40 steps, smaller scenes (~3 min)

On SpectralWorld (three land-cover sources: Landsat-8, Sentinel-1 + 2, aerial RGB-IR),
an ``stsun_tiny`` is trained with ``stsun fit``. Then, from its checkpoint:

1. ``stsun validate`` scores the held-out scenes (the last three of each source in the
   full mode, the last one in the quick mode);
2. ``stsun predict`` writes those scenes' maps as COGs (the datamodule's prediction
   jobs, the CLI's default writer), with sliding windows of the datamodule's default
   size and overlap, and again with windows equal to the validation tiles;
3. the written COGs are scored against the label rasters with the same metric class
   the task logs (:class:`~stsun_lightning.tasks.metrics.SourceMetrics`);
4. the Landsat-8 scene is also predicted through ``RasterPredictionDataModule`` with
   the same input specification a user would write (the raster datamodule's own
   reading of the files): its map must equal the datamodule's pixel for pixel.

Goal: |validate mIoU − COG mIoU| ≤ 0.01 for every source. Results:
``benchmarks/results/agreement{,_quick}.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

RESULTS = Path(__file__).resolve().parent / "results"
SOURCES = ("landsat8_landcover", "s1s2_landcover", "aerial_landcover")
GOAL = 0.01


def _world_args(root: Path, quick: bool) -> list[str]:
    return [
        "--data=stsun_lightning.data.SpectralWorldDataModule",
        f"--data.root={root}",
        f"--data.source_names=[{', '.join(SOURCES)}]",
        f"--data.scene_size={128 if quick else 256}",
        # Full: three held-out scenes per source, since one 256² scene's score moves by
        # about 0.01 between two equally good ways of tiling it.
        f"--data.scenes_per_source={3 if quick else 6}",
        f"--data.val_scenes={1 if quick else 3}",
        "--data.patch_size=64",
        "--data.batch_size=8",
        "--data.num_workers=0",
    ]


def _trainer_args(run: Path, steps: int, overrides: dict[str, Any] | None = None) -> list[str]:
    return [
        "--model.model=stsun_tiny",
        f"--model.model_overrides={json.dumps(overrides or {})}",
        f"--model.warmup_steps={max(steps // 10, 1)}",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.max_epochs=1",
        f"--data.train_batches_per_epoch={steps}",
        "--trainer.limit_val_batches=0",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={run}",
        "--seed_everything=0",
    ]


def score_maps(datamodule: Any, folder: Path) -> dict[str, float]:
    """MIoU of the written class maps of every validation scene, per source."""
    import numpy as np
    import rasterio
    import torch

    from stsun_lightning.tasks.metrics import SourceMetrics

    scores = {}
    for source in datamodule.source_infos:
        metrics = SourceMetrics(source)
        for scene in datamodule.scenes(source.name, "val"):
            with rasterio.open(folder / source.name / f"{scene.name}.tif") as dst:
                classes = dst.read(1).astype(np.int64)
                nodata = int(dst.nodata)
            target = scene.labels.read(scene.extent.bounds)  # (1, H, W), -1 = no label
            target[:, classes == nodata] = -1
            predicted = np.where(classes == nodata, 0, classes)
            logits = torch.nn.functional.one_hot(
                torch.from_numpy(predicted), len(source.categories)
            )
            logits = logits.permute(2, 0, 1)[None, None].float()  # (1, To, K, H, W)
            metrics.update(logits, torch.from_numpy(target)[None])
        scores[source.name] = float(metrics.compute()["miou"])
    return scores


def run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import rasterio
    import torch

    from stsun_lightning.cli import build_cli

    torch.set_num_threads(args.threads)
    overrides = dict(json.loads(args.model_overrides))
    work = Path(args.workdir)
    root, run_dir = work / "world", work / ("run_quick" if args.quick else "run")
    steps = 40 if args.quick else args.steps
    shutil.rmtree(run_dir, ignore_errors=True)  # the newest checkpoint is this run's
    world = _world_args(root, args.quick)
    started = time.perf_counter()
    build_cli(["fit", *world, *_trainer_args(run_dir, steps, overrides)])
    train_seconds = time.perf_counter() - started
    checkpoint = sorted(run_dir.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)[-1]
    validated = build_cli(
        ["validate", *world, *_trainer_args(run_dir, steps, overrides), "--trainer.limit_val_batches=1.0",
         f"--ckpt_path={checkpoint}"]
    )  # fmt: skip
    metrics = {k: float(v) for k, v in validated.trainer.callback_metrics.items()}
    rows, maps = [], {}
    for label, window, overlap in (
        ("default windows", None, None),
        ("validation tiles", 64, 0),
        ("larger windows", 128, 32),
    ):
        options = (
            []
            if window is None
            else [f"--data.predict_window={window}", f"--data.predict_overlap={overlap}"]
        )
        out = work / f"predictions_{window or 'default'}"
        predicted = build_cli(
            ["predict", *world, *options, *_trainer_args(run_dir, steps, overrides), f"--ckpt_path={checkpoint}",
             "--trainer.callbacks+=stsun_lightning.predict.GeoTiffPredictionWriter",
             f"--trainer.callbacks.output_dir={out}", "--trainer.callbacks.overwrite=true"]
        )  # fmt: skip
        datamodule = predicted.datamodule
        scores = score_maps(datamodule, out)
        maps[label] = out
        for source, score in scores.items():
            validated_score = metrics[f"val/{source}/miou"]
            rows.append({
                "source": source, "windows": label,
                "window": window or datamodule.predict_window,
                "overlap": overlap if window is not None else datamodule.predict_overlap,
                "validate_miou": validated_score, "cog_miou": score,
                "difference": score - validated_score,
                "met": abs(score - validated_score) <= GOAL,
            })  # fmt: skip
    # The user's path: the same Landsat-8 scene through the raster datamodule.
    scene = next(iter(datamodule.scenes("landsat8_landcover", "val")))
    files = scene.files["landsat8"]
    raster_out = work / "predictions_rasters"
    categories = ",".join(
        datamodule.source_infos[
            [s.name for s in datamodule.source_infos].index("landsat8_landcover")
        ].categories
    )
    build_cli(
        ["predict", "--config=configs/predict.yaml",
         f"--data.inputs={{landsat8: {{sensor: landsat8_oli_tirs, bands: [B1, B2, B3, B4, B5, B6, B7, B10], "
         f"scale: 0.0001, paths: [{', '.join(map(str, files))}]}}}}",
         f"--data.categories=[{categories}]", "--data.window=128", "--data.overlap=32",
         "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
         f"--trainer.callbacks.output_dir={raster_out}", "--trainer.callbacks.overwrite=true",
         f"--trainer.default_root_dir={run_dir}", f"--ckpt_path={checkpoint}"]
    )  # fmt: skip
    with (
        rasterio.open(raster_out / "landsat8.tif") as a,
        rasterio.open(maps["larger windows"] / "landsat8_landcover" / f"{scene.name}.tif") as b,
    ):
        same_grid = (a.crs, a.transform, a.shape) == (b.crs, b.transform, b.shape)
        identical = bool(same_grid and np.array_equal(a.read(1), b.read(1)))
    return {
        "quick": args.quick,
        "steps": steps,
        "model_overrides": overrides,
        "train_seconds": train_seconds,
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
        "command": " ".join(["python", "benchmarks/agreement.py", *sys.argv[1:]]),
        "rows": rows,
        "raster_datamodule_identical": identical,
        "goals": {
            "met": sum(r["met"] for r in rows) + int(identical),
            "total": len(rows) + 1,
        },
    }


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Validation against written maps",
        "",
        f"`{report['command']}` — `stsun_tiny` trained {report['steps']} steps on three "
        f"SpectralWorld sources ({report['train_seconds']:.0f} s), {report['machine']}.",
        "",
        "`stsun validate` on the held-out scenes against `stsun predict`'s COGs of the same "
        f"scenes scored with the same metric. Goal: |difference| ≤ {GOAL}.",
        "",
        "| source | prediction windows | window / overlap | validate mIoU | COG mIoU | difference | goal |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['source']} | {r['windows']} | {r['window']} / {r['overlap']} | "
            f"{r['validate_miou']:.4f} | {r['cog_miou']:.4f} | {r['difference']:+.4f} | "
            f"{'met' if r['met'] else 'not met'} |"
        )
    same = "identical" if report["raster_datamodule_identical"] else "DIFFERENT"
    lines += [
        "",
        "The Landsat-8 scene predicted through `RasterPredictionDataModule` (the input "
        f"specification a user writes, `configs/predict.yaml`): {same} to the datamodule's map, "
        "pixel for pixel.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default="/tmp/stsun_agreement")
    parser.add_argument(
        "--model_overrides", default="{}", help="JSON of network options (e.g. an ablation)"
    )
    parser.add_argument("--tag", default="", help="suffix of the result files")
    args = parser.parse_args()
    report = run(args)
    suffix = ("_quick" if args.quick else "") + (f"_{args.tag}" if args.tag else "")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"agreement{suffix}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"agreement{suffix}.md").write_text(_markdown(report))
    print(_markdown(report))


if __name__ == "__main__":
    main()
