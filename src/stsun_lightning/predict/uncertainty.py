"""Per-pixel uncertainty of a class map, from its blended class probabilities.

Both measures are computed from the probabilities *after* the overlapping windows are
blended (what the probabilities file holds), so they describe the written map: where two
windows disagree, the blend is flatter and the pixel more uncertain. Both lie in [0, 1],
0 for a one-hot probability vector:

- ``entropy``: normalised Shannon entropy ``-Σ_k p_k log p_k / log K``; 1 where every one
  of the K requested categories is equally likely. It counts doubt spread over all classes.
- ``margin``: ``1 - (p₁ - p₂)``, with p₁ and p₂ the two largest probabilities; 1 where
  the two best classes tie. It says how close the map came to another label.

With a single category (K = 1) both are 0.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["UNCERTAINTY_MEANING", "UncertaintyKind", "margin", "normalised_entropy", "uncertainty"]

UncertaintyKind = Literal["none", "entropy", "margin"]

UNCERTAINTY_MEANING = {
    "entropy": "-sum_k p_k log p_k / log K of the blended probabilities: 0 certain, 1 all K equally likely",
    "margin": "1 - (p1 - p2), p1 and p2 the two largest blended probabilities: 0 certain, 1 a tie",
}
"""What each kind means, written into the file's tags."""


def normalised_entropy(probabilities: np.ndarray, axis: int = 0) -> np.ndarray:
    """Entropy over ``axis`` divided by log K, in [0, 1].

    Args:
        probabilities: (..., K, ...) probabilities summing to 1 over ``axis``.
        axis: the category axis.

    Returns:
        The input's shape without ``axis``, float32.
    """
    p = np.clip(np.asarray(probabilities, dtype=np.float32), 0.0, 1.0)
    k = p.shape[axis]
    if k < 2:
        return np.zeros(np.delete(p.shape, axis), dtype=np.float32)
    # 0 · log(tiny) = 0: a category with no probability adds nothing, as in the limit.
    entropy = -(p * np.log(np.maximum(p, np.finfo(np.float32).tiny))).sum(axis)
    return np.clip(entropy / np.float32(np.log(k)), 0.0, 1.0)


def margin(probabilities: np.ndarray, axis: int = 0) -> np.ndarray:
    """One minus the gap between the two largest probabilities over ``axis``, in [0, 1].

    Args:
        probabilities: (..., K, ...) probabilities over ``axis``.
        axis: the category axis.

    Returns:
        The input's shape without ``axis``, float32.
    """
    p = np.moveaxis(np.asarray(probabilities, dtype=np.float32), axis, 0)
    if p.shape[0] < 2:
        return np.clip(1.0 - p[0], 0.0, 1.0)
    top = np.partition(p, p.shape[0] - 2, axis=0)[-2:]
    return np.clip(1.0 - (top[1] - top[0]), 0.0, 1.0)


def uncertainty(probabilities: np.ndarray, kind: UncertaintyKind, axis: int = 0) -> np.ndarray:
    """The ``kind`` measure of :mod:`this module <stsun_lightning.predict.uncertainty>`."""
    if kind == "entropy":
        return normalised_entropy(probabilities, axis)
    if kind == "margin":
        return margin(probabilities, axis)
    raise ValueError(f"uncertainty must be 'entropy' or 'margin', got {kind!r}.")
