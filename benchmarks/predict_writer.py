"""Publishing prediction COGs: GDAL's COG driver building the overviews, against ours.

Run from the repository root::

    python benchmarks/predict_writer.py            # up to 4096² and 512 bands (~5 min)
    python benchmarks/predict_writer.py --quick    # up to 2048² and 256 bands (~1 min)

Each case writes smooth values in [0, 1] (probabilities, uncertainty) row band by row band (192 rows, as
``SceneOutputs`` does) into a temporary tiled GeoTIFF and publishes it as a COG, in a
fresh process with GDAL's block cache at 256 MiB (``RasterPredictionDataModule``'s
default), two ways:

- ``cog driver``: the writer before this benchmark: a pixel-interleaved temporary file,
  copied by GDAL's COG driver, which builds the overviews itself;
- ``ours``: :class:`~stsun_lightning.predict.writer.OutputRaster`: a band-interleaved
  temporary file whose overviews are built in place, copied as a band-interleaved COG
  with those overviews.

Reported: seconds of the whole write, peak resident memory beyond what the process held
before writing, and whether GDAL refused (it refuses Float16 overviews of two or more
bands). Results: ``benchmarks/results/predict_writer{,_quick}.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
ROWS = 192
FULL = [
    ("float16", 3, 1100, 1500),
    ("uint8", 4, 4096, 4096),
    ("uint8", 100, 1100, 1500),
    ("uint8", 512, 600, 700),
    ("float16", 512, 600, 700),
]
QUICK = [("float16", 3, 1100, 1500), ("uint8", 4, 2048, 2048), ("uint8", 256, 600, 700)]


def _rows(dtype: str, count: int, top: int, rows: int, width: int):
    """Smooth values in [0, 1] of ``count`` bands for rows ``top:top + rows``, as ``dtype``.

    Built band by band into the stored type, so the benchmark holds one row band of the
    stored values (what the writer is handed) and no float32 copy of it.
    """
    import numpy as np

    y, x = np.mgrid[top : top + rows, 0:width].astype(np.float32)
    out = np.empty((count, rows, width), dtype=dtype)
    for k in range(count):
        band = 0.5 + 0.5 * np.sin(x / (40 + 7 * k)) * np.cos(y / (30 + 5 * k))
        out[k] = band if dtype == "float16" else np.rint(band * 254)
    return out


def child(args: argparse.Namespace) -> None:
    """Write one case one way (in a fresh process) and print what it cost."""
    import resource

    import rasterio
    import rasterio.shutil
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from stsun_lightning.predict.layers import Layer
    from stsun_lightning.predict.writer import OutputRaster

    rasterio.env.set_gdal_config("GDAL_CACHEMAX", 256 * 2**20)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{args.method.replace(' ', '_')}.tif"
    count, height, width = args.count, args.height, args.width
    nodata = float("nan") if args.dtype == "float16" else 255
    profile = {"crs": "EPSG:32633", "transform": from_origin(600_000, 5_500_000, 10, 10)}
    profile |= {"height": height, "width": width}
    _rows(args.dtype, count, 0, 1, width)  # imports and first allocation before the baseline
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    error = None
    try:
        if args.method == "ours":
            layer = Layer(
                target, args.dtype, nodata, tuple(f"c{i}" for i in range(count)), {},
                resampling="average",
            )  # fmt: skip
            raster = OutputRaster(layer, profile)
            for top in range(0, height, ROWS):
                n = min(ROWS, height - top)
                raster.write_rows(top, _rows(args.dtype, count, top, n, width))
            raster.close()
        else:
            rows = out / "rows.tif"
            with rasterio.open(
                rows, "w", driver="GTiff", tiled=True, blockxsize=256, blockysize=256,
                compress="zstd", zstd_level=1, count=count, dtype=args.dtype, nodata=nodata,
                BIGTIFF="IF_SAFER", **profile,
            ) as dataset:  # fmt: skip
                for top in range(0, height, ROWS):
                    n = min(ROWS, height - top)
                    window = Window(0, top, width, n)
                    dataset.write(_rows(args.dtype, count, top, n, width), window=window)
            rasterio.shutil.copy(
                rows, target, driver="COG", compress="deflate", overview_resampling="average",
                BIGTIFF="IF_SAFER",
            )  # fmt: skip
            rows.unlink()
    except Exception as failure:  # GDAL errors reach Python as several classes
        error = str(failure).split("\n")[0][:120]
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps({"seconds": seconds, "beyond_mib": (peak - baseline) / 1024, "error": error}),
        flush=True,
    )


def measure(case: tuple[str, int, int, int], method: str, workdir: Path) -> dict[str, Any]:
    """Run :func:`child` in a fresh process."""
    dtype, count, height, width = case
    command = [
        sys.executable, __file__, "--child", "--method", method, "--dtype", dtype,
        "--count", str(count), "--height", str(height), "--width", str(width),
        "--output", str(workdir / f"{dtype}_{count}_{height}x{width}"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return {"dtype": dtype, "bands": count, "size": f"{height}x{width}", "method": method,
            **json.loads(lines[-1])}  # fmt: skip


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Publishing prediction COGs ({'quick' if report['quick'] else 'full'})",
        "",
        f"Row bands of {ROWS} rows into a temporary GeoTIFF, published as a COG with "
        f"overviews; GDAL cache 256 MiB; {report['machine']}. `cog driver`: GDAL's COG "
        "driver builds the overviews of a pixel-interleaved file (the writer before); "
        "`ours`: `OutputRaster` (overviews built in a band-interleaved file, band-interleaved "
        "COG).",
        "",
        "| type | bands | size | method | seconds | peak MiB beyond | time vs cog driver | result |",
        "|---|---:|---|---|---:|---:|---:|---|",
    ]
    by_case = {(r["dtype"], r["bands"], r["size"], r["method"]): r for r in report["runs"]}
    for row in report["runs"]:
        base = by_case[(row["dtype"], row["bands"], row["size"], "cog driver")]
        ratio = (
            f"{row['seconds'] / base['seconds']:.2f}"
            if base["error"] is None and row["error"] is None
            else "-"
        )
        result = "ok" if row["error"] is None else f"GDAL error: {row['error']}"
        lines.append(
            f"| {row['dtype']} | {row['bands']} | {row['size']} | {row['method']} | "
            f"{row['seconds']:.1f} | {row['beyond_mib']:.0f} | {ratio} | {result} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", default="/tmp/stsun_predict_writer_bench")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("method", "dtype", "output"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    for name in ("count", "height", "width"):
        parser.add_argument(f"--{name}", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    runs = []
    for case in QUICK if args.quick else FULL:
        for method in ("cog driver", "ours"):
            row = measure(case, method, Path(args.workdir))
            runs.append(row)
            print(json.dumps(row), flush=True)
    report = {
        "quick": args.quick,
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
        "command": " ".join(sys.argv),
        "runs": runs,
    }
    suffix = "_quick" if args.quick else ""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"predict_writer{suffix}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"predict_writer{suffix}.md").write_text(_markdown(report))
    print(_markdown(report))


if __name__ == "__main__":
    main()
