"""How separable SpectralWorld's land-cover classes are from one pixel's bands alone.

Run from the repository root::

    python benchmarks/world_separability.py [--root data/spectral_world]
    python benchmarks/world_separability.py --quick   # CI: 150 steps, *_quick results

For each single-date land-cover source, a small MLP (2×128, ReLU) is trained on the
band values of single pixels of the training scenes (standardised; Sentinel-1 in dB)
and scored on the validation scene: per-class IoU and mIoU. It sees no spatial
context, so it is not a ceiling for STSUN, but a class that even it separates well
is one the world does not hide, and one it cannot separate needs context or time.
Seeds are fixed (world seed 0, torch seed 0). Results:
``benchmarks/results/world_separability.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import rasterio
import torch

from stsun_lightning.data.datasets.world.world import SpectralWorld

RESULTS = Path(__file__).resolve().parent / "results"
SOURCES = ("landsat8_landcover", "aerial_landcover", "s1s2_landcover")


def _load(root: Path, scene: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) pixel features and (N,) labels (0 = ignore) of one scene."""
    features = []
    for name, files in scene["files"].items():
        for file in files:
            with rasterio.open(root / file) as src:
                data = np.nan_to_num(src.read().astype(np.float32), nan=0.0)
            if name == "s1":
                data = np.log10(np.maximum(data, 1e-4))
            features.append(data)
    with rasterio.open(root / scene["label"]) as src:
        label = src.read(1)
    x = torch.from_numpy(np.concatenate(features))
    return x.reshape(x.shape[0], -1).T, torch.from_numpy(label.astype(np.int64)).reshape(-1)


def separability(root: Path, source: str, manifest: dict, steps: int) -> dict:
    """Train the pixel MLP on the training scenes, score it on the validation scene."""
    spec = manifest["sources"][source]
    classes = {int(k): v for k, v in spec["label"]["classes"].items()}
    scenes = spec["scenes"]
    train = [_load(root, s) for s in scenes if s["split"] == "train"]
    x = torch.cat([a for a, _ in train])
    y = torch.cat([b for _, b in train])
    mean, std = x.mean(0), x.std(0) + 1e-6
    keep = y > 0
    x, y = (x[keep] - mean) / std, y[keep] - 1
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 128), torch.nn.ReLU(), torch.nn.Linear(128, len(classes)),
    )  # fmt: skip
    optimiser = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(steps):
        index = torch.randint(0, len(x), (4096,))
        loss = torch.nn.functional.cross_entropy(net(x[index]), y[index])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    (val,) = [_load(root, s) for s in scenes if s["split"] == "val"]
    keep = val[1] > 0
    with torch.no_grad():
        predicted = net((val[0][keep] - mean) / std).argmax(1)
    target = val[1][keep] - 1
    ious = {}
    for k, name in sorted(classes.items()):
        inter = int(((predicted == k - 1) & (target == k - 1)).sum())
        union = int(((predicted == k - 1) | (target == k - 1)).sum())
        if (target == k - 1).any():
            ious[name] = round(inter / union, 3)
    return {"miou": round(float(np.mean(list(ious.values()))), 3), "iou": ious}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default="data/spectral_world")
    parser.add_argument("--steps", type=int, default=None, help="default 1500, 150 with --quick")
    parser.add_argument("--quick", action="store_true", help="150 steps, *_quick results (CI)")
    args = parser.parse_args()
    steps = args.steps or (150 if args.quick else 1500)
    name = "world_separability_quick" if args.quick else "world_separability"
    root = Path(args.root)
    manifest = SpectralWorld(root, seed=0, scene_size=256, scenes_per_source=4).generate()
    results = {s: separability(root, s, manifest, steps) for s in SOURCES}
    report = {
        "world_version": manifest["version"],
        "seed": manifest["seed"],
        "steps": steps,
        "sources": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Per-pixel separability of SpectralWorld v{manifest['version']} land cover"
        + (f" (quick: {steps} steps)" if args.quick else ""),
        "",
        "Pixel MLP, no spatial context, trained on the training scenes, IoU on the validation scene.",
        "",
        "| source | mIoU | per class |",
        "|---|---:|---|",
    ]
    for source, result in results.items():
        per_class = ", ".join(f"{k} {v:.2f}" for k, v in result["iou"].items())
        lines.append(f"| {source} | {result['miou']:.3f} | {per_class} |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
