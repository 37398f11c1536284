"""Whole-raster prediction: peak memory against raster size, throughput against forward alone.

Run from the repository root::

    python benchmarks/predict_memory.py            # 2048², 8192², 16384² (~25 min, 2 cores)
    python benchmarks/predict_memory.py --quick    # 512², 1024², 2048² (~2 min)

For each size, a 4-band uint16 Sentinel-2-like raster (DEFLATE, 512² tiles) is written
once into ``--workdir``. A fresh Python process then runs ``trainer.predict`` of an
``stsun_tiny`` task with :class:`RasterPredictionDataModule` and
:class:`GeoTiffPredictionWriter` (class map, COG with overviews), exactly what
``stsun predict`` runs. Band statistics are given, so the run is the streaming loop
alone (computing them reads the raster once more, decimated).

Memory is the anonymous and shared-memory part of the proportional set size (PSS:
pages split between the processes sharing them; ``Pss_Anon + Pss_Shmem``) of the
predicting process and its DataLoader workers, sampled every 50 ms from ``/proc``.
File-backed pages (torch's libraries) are left out: their PSS shrinks whenever another
process maps the same libraries, which made runs on a shared machine disagree by
hundreds of MiB; "beyond the model" subtracts what the process held once torch
was imported and the model built, before prediction. Throughput is windows per
second of the whole run, against the same model's forward alone on the same windows
(already in memory, same batches), measured in the same process just before.

At each size a run adds a second input, a DEM in another CRS (EPSG:3857) and grid (30 m),
read onto the raster's grid window by window through a ``WarpedVRT``: its memory must stay
flat in raster size too.

A last run at the middle size leaves GDAL's block cache at its default (5% of RAM)
to show why ``gdal_cache_mb`` is set. Results: ``benchmarks/results/predict_memory{,_quick}
.{json,md}`` and ``predict_memory{,_quick}.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

RESULTS = Path(__file__).resolve().parent / "results"
BANDS = ["B02", "B03", "B04", "B08"]
STATISTICS = {"s2": {"mean": [900.0, 1100.0, 1000.0, 2600.0], "std": [400.0, 450.0, 500.0, 900.0]}}


def write_raster(path: Path, size: int) -> Path:
    """A smooth, noisy 4-band uint16 raster of ``size``² pixels, written strip by strip."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial.tif")
    rng = np.random.default_rng(0)
    profile = dict(
        driver="GTiff", height=size, width=size, count=4, dtype="uint16", crs="EPSG:32633",
        transform=from_origin(600_000, 5_500_000, 10, 10), nodata=0, tiled=True,
        blockxsize=512, blockysize=512, compress="deflate", BIGTIFF="IF_SAFER",
    )  # fmt: skip
    x = np.arange(size, dtype=np.float32)
    with rasterio.open(tmp, "w", **profile) as dst:
        for top in range(0, size, 512):
            rows = min(512, size - top)
            y = np.arange(top, top + rows, dtype=np.float32)[:, None]
            field = 1 + 0.5 * np.sin(x / 97.0) * np.cos(y / 61.0)
            bands = [
                (base * field + rng.normal(0, 40, (rows, size))).clip(1, 10_000)
                for base in (800, 1000, 900, 2500)
            ]
            dst.write(np.stack(bands).astype(np.uint16), window=Window(0, top, size, rows))
    tmp.rename(path)
    return path


def write_dem(path: Path, raster: Path) -> Path:
    """A static DEM over ``raster``'s footprint in EPSG:3857 at 30 m (another CRS and grid)."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window

    if path.exists():
        return path
    with rasterio.open(raster) as src:
        left, bottom, right, top = transform_bounds(src.crs, "EPSG:3857", *src.bounds)
    width, height = int((right - left) / 30) + 2, int((top - bottom) / 30) + 2
    tmp = path.with_suffix(".partial.tif")
    profile = dict(
        driver="GTiff", height=height, width=width, count=1, dtype="float32", crs="EPSG:3857",
        transform=from_origin(left - 30, top + 30, 30, 30), tiled=True, blockxsize=256,
        blockysize=256, compress="deflate", BIGTIFF="IF_SAFER",
    )  # fmt: skip
    with rasterio.open(tmp, "w", **profile) as dst:
        for row in range(0, height, 512):
            rows = min(512, height - row)
            y = np.arange(row, row + rows, dtype=np.float32)[:, None]
            x = np.arange(width, dtype=np.float32)[None]
            dst.write(
                (200 + 50 * np.sin(x / 40) * np.cos(y / 30))[None],
                window=Window(0, row, width, rows),
            )
    tmp.rename(path)
    return path


def _tree_pss_kib(pid: int) -> int:
    """Anonymous + shared-memory PSS of ``pid`` and its descendants, in KiB."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/smaps_rollup") as f:
                total += sum(
                    int(line.split()[1])
                    for line in f
                    if line.startswith(("Pss_Anon:", "Pss_Shmem:"))
                )
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    stack += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def child(args: argparse.Namespace) -> None:
    """Measure one run (in a fresh process): forward alone, then the whole prediction."""
    import lightning as L
    import torch

    from stsun_lightning.data import RasterPredictionDataModule
    from stsun_lightning.predict import GeoTiffPredictionWriter
    from stsun_lightning.tasks.module import StsunTask

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    task = StsunTask(
        "stsun_tiny",
        sources={
            "landcover": {"task": "semantic_segmentation", "categories": ["a", "b", "c", "d"]}
        },
    ).eval()
    inputs = {"s2": {"sensor": "sentinel2_l2a", "bands": BANDS, "paths": args.raster}}
    statistics = dict(STATISTICS)
    if args.dem:
        inputs["dem"] = {"sensor": "copernicus_dem", "paths": args.dem}
        statistics["dem"] = {"mean": [200.0], "std": [50.0]}
    datamodule = RasterPredictionDataModule(
        inputs=inputs,
        categories=["a", "b", "c", "d"],
        statistics=statistics,
        window=args.window,
        overlap=args.overlap,
        batch_size=args.batch_size,
        num_workers=args.workers[0],
        gdal_cache_mb=args.gdal_cache_mb if args.gdal_cache_mb > 0 else None,
    )
    print(json.dumps({"event": "model_ready"}), flush=True)
    time.sleep(0.3)  # let the parent sample the baseline

    # Forward alone on the first windows, in memory, in the same batches.
    loader = datamodule.predict_dataloader()
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) * args.batch_size >= args.forward_windows:
            break
    with torch.no_grad():
        task(batches[0])  # warm-up
        started = time.perf_counter()
        for batch in batches:
            task(batch)
        forward_seconds = time.perf_counter() - started
    forward_windows = sum(b.batch_size for b in batches)
    del batches, loader

    writer = GeoTiffPredictionWriter(args.output, overwrite=True)
    trainer = L.Trainer(
        accelerator="cpu", logger=False, callbacks=[writer], enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    started = time.perf_counter()
    trainer.predict(task, datamodule=datamodule)
    seconds = time.perf_counter() - started
    windows = len(datamodule.predict_dataloader().dataset)
    print(
        json.dumps(
            {
                "event": "done",
                "windows": windows,
                "seconds": seconds,
                "forward_windows": forward_windows,
                "forward_seconds": forward_seconds,
                "written": [str(p) for p in writer.written],
            }
        ),
        flush=True,
    )


def measure(
    raster: Path,
    output: Path,
    args: argparse.Namespace,
    gdal_cache_mb: int,
    workers: int,
    dem: Path | None = None,
) -> dict[str, Any]:
    """Run :func:`child` in a fresh process, sampling its memory."""
    command = [
        sys.executable, __file__, "--child", "--raster", str(raster), "--output", str(output),
        "--window", str(args.window), "--overlap", str(args.overlap), "--batch-size", str(args.batch_size),
        "--workers", str(workers), "--threads", str(args.threads), "--gdal-cache-mb", str(gdal_cache_mb),
        "--forward-windows", str(args.forward_windows), *(["--dem", str(dem)] if dem else []),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(_tree_pss_kib(process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    baseline, result = None, None
    for line in process.stdout:
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        if event["event"] == "model_ready":
            time.sleep(0.2)
            baseline = max(samples[-3:]) if samples else 0
        elif event["event"] == "done":
            result = event
    process.wait()
    stop.set()
    sampler.join()
    if process.returncode != 0 or result is None:
        raise RuntimeError(f"Prediction run failed ({process.returncode}): {' '.join(command)}")
    peak = max(samples)
    rate = result["windows"] / result["seconds"]
    forward_rate = result["forward_windows"] / result["forward_seconds"]
    return {
        "model_mib": round(baseline / 1024, 1),
        "peak_mib": round(peak / 1024, 1),
        "beyond_model_mib": round((peak - baseline) / 1024, 1),
        "windows": result["windows"],
        "seconds": round(result["seconds"], 1),
        "windows_per_s": round(rate, 3),
        "forward_windows_per_s": round(forward_rate, 3),
        "throughput_ratio": round(rate / forward_rate, 3),
        "gdal_cache_mb": gdal_cache_mb if gdal_cache_mb > 0 else "default",
        "workers": workers,
        "inputs": "s2 + DEM (EPSG:3857, 30 m)" if dem else "s2",
    }


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Whole-raster prediction ({'quick' if report['quick'] else 'full'})",
        "",
        f"stsun_tiny, window {report['window']}, overlap {report['overlap']}, batch "
        f"{report['batch_size']}, {report['threads']} torch threads, class map COG; "
        f"{report['machine']}.",
        "",
        "| raster | inputs | workers | GDAL cache | peak MiB | beyond model MiB | windows/s | forward alone | ratio |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in report["runs"]:
        lines.append(
            f"| {row['size']}² | {row.get('inputs', 's2')} | {row['workers']} | {row['gdal_cache_mb']} | {row['peak_mib']:.0f} | "
            f"{row['beyond_model_mib']:.0f} | {row['windows_per_s']:.2f} | "
            f"{row['forward_windows_per_s']:.2f} | {row['throughput_ratio']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for workers in sorted({r["workers"] for r in report["runs"]}):
        rows = [
            r
            for r in report["runs"]
            if r["workers"] == workers
            and r["gdal_cache_mb"] != "default"
            and r.get("inputs", "s2") == "s2"
        ]
        ax.plot(
            [r["size"] for r in rows],
            [r["peak_mib"] for r in rows],
            "o-",
            label=f"{workers} workers: peak",
        )
        ax.plot(
            [r["size"] for r in rows],
            [r["model_mib"] for r in rows],
            "x--",
            label=f"{workers} workers: model",
        )
    with_dem = [r for r in report["runs"] if r.get("inputs", "s2") != "s2"]
    if with_dem:
        ax.plot(
            [r["size"] for r in with_dem],
            [r["peak_mib"] for r in with_dem],
            "d-",
            label="+ DEM in another CRS: peak",
        )
    default = [r for r in report["runs"] if r["gdal_cache_mb"] == "default"]
    if default:
        ax.plot(
            [r["size"] for r in default],
            [r["peak_mib"] for r in default],
            "s",
            label="GDAL default cache",
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("raster side (pixels)")
    ax.set_ylabel("memory (PSS, MiB)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    ax.set_title("Peak memory of stsun predict against raster size")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="*")
    parser.add_argument("--workdir", default="/tmp/stsun_predict_bench")
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 1])
    parser.add_argument("--forward-windows", type=int, default=8)
    parser.add_argument("--gdal-cache-mb", type=int, default=256)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--raster", help=argparse.SUPPRESS)
    parser.add_argument("--dem", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    sizes = args.sizes or ([512, 1024, 2048] if args.quick else [2048, 8192, 16384])
    workdir = Path(args.workdir)
    runs = []
    for size in sizes:
        raster = write_raster(workdir / f"raster_{size}.tif", size)
        for workers in args.workers:
            row = measure(
                raster, workdir / f"out_{size}_{workers}", args, args.gdal_cache_mb, workers
            )
            row["size"] = size
            runs.append(row)
            print(json.dumps(row), flush=True)
        dem = write_dem(workdir / f"dem_{size}.tif", raster)
        row = measure(
            raster, workdir / f"out_{size}_dem", args, args.gdal_cache_mb, args.workers[0], dem
        )
        row["size"] = size
        runs.append(row)
        print(json.dumps(row), flush=True)
    middle = sizes[len(sizes) // 2]
    row = measure(
        workdir / f"raster_{middle}.tif",
        workdir / f"out_{middle}_default",
        args,
        0,
        args.workers[0],
    )
    row["size"] = middle
    runs.append(row)
    print(json.dumps(row), flush=True)
    report = {
        "quick": args.quick,
        "window": args.window,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
        "command": " ".join(sys.argv),
        "runs": runs,
    }
    suffix = "_quick" if args.quick else ""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"predict_memory{suffix}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"predict_memory{suffix}.md").write_text(_markdown(report))
    _plot(report, RESULTS / f"predict_memory{suffix}.png")
    print(_markdown(report))


if __name__ == "__main__":
    main()
