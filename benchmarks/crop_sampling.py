"""Random training crops per epoch: ours (``RandomCrops``) against TorchGeo's sampler.

Two measurements, each a ratio in one process, round-robin:

1. **Drawing one epoch of crops** over the training blocks of a spatial split (4096² px
   at 10 m, blocks of 512 px, 20% validation, 10% test; 64² and 256² crops, as many as
   the default ``train_samples``, 4 × the tiles of the training blocks), in a square
   region and in a tilted footprint (a scene rotated by 12°, as Landsat's):

   - ``ours``: :func:`~stsun_lightning.data.samplers.split.block_crops`, every crop
     drawn from (seed, epoch, index) (what the workers do, item by item);
   - ``torchgeo``: TorchGeo 0.10's ``RandomPatchSampler`` over the union of the training
     blocks (``roi``), its generator reseeded from (seed, epoch) at each epoch so that
     an epoch is reproducible at all (its own generator runs on from epoch to epoch).

   Besides time: the share of crops that straddle two blocks, and the share of
   training pixels that no crop covered in 8 epochs.

2. **The training data**: :class:`~stsun_lightning.data.GeoTiffDataModule`'s training
   dataset with crops drawn per epoch (``per_epoch``) against the same reader over one
   fixed list of crops drawn once (``fixed``: the behaviour before), on the files of
   ``loader_speed.py`` (6 dates × 13 bands), DEFLATE and cached regimes, flips on; after
   a first unmeasured epoch, each epoch a new one. Timed item by item, the two
   datasets interleaved (time per item, and the crop's draw alone), and as whole passes
   of the DataLoader with 0 and 2 workers, the two loaders in alternating order
   (patches/s).

    python benchmarks/crop_sampling.py            # full: 1024² files, 3 repetitions
    python benchmarks/crop_sampling.py --quick    # CI: 512² files, 1 repetition
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.env
import shapely
import shapely.affinity
import torch
from rasterio.crs import CRS
from torchgeo.datasets import RasterDataset
from torchgeo.samplers import RandomPatchSampler

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loader_speed import BATCH, series_datamodule, write_files
from stsun_lightning.data import GeoTiffDataModule
from stsun_lightning.data.datasets.patches import ScenePatchDataset
from stsun_lightning.data.io.grid import Grid
from stsun_lightning.data.samplers.crops import RandomCrops
from stsun_lightning.data.samplers.split import (
    block_crops,
    block_patches,
    spatial_blocks,
)

RESULTS = Path(__file__).parent / "results"
SEED = 0
FIXED_EPOCH = 1000  # the fixed list is drawn once, as no measured epoch draws it
RES = 10.0
ORIGIN = (500_000.0, 5_000_000.0)
warnings.filterwarnings("ignore", message="The inplace keyword")


class Footprint(RasterDataset):
    """One raster: TorchGeo's sampler needs a GeoDataset for its index and resolution."""

    filename_glob = "footprint.tif"
    is_image = False


def write_footprint(folder: Path, size: int) -> Path:
    """A ``size``² px uint8 raster (all zeros, DEFLATE) at 10 m in UTM 32N."""
    folder.mkdir(parents=True, exist_ok=True)
    profile = dict(
        driver="GTiff", width=size, height=size, count=1, dtype="uint8", crs="EPSG:32632",
        transform=rasterio.transform.from_origin(*ORIGIN, RES, RES), compress="DEFLATE",
        tiled=True, blockxsize=512, blockysize=512,
    )  # fmt: skip
    with rasterio.open(folder / "footprint.tif", "w", **profile) as dst:
        for _, window in dst.block_windows(1):
            dst.write(np.zeros((1, window.height, window.width), np.uint8), window=window)
    return folder


def draw_setting(folder: Path, size: int, patch: int, shape: str, reps: int) -> dict[str, Any]:
    """Time to draw one epoch of crops, ours against TorchGeo's, and where they fall."""
    grid = Grid(CRS.from_epsg(32632), (RES, RES), ORIGIN)
    square = shapely.box(ORIGIN[0], ORIGIN[1] - size * RES, ORIGIN[0] + size * RES, ORIGIN[1])
    region = (
        square if shape == "square" else shapely.affinity.rotate(square, 12).intersection(square)
    )
    blocks = spatial_blocks(region, grid, 512, {"val": 0.2, "test": 0.1}, SEED)["train"]
    count = 4 * len(block_patches(blocks, region, grid, patch))  # train_samples' default
    ours = block_crops(blocks, region, grid, patch, count, SEED)
    dataset = Footprint(str(folder))
    roi = shapely.union_all(blocks).intersection(region)
    torchgeo = RandomPatchSampler(dataset, size=patch, length=count, roi=roi)

    def ours_epoch(epoch: int) -> list[tuple[float, float]]:
        return [(r.left, r.top) for r in (ours.draw(epoch, i) for i in range(count))]

    def torchgeo_epoch(epoch: int) -> list[tuple[float, float]]:
        torchgeo.generator = np.random.default_rng((SEED, epoch))
        return [(x.start, y.stop) for x, y in torchgeo]

    draws = {"ours": ours_epoch, "torchgeo": torchgeo_epoch}
    seconds: dict[str, list[float]] = {name: [] for name in draws}
    corners: dict[str, list[list[tuple[float, float]]]] = {name: [] for name in draws}
    for epoch in range(max(reps, 8)):  # round-robin; 8 epochs at least for coverage
        for name, draw in draws.items():
            start = time.perf_counter()
            corners[name].append(draw(epoch))
            if epoch < reps:
                seconds[name].append(time.perf_counter() - start)
    row: dict[str, Any] = {"shape": shape, "patch": patch, "crops_per_epoch": count}
    times = {n: statistics.median(v) for n, v in seconds.items()}
    row["ms_per_epoch"] = {n: round(1e3 * t, 1) for n, t in times.items()}
    row["us_per_crop"] = {n: round(1e6 * t / count, 1) for n, t in times.items()}
    row["torchgeo_over_ours"] = round(times["torchgeo"] / times["ours"], 2)
    training = shapely.union_all(blocks).intersection(region)
    for name, epochs in corners.items():
        straddle, cover = coverage(epochs, blocks, training, patch, size)
        row[f"{name}_straddling_blocks"] = straddle
        row[f"{name}_uncovered_training_pixels"] = cover
    print(json.dumps(row), flush=True)
    return row


def coverage(
    epochs: list[list[tuple[float, float]]],
    blocks: list[shapely.Polygon],
    training: shapely.Geometry,
    patch: int,
    size: int,
) -> tuple[float, float]:
    """Share of crops not inside one block, and of training pixels no crop covered."""
    covered = np.zeros((size, size), bool)
    straddling = total = 0
    for epoch in epochs:
        for left, top in epoch:
            col, row = round((left - ORIGIN[0]) / RES), round((ORIGIN[1] - top) / RES)
            covered[row : row + patch, col : col + patch] = True
            total += 1
            if epoch is epochs[0]:  # block membership of one epoch's crops is enough
                box = shapely.box(left, top - patch * RES, left + patch * RES, top)
                straddling += not any(b.contains(box) for b in blocks)
    inside = training_mask(training, size)
    uncovered = float((inside & ~covered).sum() / max(inside.sum(), 1))
    return round(straddling / max(len(epochs[0]), 1), 4), round(uncovered, 4)


def training_mask(training: shapely.Geometry, size: int) -> np.ndarray:
    """Pixels whose centre lies in the training area."""
    from rasterio.features import rasterize

    transform = rasterio.transform.from_origin(*ORIGIN, RES, RES)
    return rasterize([training], (size, size), transform=transform).astype(bool)


def training_sets(
    folder: Path, patch: int, count: int, workers: int
) -> tuple[GeoTiffDataModule, ScenePatchDataset, ScenePatchDataset]:
    """Our training datamodule, its dataset of crops per epoch, and one of crops drawn once."""
    module = series_datamodule(folder, patch, count, workers, augment=True)
    (drawn,) = module.datasets("train")
    crops = drawn.patches
    assert isinstance(crops, RandomCrops) and isinstance(drawn, ScenePatchDataset)
    fixed = ScenePatchDataset(
        drawn.scenes, drawn.source, module.vocabularies,
        [crops.draw(FIXED_EPOCH, i) for i in range(len(crops))], patch, module.label_spec.outputs,
        augment=True, seed=SEED,
    )  # fmt: skip
    return module, drawn, fixed


def item_setting(
    folder: Path, regime: str, patch: int, count: int, reps: int, cache_mib: int
) -> dict[str, Any]:
    """Time per item of both datasets, item by item in alternating order, in this process.

    Interleaving single items cancels the load of other processes far better than
    whole passes do; the crop's draw alone is timed too.
    """
    rasterio.env.set_gdal_config("GDAL_CACHEMAX", cache_mib * 2**20)
    _, drawn, fixed = training_sets(folder, patch, count, 0)
    sets = {"per_epoch": drawn, "fixed": fixed}
    seconds = dict.fromkeys(sets, 0.0)
    for epoch in range(reps + 1):  # epoch 0 warms handles and caches
        for i in range(count):
            for name in ("per_epoch", "fixed") if i % 2 else ("fixed", "per_epoch"):
                start = time.perf_counter()
                sets[name].item(epoch, i)
                if epoch > 0:
                    seconds[name] += time.perf_counter() - start
    crops = drawn.patches
    assert isinstance(crops, RandomCrops)
    start = time.perf_counter()
    for epoch in range(1, reps + 1):
        for i in range(count):
            crops.draw(epoch, i)
    items = reps * count
    draw = (time.perf_counter() - start) / items
    row = {
        "regime": regime,
        "patch": patch,
        "us_per_item": {n: round(1e6 * t / items, 1) for n, t in seconds.items()},
        "us_per_draw": round(1e6 * draw, 1),
        "per_epoch_over_fixed_time": round(seconds["per_epoch"] / seconds["fixed"], 3),
    }
    print(json.dumps(row), flush=True)
    return row


def loaders(folder: Path, patch: int, count: int, workers: int, cache_mib: int) -> dict[str, Any]:
    """Our training loader with crops per epoch, and the same over crops drawn once."""
    module, drawn, fixed = training_sets(folder, patch, count, workers)
    init = lambda _: rasterio.env.set_gdal_config("GDAL_CACHEMAX", cache_mib * 2**20)  # noqa: E731
    built = {"per_epoch": module.loader([drawn], True), "fixed": module.loader([fixed], True)}
    for loader in built.values():
        loader.worker_init_fn = init
    return built


def loader_setting(
    folder: Path, regime: str, patch: int, workers: int, count: int, reps: int, cache_mib: int
) -> dict[str, Any]:
    """Round-robin passes of both loaders; the median patches/s and their ratio."""
    rasterio.env.set_gdal_config("GDAL_CACHEMAX", cache_mib * 2**20)
    built = loaders(folder, patch, count, workers, cache_mib)
    speeds: dict[str, list[float]] = {name: [] for name in built}
    # A first, unmeasured pass opens handles and warms the caches; then the order
    # alternates, so neither loader always reads right after the other.
    for epoch in range(reps + 1):
        order = list(built) if epoch % 2 else list(built)[::-1]
        for name in order:
            loader = built[name]
            loader.batch_sampler.set_epoch(epoch)  # what Lightning does each epoch
            iterator = iter(loader)
            next(iterator)
            patches, start = 0, time.perf_counter()
            for batch in iterator:
                patches += len(batch.source)
            if epoch > 0:
                speeds[name].append(patches / (time.perf_counter() - start))
    rates = {n: statistics.median(v) for n, v in speeds.items()}
    row = {
        "regime": regime,
        "patch": patch,
        "workers": workers,
        "patches_per_s": {n: round(r, 1) for n, r in rates.items()},
        "per_epoch_over_fixed": round(rates["per_epoch"] / rates["fixed"], 3),
    }
    print(json.dumps(row), flush=True)
    return row


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Crop sampling ({report['mode']})",
        "",
        "## Drawing one epoch of crops: ours (`block_crops`) against TorchGeo's `RandomPatchSampler`",
        "",
        f"{report['draw_size']}² px at 10 m, training blocks of 512 px (20% val, 10% test); "
        f"median of {report['repetitions']} round-robin epoch(s); coverage over 8 epochs.",
        "",
        "| region | patch | crops / epoch | ours ms | torchgeo ms | torchgeo / ours | "
        "straddling blocks ours / torchgeo | uncovered training px ours / torchgeo |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in report["draw"]:
        lines.append(
            f"| {r['shape']} | {r['patch']} | {r['crops_per_epoch']} | {r['ms_per_epoch']['ours']} | "
            f"{r['ms_per_epoch']['torchgeo']} | {r['torchgeo_over_ours']:.2f} | "
            f"{r['ours_straddling_blocks']:.1%} / {r['torchgeo_straddling_blocks']:.1%} | "
            f"{r['ours_uncovered_training_pixels']:.1%} / {r['torchgeo_uncovered_training_pixels']:.1%} |"
        )
    lines += [
        "",
        "## The training loader: crops per epoch against crops drawn once",
        "",
        f"{report['size']}² px files, 6 dates × 13 bands, flips on; 3 epochs after a warm-up "
        "(full mode; 1 in quick). Goal: per-epoch / fixed time ≤ 1.05, patches/s ≥ 0.95 "
        "(no cost beyond noise).",
        "",
        "Per item, in this process, the two datasets' items interleaved one by one (which "
        "cancels other processes' load far better than whole passes):",
        "",
        "| regime | patch | fixed µs / item | per-epoch µs / item | per-epoch / fixed (time) | "
        "the crop's draw µs | goal |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["items"]:
        ratio = r["per_epoch_over_fixed_time"]
        lines.append(
            f"| {r['regime']} | {r['patch']} | {r['us_per_item']['fixed']} | "
            f"{r['us_per_item']['per_epoch']} | {ratio:.3f} | {r['us_per_draw']} | "
            f"{'met' if ratio <= 1.05 else 'not met'} |"
        )
    lines += [
        "",
        f"Whole passes of the DataLoader (batches of {BATCH}), the two loaders in alternating "
        "order:",
        "",
        "| regime | patch | workers | fixed patches/s | per-epoch patches/s | per-epoch / fixed | goal |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["loader"]:
        ratio = r["per_epoch_over_fixed"]
        lines.append(
            f"| {r['regime']} | {r['patch']} | {r['workers']} | {r['patches_per_s']['fixed']} | "
            f"{r['patches_per_s']['per_epoch']} | {ratio:.2f} | {'met' if ratio >= 0.95 else 'not met'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small files, one repetition")
    args = parser.parse_args()
    torch.set_num_threads(1)
    size, reps = (512, 1) if args.quick else (1024, 3)
    counts = {64: 96, 256: 24} if args.quick else {64: 240, 256: 48}
    draw_size = 2048 if args.quick else 4096
    report: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "size": size,
        "draw_size": draw_size,
        "repetitions": reps,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "draw": [],
        "items": [],
        "loader": [],
    }
    disk = Path(tempfile.mkdtemp(prefix="stsun_crops_"))
    shm = (
        Path(tempfile.mkdtemp(prefix="stsun_crops_", dir="/dev/shm"))
        if Path("/dev/shm").is_dir()
        else disk
    )
    try:
        footprint = write_footprint(disk / "footprint", draw_size)
        for shape in ("square", "tilted"):
            for patch in (64, 256):
                report["draw"].append(draw_setting(footprint, draw_size, patch, shape, reps))
        folders = {
            "deflate": (write_files(disk / "deflate", size, "DEFLATE"), 16),
            "cached": (write_files(shm / "plain", size, None), 2048),
        }
        for regime, (folder, cache_mib) in folders.items():
            for patch, count in counts.items():
                report["items"].append(item_setting(folder, regime, patch, count, reps, cache_mib))
                for workers in (0, 2):
                    report["loader"].append(
                        loader_setting(folder, regime, patch, workers, count, reps, cache_mib)
                    )
    finally:
        shutil.rmtree(disk, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)
    suffix = "_quick" if args.quick else ""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"crop_sampling{suffix}.json").write_text(json.dumps(report, indent=1) + "\n")
    (RESULTS / f"crop_sampling{suffix}.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
