"""Random but valid batches with real band metadata: for tests, benchmarks and trying the model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stsun_lightning.batch import Batch, OutputKind
from stsun_lightning.data.sensors import get_sensor

__all__ = ["example_band_metadata", "example_batch"]


def example_band_metadata(num_bands: int, batch_size: int) -> dict[str, Tensor]:
    """Real band metadata for C bands.

    Sentinel-2 L1C's 13 bands first, then Sentinel-1 VV and VH, then (for C > 15)
    synthetic 10 nm bands evenly spaced over 400-2500 nm, like a hyperspectral sensor.

    Args:
        num_bands: C.
        batch_size: B.

    Returns:
        ``wavelength_nm`` and ``bandwidth_nm`` (B, C) float, ``modality`` (B, C) long.
    """
    s2 = get_sensor("sentinel2_l1c").metadata()
    s1 = get_sensor("sentinel1").metadata(["VV", "VH"])
    wavelength = torch.cat([s2["wavelength_nm"], s1["wavelength_nm"]])
    bandwidth = torch.cat([s2["bandwidth_nm"], s1["bandwidth_nm"]])
    modality = torch.cat([s2["modality"], s1["modality"]])
    extra = num_bands - len(wavelength)
    if extra > 0:
        wavelength = torch.cat([wavelength, torch.linspace(400, 2500, extra)])
        bandwidth = torch.cat([bandwidth, torch.full((extra,), 10.0)])
        modality = torch.cat([modality, torch.zeros(extra, dtype=torch.long)])
    return {
        "wavelength_nm": wavelength[:num_bands].expand(batch_size, -1).clone(),
        "bandwidth_nm": bandwidth[:num_bands].expand(batch_size, -1).clone(),
        "modality": modality[:num_bands].expand(batch_size, -1).clone(),
    }


def example_batch(
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
    source: str = "example",
) -> Batch:
    """A validated batch of random images with real band metadata and a random target.

    Args:
        b: B.
        t: T, dates 30 days apart.
        c: C (see :func:`example_band_metadata`).
        h: H.
        w: W.
        task: task row.
        outputs: output slots; default one state slot at the last date.
        categories: requested category rows (None: a value task).
        variables: requested variable rows (a regression target).
        target_bands: number of requested output bands (Sentinel-2 L2A's first ones).
        label_size: (H', W') of the target; default (H, W).
        seed: seed of the image and the target.
        source: source name of every item.

    Returns:
        The batch.
    """
    gen = torch.Generator().manual_seed(seed)
    outputs = outputs if outputs is not None else [(OutputKind.STATE, t - 1, t - 1)]
    lh, lw = label_size or (h, w)
    to = len(outputs)
    dates = 19000.0 + 30.0 * torch.arange(t, dtype=torch.float32)
    fields: dict[str, object] = dict(
        image=torch.randn(b, t, c, h, w, generator=gen),
        band_mask=torch.ones(b, t, c, dtype=torch.bool),
        gsd_m=torch.full((b,), 10.0),
        dates=dates.expand(b, -1).clone(),
        time_mask=torch.ones(b, t, dtype=torch.bool),
        valid_mask=torch.ones(b, h, w, dtype=torch.bool),
        task=torch.full((b,), task, dtype=torch.long),
        outputs=torch.tensor(outputs, dtype=torch.float32).expand(b, -1, -1).clone(),
        source=[source] * b,
        **example_band_metadata(c, b),
    )
    if categories is not None:
        k = len(categories)
        fields["categories"] = torch.tensor(list(categories)).expand(b, -1).clone()
        fields["category_mask"] = torch.ones(b, k, dtype=torch.bool)
        if variables is None and not target_bands:
            fields["target"] = torch.randint(0, k, (b, to, lh, lw), generator=gen)
    if variables is not None:
        fields["variables"] = torch.tensor(list(variables)).expand(b, -1).clone()
        fields["target"] = torch.randn(b, to, len(variables), lh, lw, generator=gen)
    elif target_bands:
        bands = get_sensor("sentinel2_l2a").metadata()
        fields["target_wavelength_nm"] = bands["wavelength_nm"][:target_bands].expand(b, -1).clone()
        fields["target_bandwidth_nm"] = bands["bandwidth_nm"][:target_bands].expand(b, -1).clone()
        fields["target_modality"] = bands["modality"][:target_bands].expand(b, -1).clone()
        fields["target"] = torch.randn(b, to, target_bands, lh, lw, generator=gen)
    return Batch(**fields).validate()
