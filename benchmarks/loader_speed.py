"""Patches per second of the GeoTIFF datamodule against TorchGeo's reader and raw reads.

Three loaders read the same files in one process, round-robin, each through a
DataLoader of batches of 8:

- ``raw``: rasterio windowed reads (all bands of each date's file in one call) of the
  same random windows, handles opened per worker: the ceiling on this machine;
- ``torchgeo``: TorchGeo 0.10's ``RasterDataset(time_series=True) & labels``
  (``IntersectionDataset``) sampled by ``RandomPatchSampler``;
- ``ours``: :class:`~stsun_lightning.data.GeoTiffDataModule`'s training loader (the
  same reads plus normalisation, masks, dates and the batch contract);
- ``coarse``: the same with ``coarsen=0.5`` (half of the crops read 2 or 3 times larger
  and averaged down; factor 3 only where its crop fits the 512 px blocks): what coarse
  crops cost in reading, against ``ours``.

Files: a 6-date series of 13-band Sentinel-2 L1C files (uint16, tiled 256) and a label
raster, in three regimes: ``deflate`` (DEFLATE, 16 MiB GDAL cache: decoding
dominates), ``uncompressed`` (16 MiB GDAL cache: reads come from the OS page cache)
and ``cached`` (uncompressed, on tmpfs, a GDAL cache that holds every block, warmed).
Each figure is a ratio against ``raw`` at equal workers and patch size, the median of
the round-robin repetitions; memory is each worker's private memory (USS) after the
run.

    python benchmarks/loader_speed.py            # full: 1024 px files, 3 repetitions
    python benchmarks/loader_speed.py --quick    # CI: 512 px files, 1 repetition
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.env
import torch
from rasterio.windows import Window
from torch.utils.data import DataLoader, Dataset
from torchgeo.datasets import RasterDataset, stack_samples
from torchgeo.samplers import RandomPatchSampler

from stsun_lightning.data import GeoTiffDataModule, get_sensor
from stsun_lightning.data.io.handles import Handles

RESULTS = Path(__file__).parent / "results"
DATES = ["20200105", "20200304", "20200503", "20200702", "20200831", "20201030"]
BANDS = get_sensor("sentinel2_l1c").band_names
BATCH = 8
warnings.filterwarnings("ignore", message="The inplace keyword")


def write_files(folder: Path, size: int, compress: str | None) -> Path:
    """The 6-date, 13-band series and the labels, tiled 256, in ``folder``."""
    rng = np.random.default_rng(0)
    profile: dict[str, Any] = dict(
        driver="GTiff",
        width=size,
        height=size,
        crs="EPSG:32632",
        transform=rasterio.transform.from_origin(500_000, 5_000_000, 10, 10),
        tiled=True,
        blockxsize=256,
        blockysize=256,
    )
    if compress:
        profile.update(compress=compress, predictor=2)
    folder.mkdir(parents=True, exist_ok=True)
    smooth = rng.integers(500, 4000, (len(BANDS), size // 16, size // 16)).astype(np.uint16)
    base = np.kron(smooth, np.ones((16, 16), np.uint16))
    for day in DATES:
        data = base + rng.integers(0, 200, base.shape, dtype=np.uint16)
        with rasterio.open(
            folder / f"s2_{day}.tif", "w", count=len(BANDS), dtype="uint16", **profile
        ) as dst:
            dst.write(data)
    labels = (np.kron(rng.integers(1, 4, (size // 32, size // 32)), np.ones((32, 32)))).astype(
        np.uint8
    )
    with rasterio.open(folder / "labels.tif", "w", count=1, dtype="uint8", **profile) as dst:
        dst.write(labels[None])
    return folder


class RawWindows(Dataset[dict[str, torch.Tensor]]):
    """Windows read with rasterio: each date's file in one call, handles per worker."""

    def __init__(self, folder: Path, corners: list[tuple[int, int]], patch: int) -> None:
        self.files = [str(folder / f"s2_{d}.tif") for d in DATES]
        self.labels = str(folder / "labels.tif")
        self.corners, self.patch = corners, patch
        self.handles = Handles()

    def __len__(self) -> int:
        return len(self.corners)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row, col = self.corners[index]
        window = Window(col, row, self.patch, self.patch)
        image = np.stack([self.handles.get(f).read(window=window) for f in self.files])
        mask = self.handles.get(self.labels).read(1, window=window)
        return {
            "image": torch.from_numpy(image.astype(np.float32)),
            "mask": torch.from_numpy(mask.astype(np.int64)),
        }


class SeriesImages(RasterDataset):
    """TorchGeo's own time-series reader over the series."""

    filename_glob = "s2_*.tif"
    filename_regex = r"s2_(?P<date>\d{8})"
    date_format = "%Y%m%d"
    all_bands = tuple(BANDS)


class SeriesLabels(RasterDataset):
    """TorchGeo's reader over the labels."""

    filename_glob = "labels.tif"
    is_image = False


def series_datamodule(
    folder: Path, patch: int, count: int, workers: int, augment: bool, coarsen: float = 0.0
) -> GeoTiffDataModule:
    """Our GeoTIFF datamodule over the series in ``folder``, set up for training.

    Every block trains and the statistics are given, so setup reads nothing but the
    index: the timed loop is the reading alone. ``coarsen`` draws that share of coarse
    crops, by the factors 2 and 3 whose crops fit a block.
    """
    block = max(patch, 512)
    module = GeoTiffDataModule(
        inputs={"s2": {"sensor": "sentinel2_l1c", "paths": str(folder / "s2_*.tif")}},
        labels={
            "paths": str(folder / "labels.tif"),
            "task": "semantic_segmentation",
            "classes": {1: "water", 2: "tree_cover", 3: "built_up"},
        },
        patch_size=patch,
        batch_size=BATCH,
        split={"val": 0, "test": 0, "block_size": block},
        train_samples=count,
        statistics={"s2": {"mean": [2000.0] * len(BANDS), "std": [1000.0] * len(BANDS)}},
        augment=augment,
        num_workers=workers,
        coarsen=coarsen,
        coarsen_factors=[f for f in (2, 3) if f * patch <= block],
    )
    module.setup("fit")
    return module


def loaders(
    folder: Path, patch: int, count: int, workers: int, cache_mib: int
) -> dict[str, DataLoader]:
    """The three loaders over ``folder``, each yielding about ``count`` patches."""
    size = rasterio.open(folder / "labels.tif").width
    rng = np.random.default_rng(1)
    corners = [tuple(int(v) for v in rng.integers(0, size - patch, 2)) for _ in range(count)]
    common: dict[str, Any] = dict(
        num_workers=workers,
        persistent_workers=workers > 0,
        worker_init_fn=lambda _: rasterio.env.set_gdal_config("GDAL_CACHEMAX", cache_mib * 2**20),
    )
    raw = DataLoader(RawWindows(folder, corners, patch), batch_size=BATCH, **common)
    images = SeriesImages(str(folder), time_series=True)
    series = images & SeriesLabels(str(folder), time_series=True)
    sampler = RandomPatchSampler(series, size=patch, length=count, generator=2)
    torchgeo = DataLoader(
        series, sampler=sampler, batch_size=BATCH, collate_fn=stack_samples, **common
    )
    built = {"raw": raw, "torchgeo": torchgeo}
    for name, coarsen in (("ours", 0.0), ("coarse", 0.5)):
        module = series_datamodule(folder, patch, count, workers, augment=False, coarsen=coarsen)
        built[name] = module.train_dataloader()
        built[name].worker_init_fn = common["worker_init_fn"]
    return built


def private_mib(pid: int) -> float:
    """Private memory (USS: private clean + dirty) of a process, in MiB."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total / 1024


def children() -> set[int]:
    """Process ids of this process's children (DataLoader workers)."""
    pids: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as f:
            pids.update(int(p) for p in f.read().split())
    return pids


def run(loader: DataLoader, workers: dict[int, set[int]]) -> tuple[float, list[float]]:
    """Patches per second over one pass (after the first batch), and worker memory.

    ``workers`` maps each loader (by id) to its worker processes, found as the children
    that appear during its first pass (workers are persistent).
    """
    before = children()
    iterator = iter(loader)
    next(iterator)
    patches = 0
    start = time.perf_counter()
    for batch in iterator:
        patches += len(batch.source) if hasattr(batch, "source") else batch["image"].shape[0]
    elapsed = time.perf_counter() - start
    mine = workers.setdefault(id(loader), children() - before)
    memory = [private_mib(pid) for pid in sorted(mine)]
    return patches / max(elapsed, 1e-9), memory


def measure(
    folder: Path, regime: str, patch: int, workers: int, count: int, reps: int, cache_mib: int
) -> dict[str, Any]:
    """Round-robin repetitions of the three loaders; medians and ratios against raw."""
    rasterio.env.set_gdal_config("GDAL_CACHEMAX", cache_mib * 2**20)
    built = loaders(folder, patch, count, workers, cache_mib)
    worker_pids: dict[int, set[int]] = {}
    if regime == "cached":  # warm GDAL's block cache (in each worker: persistent)
        for loader in built.values():
            run(loader, worker_pids)
    speeds: dict[str, list[float]] = {name: [] for name in built}
    memory: dict[str, list[float]] = {}
    for _ in range(reps):
        for name, loader in built.items():
            rate, mib = run(loader, worker_pids)
            speeds[name].append(rate)
            memory[name] = mib
    raw = statistics.median(speeds["raw"])
    row = {
        "regime": regime,
        "patch": patch,
        "workers": workers,
        "patches_per_s": {n: round(statistics.median(v), 1) for n, v in speeds.items()},
        "ratio_to_raw": {n: round(statistics.median(v) / raw, 3) for n, v in speeds.items()},
        "worker_private_mib": {n: [round(m) for m in v] for n, v in memory.items()},
    }
    print(json.dumps(row), flush=True)
    return row


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Loader speed ({report['mode']})",
        "",
        f"{report['size']}² px files, 6 dates × 13 bands (Sentinel-2 L1C, uint16, tiled 256), "
        f"batches of {BATCH}; median of {report['repetitions']} round-robin repetition(s). "
        "Ratios are patches/s against raw rasterio reads at equal workers (goal: ours ≥ 0.70); "
        "coarse / ours is the datamodule with half of its crops coarse (``coarsen=0.5``) "
        "against itself without.",
        "",
        "| regime | patch | workers | raw patches/s | torchgeo / raw | ours / raw | goal | "
        "coarse / ours | worker MiB raw / torchgeo / ours |",
        "|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for row in report["rows"]:
        ratio = row["ratio_to_raw"]
        mem = row["worker_private_mib"]
        memory = " / ".join(
            str(round(sum(mem[n]) / len(mem[n]))) if mem[n] else "–"
            for n in ("raw", "torchgeo", "ours")
        )
        lines.append(
            f"| {row['regime']} | {row['patch']} | {row['workers']} | "
            f"{row['patches_per_s']['raw']} | {ratio['torchgeo']:.2f} | {ratio['ours']:.2f} | "
            f"{'met' if ratio['ours'] >= 0.7 else 'not met'} | "
            f"{ratio['coarse'] / ratio['ours']:.2f} | {memory} |"
        )
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    labels = [f"{r['regime']}\n{r['patch']}px w{r['workers']}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.9), 3.8))
    for offset, name in ((-0.2, "torchgeo"), (0.2, "ours")):
        ax.bar(x + offset, [r["ratio_to_raw"][name] for r in rows], 0.4, label=name)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(0.7, color="r", lw=0.8, ls="--", label="goal 0.7")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("patches/s ÷ raw rasterio")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small files, one repetition")
    args = parser.parse_args()
    torch.set_num_threads(1)
    size, reps = (512, 1) if args.quick else (1024, 3)
    counts = {64: 96, 256: 24} if args.quick else {64: 240, 256: 48}
    worker_counts = (0, 2)
    report: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "size": size,
        "repetitions": reps,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "rows": [],
    }
    disk = Path(tempfile.mkdtemp(prefix="stsun_loader_"))
    shm = (
        Path(tempfile.mkdtemp(prefix="stsun_loader_", dir="/dev/shm"))
        if Path("/dev/shm").is_dir()
        else disk
    )
    try:
        folders = {
            "deflate": (write_files(disk / "deflate", size, "DEFLATE"), 16),
            "uncompressed": (write_files(disk / "plain", size, None), 16),
            "cached": (write_files(shm / "plain", size, None), 2048),
        }
        for regime, (folder, cache_mib) in folders.items():
            for patch, count in counts.items():
                for workers in worker_counts:
                    report["rows"].append(
                        measure(folder, regime, patch, workers, count, reps, cache_mib)
                    )
    finally:
        shutil.rmtree(disk, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)
    suffix = "_quick" if args.quick else ""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"loader_speed{suffix}.json").write_text(json.dumps(report, indent=1) + "\n")
    (RESULTS / f"loader_speed{suffix}.md").write_text(markdown(report))
    plot(report, RESULTS / f"loader_speed{suffix}.png")
    print(markdown(report))


if __name__ == "__main__":
    main()
