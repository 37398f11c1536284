"""Band probe: do the aerial source's pixels separate its classes, and how alike do bands start?

Run from the repository root::

    python benchmarks/band_probe.py --quick      # CI (~1 min)
    python benchmarks/band_probe.py --seed 1     # full settings (~2 min)

Two measurements behind ``basis_kernels`` (see docs/architecture.md):

- **Band kernels at initialisation.** The joint model's network (``stsun_tiny`` with the
  joint ablation's best options), freshly built, with and without ``balanced_band_init``: the cosine similarity of the band
  embeddings of red, green, blue and near infrared (the aerial source's bands), and how
  much their generated patch kernels and stem weights differ (the norm of each band's
  deviation from the four bands' mean, over its own norm).
- **Pixels alone.** A two-layer MLP on the four normalised band values of single pixels,
  trained on the training batches of the aerial source (the joint ablation's world with
  four held-out scenes) and scored on its held-out scenes: mIoU and IoU per class. What
  the network could reach from spectra alone, without any spatial context.

Results go to ``benchmarks/results/band_probe{,_quick}.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import make_config
from accuracy_report import write_pages
from accuracy_unified import world_datamodule
from joint_ablation import _variant, held_out_world
from stsun_lightning.models import create_model

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SOURCE = "aerial_landcover"
BANDS_NM = {"R": 640.0, "G": 550.0, "B": 470.0, "NIR": 850.0}
"""The aerial source's bands (``isprs_rgbir``, nominal centres, no FWHM)."""
NETWORK = ("conv stem 16", "patch 4", "bilinear", "decoder 32", "stem 16")
"""The joint ablation's best variant, by its phrases."""


def _distinct(rows: Tensor) -> float:
    """Mean over rows of |row - mean row| / |row|: 0 when all rows are the same."""
    return float(((rows - rows.mean(0)).norm(dim=1) / rows.norm(dim=1)).mean())


@torch.no_grad()
def initial_bands(seed: int, balanced: bool = False) -> dict[str, Any]:
    """How alike the aerial bands' embeddings, kernels and stem weights start.

    ``balanced``: the network with ``balanced_band_init``.
    """
    torch.manual_seed(seed)
    phrases = (*NETWORK, "balanced bands") if balanced else NETWORK
    model = create_model("stsun_tiny", **_variant(*phrases)[1])
    wavelength = torch.tensor([list(BANDS_NM.values())])
    bandwidth = torch.zeros_like(wavelength)
    modality = torch.zeros_like(wavelength, dtype=torch.long)  # optical
    embedding = model.band_encoder(wavelength, bandwidth, modality)[0]  # (4, band_dim)
    unit = F.normalize(embedding, dim=-1)
    cosine = unit @ unit.T
    off_diagonal = cosine[~torch.eye(len(BANDS_NM), dtype=torch.bool)]
    context = model.tokenizer.context
    conditioned = (
        context(embedding[None], torch.ones(1, 1, len(BANDS_NM), dtype=torch.bool))[0, 0]
        if context is not None
        else embedding
    )
    features = model.band_encoder.response(wavelength, bandwidth)[0]
    unit_features = F.normalize(features, dim=-1)
    feature_cosine = (unit_features @ unit_features.T)[~torch.eye(len(BANDS_NM), dtype=torch.bool)]
    return {
        "bands": BANDS_NM,
        "embedding_cosine_min": round(float(off_diagonal.min()), 4),
        "embedding_cosine_max": round(float(off_diagonal.max()), 4),
        "response_cosine_max": round(float(feature_cosine.max()), 4),
        "embedding_distinct": round(_distinct(embedding), 4),
        "kernel_distinct": round(_distinct(model.tokenizer.kernel(conditioned)), 4),
        "stem_distinct": round(_distinct(model.decoder.band_mix(embedding)), 4),
    }


def _pixels(loader: Any, limit: int) -> tuple[Tensor, Tensor]:
    """(N, C) band values and (N,) classes of the labelled pixels of ``limit`` batches."""
    values, classes = [], []
    for index, batch in enumerate(loader):
        if index >= limit:
            break
        image, target = batch.image[:, 0], batch.target[:, 0]  # one date
        values.append(image.permute(0, 2, 3, 1).reshape(-1, image.shape[1]))
        classes.append(target.reshape(-1))
    x, y = torch.cat(values), torch.cat(classes)
    labelled = y >= 0
    return x[labelled], y[labelled]


def pixels_alone(seed: int, quick: bool) -> dict[str, Any]:
    """A per-pixel MLP on the aerial source's normalised bands, scored per class."""
    cfg = make_config(quick, seed)
    val_scenes = 1 if quick else 4
    root, scenes = held_out_world(cfg, val_scenes)
    data = world_datamodule(
        root / SOURCE,
        seed,
        cfg.world_scene_size,
        scenes,
        cfg.world_patch,
        cfg.world_batch,
        100,
        [SOURCE],
        val_scenes,
    )
    data.setup("fit")
    categories = data.sources[SOURCE]["categories"]
    k = len(categories)
    x, y = _pixels(data.train_dataloader(), 20 if quick else 100)
    torch.manual_seed(seed)
    mlp = nn.Sequential(nn.Linear(x.shape[1], 64), nn.GELU(), nn.Linear(64, 64), nn.GELU())
    mlp.append(nn.Linear(64, k))
    optimiser = torch.optim.Adam(mlp.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    steps = 200 if quick else 1500
    for _ in range(steps):
        pick = torch.randint(0, len(x), (1024,), generator=generator)
        loss = F.cross_entropy(mlp(x[pick]), y[pick])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    confusion = torch.zeros(k, k)
    with torch.no_grad():
        for batch in data.val_dataloader():
            image, target = batch.image[:, 0], batch.target[:, 0]
            values = image.permute(0, 2, 3, 1).reshape(-1, image.shape[1])
            truth = target.reshape(-1)
            labelled = truth >= 0
            predicted = mlp(values[labelled]).argmax(1)
            confusion += torch.bincount(truth[labelled] * k + predicted, minlength=k * k).view(k, k)
    union = confusion.sum(0) + confusion.sum(1) - confusion.diag()
    iou = confusion.diag() / union.clamp(min=1)
    present = confusion.sum(1) > 0
    return {
        "steps": steps,
        "val_scenes": val_scenes,
        "miou": round(float(iou[present].mean()), 4),
        "iou": {
            c: round(float(v), 4) for c, v, p in zip(categories, iou, present, strict=True) if p
        },
    }


def markdown(results: dict[str, Any]) -> str:
    """The two measurements as tables."""
    start, pixels = results["initial_bands"], results["pixels_alone"]
    default, balanced = start["default"], start["balanced"]
    lines = [
        "# Band probe",
        "",
        f"`{results['command']}`: seed {results['seed']}.",
        "",
        "## Aerial bands (R, G, B, NIR) at initialisation",
        "",
        "| quantity | default | `balanced_band_init` |",
        "|---|---:|---:|",
        "| cosine of two bands' embeddings (min–max) | "
        + " | ".join(
            f"{b['embedding_cosine_min']:.4f}–{b['embedding_cosine_max']:.4f}"
            for b in (default, balanced)
        )
        + " |",
        f"| cosine of two bands' response features (max) | {default['response_cosine_max']:.3f} "
        f"| {balanced['response_cosine_max']:.3f} |",
        *(
            f"| {label} | {default[key]:.3f} | {balanced[key]:.3f} |"
            for label, key in (
                ("embeddings: deviation from the bands' mean / norm", "embedding_distinct"),
                ("patch kernels: the same", "kernel_distinct"),
                ("stem weights: the same", "stem_distinct"),
            )
        ),
        "",
        f"## Pixels alone: an MLP on single pixels' bands ({pixels['val_scenes']} held-out "
        "scene(s))",
        "",
        "| mIoU | " + " | ".join(pixels["iou"]) + " |",
        "|---:|" + "---:|" * len(pixels["iou"]),
        f"| {pixels['miou']:.3f} | "
        + " | ".join(f"{v:.3f}" for v in pixels["iou"].values())
        + " |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``--quick``, ``--seed``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI settings (~1 min)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the world and the MLP")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    command = "python benchmarks/band_probe.py" + (" --quick" if args.quick else "")
    command += f" --seed {args.seed}" if args.seed != 1 else ""
    results = {
        "command": command,
        "seed": args.seed,
        "initial_bands": {
            "default": initial_bands(args.seed),
            "balanced": initial_bands(args.seed, balanced=True),
        },
        "pixels_alone": pixels_alone(args.seed, args.quick),
    }
    stem = "band_probe" + ("_quick" if args.quick else "")
    write_pages(RESULTS_DIR, stem, results, markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
