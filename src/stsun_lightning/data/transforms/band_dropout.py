"""Band dropout: hide a random subset of each item's bands while training.

A network that only ever sees one sensor's full band list learns to expect that mix:
its hypernetwork tokeniser averages per-band kernels over the real bands, and the
average shifts when bands go missing. Training with random band subsets teaches it to
read any subset, which is what makes a sensor it never saw (other bands, fewer bands)
usable. Hiding a band is exact: a band whose ``band_mask`` is False is the same to the
network as a band that is not there (``tests/models/test_stsun.py``).
"""

from __future__ import annotations

import dataclasses

import torch

from stsun_lightning.batch import Batch

__all__ = ["drop_random_bands"]


def drop_random_bands(
    batch: Batch,
    probability: float,
    min_bands: int = 1,
    generator: torch.Generator | None = None,
) -> Batch:
    """Hide a random subset of the real bands of some items.

    Each item is chosen with ``probability``; a chosen item keeps ``k`` of its ``n``
    real bands, ``k`` uniform in ``[min(min_bands, n), n]`` and the kept bands uniform
    among the real ones (bands observed at any frame). A hidden band is hidden at
    every frame. Pixel values are left alone: only ``band_mask`` changes.

    Args:
        batch: the batch; ``band_mask`` (B, T, C).
        probability: share of items whose bands are thinned, in [0, 1].
        min_bands: the fewest bands an item keeps (at least 1).
        generator: random source (default: torch's global one, which checkpoints save).

    Returns:
        The batch with ``band_mask`` (B, T, C) a subset of the original; the same batch
        when ``probability`` is 0.

    Raises:
        ValueError: for a probability outside [0, 1] or ``min_bands`` < 1.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"band dropout probability must be in [0, 1], got {probability}.")
    if min_bands < 1:
        raise ValueError(f"band dropout min_bands must be at least 1, got {min_bands}.")
    if probability == 0.0:
        return batch
    real = batch.band_mask.any(1)  # (B, C): bands observed at some frame
    b, c = real.shape
    # Drawn where the generator lives (the batch's device by default), moved if needed.
    where = generator.device if generator is not None else real.device

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=generator, device=where).to(real.device)

    n_real = real.sum(1)  # (B,)
    low = n_real.clamp(max=min_bands)
    keep = low + (uniform(b) * (n_real - low + 1).float()).long().clamp(max=n_real - low)
    chosen = uniform(b) < probability
    keep = torch.where(chosen, keep, n_real)  # (B,)
    scores = uniform(b, c)
    scores = scores.masked_fill(~real, 2.0)  # padded bands rank last
    rank = scores.argsort(1).argsort(1)  # (B, C): 0 = first kept
    kept = real & (rank < keep[:, None])  # (B, C)
    return dataclasses.replace(batch, band_mask=batch.band_mask & kept[:, None, :])
