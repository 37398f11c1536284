"""Exported ONNX against PyTorch eager on CPU: windows per second and file size.

Run from the repository root::

    python benchmarks/export_speed.py            # stsun_tiny and stsun_small, 384² windows
    python benchmarks/export_speed.py --quick    # stsun_tiny, 256² windows

Each model (untrained weights: speed does not depend on them) serves four Sentinel-2
bands and four categories; it is exported by ``stsun export``'s path
(:func:`~stsun_lightning.export.export_onnx`, batch 1), then the same windows (physical
values, a third of them with a corner without data) are predicted by
:class:`~stsun_lightning.export.served.ServedStsun` in eager PyTorch and by the file
through onnxruntime, one thread each, in alternating rounds in the same process, so
load from other processes hits both alike. Reported: the median windows per second of
each, their ratio, the largest difference of the logits, the export time and the
file's size. Results: ``benchmarks/results/export_speed{,_quick}.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from stsun_lightning.data.sensors import get_sensor
from stsun_lightning.export import OnnxModel, ServedBand, ServedStsun, ServingSpec
from stsun_lightning.export.onnx import export_onnx
from stsun_lightning.models import create_model

RESULTS = Path(__file__).resolve().parent / "results"
BANDS = ["B02", "B03", "B04", "B08"]
CATEGORIES = ["water", "tree_cover", "cropland", "built_up"]
KEYS = ("wavelength_nm", "bandwidth_nm")
MEAN, STD = [900.0, 1000.0, 1100.0, 2500.0], [400.0, 450.0, 500.0, 900.0]


def served_model(preset: str) -> ServedStsun:
    """An untrained preset serving four Sentinel-2 bands and four categories."""
    torch.manual_seed(0)
    network = create_model(preset, categories=CATEGORIES, tasks=["semantic_segmentation"])
    metadata = get_sensor("sentinel2_l2a").metadata(BANDS)
    bands = tuple(
        ServedBand(
            "s2",
            "sentinel2_l2a",
            name,
            *(float(metadata[k][i]) for k in KEYS),
            int(metadata["modality"][i]),
            MEAN[i],
            STD[i],
        )
        for i, name in enumerate(BANDS)
    )
    spec = ServingSpec(bands, "semantic_segmentation", tuple(CATEGORIES), (), "state", 1)
    return ServedStsun(network, spec).eval()


def windows(count: int, size: int) -> list[torch.Tensor]:
    """(1, 1, 4, size, size) physical windows; every third has a corner without data."""
    generator = torch.Generator().manual_seed(1)
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    out = []
    for i in range(count):
        image = mean + std * torch.randn(1, 1, 4, size, size, generator=generator)
        if i % 3 == 2:
            image[..., : size // 3, : size // 3] = torch.nan
        out.append(image)
    return out


def measure(preset: str, size: int, count: int, rounds: int, folder: Path) -> dict[str, Any]:
    """Export ``preset``, then time eager and onnxruntime on the same windows."""
    served = served_model(preset)
    path = folder / f"{preset}.onnx"
    start = time.perf_counter()
    export_onnx(served, path, "blake2b:benchmark", "benchmark", {"tolerance_days": 0})
    export_s = time.perf_counter() - start
    runtime = OnnxModel(path, threads=1)
    items = windows(count, size)
    dates, gsd = torch.tensor([[19_000.0]]), torch.tensor([10.0])
    largest = 0.0
    with torch.no_grad():  # warm-up and agreement
        for image in items[:3]:
            largest = max(
                largest, float((runtime(image, dates, gsd) - served(image, dates, gsd)).abs().max())
            )
    times: dict[str, list[float]] = {"eager": [], "onnxruntime": []}
    runners = {
        "eager": lambda image: served(image, dates, gsd),
        "onnxruntime": lambda image: runtime(image, dates, gsd),
    }
    with torch.no_grad():
        for index in range(rounds):
            order = list(runners) if index % 2 == 0 else list(reversed(runners))
            for name in order:
                start = time.perf_counter()
                for image in items:
                    runners[name](image)
                times[name].append(count / (time.perf_counter() - start))
    eager, onnx_rate = statistics.median(times["eager"]), statistics.median(times["onnxruntime"])
    return {
        "preset": preset,
        "window": size,
        "windows_per_round": count,
        "rounds": rounds,
        "eager_windows_per_s": eager,
        "onnxruntime_windows_per_s": onnx_rate,
        "onnxruntime_over_eager": onnx_rate / eager,
        "max_abs_logit_difference": largest,
        "export_s": export_s,
        "file_mib": path.stat().st_size / 2**20,
        "parameters": sum(p.numel() for p in served.network.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="stsun_tiny only (~2 minutes)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = [("stsun_tiny", 256, 8, 3)] if args.quick else [
        ("stsun_tiny", 384, 12, 5), ("stsun_small", 384, 6, 5),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        results = [measure(*case, Path(folder)) for case in cases]
    stem = "export_speed_quick" if args.quick else "export_speed"
    RESULTS.mkdir(exist_ok=True)
    record = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": 1},
        "results": results,
    }
    (RESULTS / f"{stem}.json").write_text(json.dumps(record, indent=2))
    lines = [
        "# Export: onnxruntime against PyTorch eager (CPU, one thread)",
        "",
        "Same process, same windows, alternating rounds; medians. Command: "
        f"`python benchmarks/export_speed.py{' --quick' if args.quick else ''}`.",
        "",
        "| model | window | eager windows/s | onnxruntime windows/s | ratio | max logit diff "
        "| export s | file MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['preset']} | {r['window']}² | {r['eager_windows_per_s']:.2f} | "
            f"{r['onnxruntime_windows_per_s']:.2f} | {r['onnxruntime_over_eager']:.2f}× | "
            f"{r['max_abs_logit_difference']:.1e} | {r['export_s']:.0f} | {r['file_mib']:.1f} |"
        )
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
