"""Random flips and 90° rotations of a patch's arrays, reproducible from a seed."""

from __future__ import annotations

import numpy as np

__all__ = ["augment_patch"]


def augment_patch(
    seed: tuple[int, ...] | np.random.Generator,
    image: np.ndarray,
    valid: np.ndarray,
    target: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The same random flip and 90° rotation (drawn from ``seed``) of a patch's arrays.

    Args:
        seed: seed of the draw (e.g. ``(seed, index)``), or the item's own generator
            (:func:`~stsun_lightning.data.samplers.epochs.item_rng`), so a patch is
            reproducible.
        image: (..., h, w).
        valid: (h, w).
        target: (..., h', w') or None.
    """
    rng = np.random.default_rng(seed)
    k, flip = int(rng.integers(4)), bool(rng.integers(2))

    def apply(a: np.ndarray) -> np.ndarray:
        a = np.rot90(a, k, axes=(-2, -1))
        return np.ascontiguousarray(a[..., ::-1] if flip else a)

    return apply(image), apply(valid), None if target is None else apply(target)
