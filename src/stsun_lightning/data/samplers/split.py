"""Train, validation and test splits by disjoint spatial blocks, and patches inside them.

Neighbouring pixels are correlated, so random patches for validation would leak
training data. The region is cut into square blocks on the pixel grid; each block goes
to one split, and every patch lies wholly inside one block.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import shapely

from stsun_lightning.data.io.grid import Grid
from stsun_lightning.errors import ConfigError

__all__ = ["SPLITS", "block_patches", "spatial_blocks"]

SPLITS = ("train", "val", "test")


def spatial_blocks(
    region: shapely.Geometry,
    grid: Grid,
    block_size: int,
    fractions: dict[str, Any],
    seed: int,
) -> dict[str, list[shapely.Polygon]]:
    """Square blocks over ``region``, each assigned to one split at random.

    Args:
        region: where the data is (grid CRS).
        grid: the pixel grid (blocks lie on its pixel edges).
        block_size: block side in pixels.
        fractions: ``{"val": f, "test": f}`` shares of the blocks (the rest trains).
        seed: seed of the assignment.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` block polygons.

    Raises:
        ConfigError: too few blocks for the requested splits, naming the sizes.
    """
    (rx, ry), side_x, side_y = grid.res, block_size * grid.res[0], block_size * grid.res[1]
    left, bottom, right, top = grid.snap(region.bounds)
    blocks = []
    for row in range(math.ceil((top - bottom) / side_y - 1e-9)):
        for col in range(math.ceil((right - left) / side_x - 1e-9)):
            x0, y1 = left + col * side_x, top - row * side_y
            block = shapely.box(x0, y1 - side_y, x0 + side_x, y1)
            if block.intersection(region).area > 0.5 * rx * ry:
                blocks.append(block)
    wanted = {s: fractions.get(s, 0.0) for s in ("val", "test")}
    counts = {s: (max(1, round(f * len(blocks))) if f > 0 else 0) for s, f in wanted.items()}
    if sum(counts.values()) >= len(blocks):
        width, height = round((right - left) / rx), round((top - bottom) / ry)
        raise ConfigError(
            f"The data's common region ({width} × {height} px) holds {len(blocks)} block(s) of "
            f"{block_size} px, too few for the val and test splits ({counts}) and training: "
            "lower split.block_size."
        )
    order = np.random.default_rng((seed, 11)).permutation(len(blocks))
    val_end = counts["val"]
    test_end = val_end + counts["test"]
    return {
        "val": [blocks[i] for i in order[:val_end]],
        "test": [blocks[i] for i in order[val_end:test_end]],
        "train": [blocks[i] for i in order[test_end:]],
    }


def block_patches(
    blocks: list[shapely.Polygon],
    region: shapely.Geometry,
    grid: Grid,
    patch_size: int,
    random: int | None = None,
    seed: int = 0,
) -> list[tuple[float, float]]:
    """Top-left corners of patches wholly inside one block and the region.

    Args:
        blocks: the blocks of one split.
        region: where the data is.
        grid: the pixel grid (corners lie on its pixel edges).
        patch_size: patch side in pixels.
        random: draw this many random patches (training); None tiles each block with
            non-overlapping patches (evaluation).
        seed: seed of the random patches.

    Returns:
        ``(left, top)`` of each patch, in grid coordinates.
    """
    rx, ry = grid.res
    px, py = patch_size * rx, patch_size * ry
    if random is None:
        corners = []
        for block in blocks:
            x0, y0, x1, y1 = block.bounds
            # Whole patches only: a block that is not a multiple of the patch leaves a
            # margin, rather than a patch reaching into the neighbouring block.
            for row in range(math.floor((y1 - y0) / py + 1e-9) if py else 0):
                for col in range(math.floor((x1 - x0) / px + 1e-9) if px else 0):
                    left, top = x0 + col * px, y1 - row * py
                    if _inside(region, left, top, px, py):
                        corners.append((left, top))
        return corners
    usable = [b for b in blocks if b.bounds[2] - b.bounds[0] >= px - 1e-9]
    if not usable or random <= 0:
        return []
    rng = np.random.default_rng((seed, 13))
    corners, attempts = [], 0
    while len(corners) < random and attempts < 50 * random:
        attempts += 1
        x0, y0, x1, y1 = usable[int(rng.integers(len(usable)))].bounds
        cols = round((x1 - x0 - px) / rx)
        rows = round((y1 - y0 - py) / ry)
        left = x0 + int(rng.integers(cols + 1)) * rx
        top = y1 - int(rng.integers(rows + 1)) * ry
        if _inside(region, left, top, px, py):
            corners.append((left, top))
    return corners


def _inside(region: shapely.Geometry, left: float, top: float, px: float, py: float) -> bool:
    """Whether the patch lies in the region (up to a sliver of a pixel at its edges)."""
    patch = shapely.box(left, top - py, left + px, top)
    return patch.difference(region).area <= 1e-6 * patch.area
