"""Train, validation and test splits by disjoint spatial blocks, and patches inside them.

Neighbouring pixels are correlated, so random patches for validation would leak
training data. The region is cut into square blocks on the pixel grid; each block goes
to one split, and every patch lies wholly inside one block: a fixed grid of tiles in
evaluation (:func:`block_patches`), random crops drawn afresh every epoch in training
(:func:`block_crops`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely

from stsun_lightning.data.datasets.patches import PatchRef
from stsun_lightning.data.io.grid import Grid
from stsun_lightning.data.samplers.crops import CropArea, RandomCrops, patch_inside
from stsun_lightning.data.transforms.coarsen import DEFAULT_FACTORS
from stsun_lightning.errors import ConfigError

__all__ = ["SPLITS", "block_crops", "block_patches", "spatial_blocks"]

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
) -> list[tuple[float, float]]:
    """Top-left corners of the non-overlapping patches that tile each block in the region.

    Args:
        blocks: the blocks of one split.
        region: where the data is.
        grid: the pixel grid (corners lie on its pixel edges).
        patch_size: patch side in pixels.

    Returns:
        ``(left, top)`` of each patch, in grid coordinates, block by block.
    """
    px, py = patch_size * grid.res[0], patch_size * grid.res[1]
    corners = []
    for block in blocks:
        x0, y0, x1, y1 = block.bounds
        # Whole patches only: a block that is not a multiple of the patch leaves a
        # margin, rather than a patch reaching into the neighbouring block.
        for row in range(math.floor((y1 - y0) / py + 1e-9) if py else 0):
            for col in range(math.floor((x1 - x0) / px + 1e-9) if px else 0):
                left, top = x0 + col * px, y1 - row * py
                if patch_inside(region, left, top, px, py):
                    corners.append((left, top))
    return corners


def block_crops(
    blocks: list[shapely.Polygon],
    region: shapely.Geometry,
    grid: Grid,
    patch_size: int,
    count: int,
    seed: int,
    fallback: Sequence[PatchRef] = (),
    scene: int = 0,
    coarsen: float = 0.0,
    coarsen_factors: Sequence[int] = DEFAULT_FACTORS,
) -> RandomCrops:
    """``count`` random crops per epoch, each wholly inside one block and the region.

    Every block is a :class:`CropArea`; a block that the region covers only in part
    keeps that part, which its crops must lie in. A crop that finds no place there after
    many tries takes one of ``fallback`` (the blocks' tiles, :func:`block_patches`).

    Args:
        blocks: the blocks of one split (training).
        region: where the data is.
        grid: the pixel grid (corners lie on its pixel edges).
        patch_size: patch side in pixels.
        count: crops per epoch.
        seed: seed of the crops.
        fallback: crops known to lie in the blocks and the region.
        scene: the scene the crops read.
        coarsen: share of crops drawn larger and coarsened (see :class:`RandomCrops`).
        coarsen_factors: the factors drawn from.

    Returns:
        The crops: crop ``i`` of epoch ``e`` is drawn from ``(seed, e, i)``.
    """
    (rx, ry), areas = grid.res, []
    for block in blocks:
        x0, y0, x1, y1 = block.bounds
        whole = patch_inside(region, x0, y1, x1 - x0, y1 - y0)
        areas.append(
            CropArea(
                scene,
                x0,
                y1,
                round((x1 - x0) / rx),
                round((y1 - y0) / ry),
                (rx, ry),
                None if whole else block.intersection(region),
            )
        )
    return RandomCrops(areas, patch_size, count, seed, fallback, coarsen, coarsen_factors)
