"""Shared fixtures: batches built from real sensor metadata."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch

from stsun_lightning.data.batch import Batch, OutputKind
from stsun_lightning.data.sensors import get_sensor

CATEGORIES = [
    "water",
    "tree_cover",
    "cropland",
    "building",
    "road",
    "bare_soil",
    "cloud",
    "no_change",
    "change",
]
VARIABLES = ["canopy_height", "ndvi"]


def sensor_metadata(num_bands: int, batch_size: int) -> dict[str, torch.Tensor]:
    """Real band metadata for C bands: Sentinel-2 first, then Sentinel-1, then synthetic narrow bands."""
    s2 = get_sensor("sentinel2_l1c").metadata()
    s1 = get_sensor("sentinel1").metadata(["VV", "VH"])
    wl = torch.cat([s2["wavelength_nm"], s1["wavelength_nm"]])
    bw = torch.cat([s2["bandwidth_nm"], s1["bandwidth_nm"]])
    mod = torch.cat([s2["modality"], s1["modality"]])
    if num_bands > len(wl):  # a hyperspectral-like sensor: 400-2500 nm in even steps
        extra = num_bands - len(wl)
        wl = torch.cat([wl, torch.linspace(400, 2500, extra)])
        bw = torch.cat([bw, torch.full((extra,), 10.0)])
        mod = torch.cat([mod, torch.zeros(extra, dtype=torch.long)])
    return {
        "wavelength_nm": wl[:num_bands].expand(batch_size, -1).clone(),
        "bandwidth_nm": bw[:num_bands].expand(batch_size, -1).clone(),
        "modality": mod[:num_bands].expand(batch_size, -1).clone(),
    }


def make_batch(
    b: int = 2,
    t: int = 1,
    c: int = 4,
    h: int = 32,
    w: int = 32,
    task: int = 0,
    outputs: Sequence[tuple[float, float, float]] | None = None,
    categories: Sequence[int] | None = (0, 1, 2),
    variables: Sequence[int] | None = None,
    target_bands: int = 0,
    label_size: tuple[int, int] | None = None,
    seed: int = 0,
) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    outputs = outputs if outputs is not None else [(OutputKind.STATE, t - 1, t - 1)]
    meta = sensor_metadata(c, b)
    lh, lw = label_size or (h, w)
    to = len(outputs)
    dates = 19000.0 + 30.0 * torch.arange(t, dtype=torch.float32).expand(b, -1).clone()
    fields = dict(
        image=torch.randn(b, t, c, h, w, generator=gen),
        band_mask=torch.ones(b, c, dtype=torch.bool),
        gsd_m=torch.full((b,), 10.0),
        dates=dates,
        time_mask=torch.ones(b, t, dtype=torch.bool),
        valid_mask=torch.ones(b, h, w, dtype=torch.bool),
        task=torch.full((b,), task, dtype=torch.long),
        outputs=torch.tensor(outputs, dtype=torch.float32).expand(b, -1, -1).clone(),
        source=["test"] * b,
        **meta,
    )
    if categories is not None:
        k = len(categories)
        fields["categories"] = torch.tensor(categories).expand(b, -1).clone()
        fields["category_mask"] = torch.ones(b, k, dtype=torch.bool)
        if variables is None and not target_bands:
            fields["target"] = torch.randint(0, k, (b, to, lh, lw), generator=gen)
    if variables is not None:
        fields["variables"] = torch.tensor(variables).expand(b, -1).clone()
        fields["target"] = torch.randn(b, to, len(variables), lh, lw, generator=gen)
    elif target_bands:
        out = get_sensor("sentinel2_l2a").metadata()
        fields["target_wavelength_nm"] = out["wavelength_nm"][:target_bands].expand(b, -1).clone()
        fields["target_bandwidth_nm"] = out["bandwidth_nm"][:target_bands].expand(b, -1).clone()
        fields["target_modality"] = out["modality"][:target_bands].expand(b, -1).clone()
        fields["target"] = torch.randn(b, to, target_bands, lh, lw, generator=gen)
    return Batch(**fields).validate()


@pytest.fixture
def tiny_model():
    from stsun_lightning.models import create_model

    torch.manual_seed(0)
    return create_model("stsun_tiny", categories=CATEGORIES, variables=VARIABLES).eval()


__all__ = ["CATEGORIES", "VARIABLES", "make_batch", "math"]
