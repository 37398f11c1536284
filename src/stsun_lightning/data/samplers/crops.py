"""Random training crops, drawn afresh every epoch from (seed, epoch, index).

A training dataset says *where* its crops may lie (:class:`CropArea`: a rectangle of a
scene's grid, such as a training block or a whole scene, with the part of it that has
data), and :class:`RandomCrops` draws crop ``i`` of epoch ``e`` from ``(seed, e, i)``
alone, in whichever process reads it. The epoch reaches the workers with each index
(:mod:`~stsun_lightning.data.samplers.epochs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import shapely

from stsun_lightning.data.datasets.patches import PatchRef
from stsun_lightning.data.samplers.epochs import item_rng
from stsun_lightning.data.transforms.coarsen import DEFAULT_FACTORS, coarsening_factors
from stsun_lightning.errors import ConfigError

__all__ = ["CROP_ATTEMPTS", "CropArea", "RandomCrops", "patch_inside"]

CROP_ATTEMPTS = 100
"""Corners a crop tries before it takes one of the known-valid fallback crops."""

_CROP_STREAM = 13  # the crop's draw; flips and frames draw from other streams
_COARSEN_STREAM = 23  # whether a crop is coarsened, and by what factor


def patch_inside(data: shapely.Geometry, left: float, top: float, px: float, py: float) -> bool:
    """Whether the patch lies in ``data`` (up to a sliver of a pixel at its edges).

    Args:
        data: where there is data.
        left: the patch's left edge.
        top: its top edge.
        px: its width in CRS units.
        py: its height in CRS units.
    """
    patch = shapely.box(left, top - py, left + px, top)
    return patch.difference(data).area <= 1e-6 * patch.area


@dataclass(frozen=True)
class CropArea:
    """A rectangle of one scene's grid that random crops lie wholly inside.

    Attributes:
        scene: the crops' scene (a position in the dataset's scenes).
        left: the rectangle's left edge in the grid CRS (on a pixel edge).
        top: its top edge.
        width: its width in pixels.
        height: its height in pixels.
        res: the grid's pixel size ``(x, y)`` in CRS units, both positive.
        data: the part of the rectangle with data, which a crop must lie in; None
            where the whole rectangle has data (no check needed).
    """

    scene: int
    left: float
    top: float
    width: int
    height: int
    res: tuple[float, float]
    data: shapely.Geometry | None = None


class RandomCrops:
    """``count`` random crops per epoch inside some areas; crop i of epoch e from (seed, e, i).

    Crop ``i`` first tries area ``i mod len(areas)``, then areas chosen at random, each
    time at a uniformly random pixel corner; a crop that leaves its area's data is
    drawn again. So the crops of an epoch are uniform over the valid (area, corner)
    pairs, and an area with data throughout gets exactly its share (``count / areas``,
    when that divides). A crop whose :data:`CROP_ATTEMPTS` tries all leave the data (an
    area set that is mostly empty) takes one of ``fallback`` instead.

    With ``coarsen`` > 0 that share of the crops is drawn ``f`` times larger, ``f`` from
    ``coarsen_factors``, inside the areas that hold it; the dataset reads the larger
    window and averages it down to the patch (:attr:`PatchRef.factor`), so a coarsened
    crop has the patch's pixels, ``f`` times its GSD and ``f²`` times its ground, as a
    coarser sensor sees the same place. The draw of ``f`` has a stream of its own:
    with ``coarsen=0`` the crops are those drawn without the option.

    Args:
        areas: where crops may lie; areas smaller than the patch are left out.
        patch_size: the crops' side in pixels.
        count: crops per epoch.
        seed: the seed of the draws.
        fallback: crops known to lie in the data (e.g. the tiles of the areas).
        coarsen: share of crops drawn larger and coarsened, in [0, 1].
        coarsen_factors: the factors drawn from, uniformly (each >= 2).

    Raises:
        ValueError: no area holds a patch, naming the patch size.
        ConfigError: a coarsening share outside [0, 1], a factor below 2, or a factor
            whose crop no area holds, naming the sizes.
    """

    def __init__(
        self,
        areas: Sequence[CropArea],
        patch_size: int,
        count: int,
        seed: int = 0,
        fallback: Sequence[PatchRef] = (),
        coarsen: float = 0.0,
        coarsen_factors: Sequence[int] = DEFAULT_FACTORS,
    ) -> None:
        self.areas = [a for a in areas if min(a.width, a.height) >= patch_size]
        if count > 0 and not self.areas:
            raise ValueError(f"No crop area holds a patch of {patch_size} px.")
        self.patch_size, self.count, self.seed = patch_size, max(int(count), 0), seed
        self.fallback = list(fallback)
        self.coarsen = coarsen
        self.coarsen_factors = coarsening_factors(coarsen, coarsen_factors, "data")
        self._areas_by_factor = {1: self.areas}
        if coarsen > 0:
            for f in self.coarsen_factors:
                holding = [a for a in self.areas if min(a.width, a.height) >= f * patch_size]
                if count > 0 and not holding:
                    largest = max(min(a.width, a.height) for a in self.areas)
                    raise ConfigError(
                        f"data.coarsen_factors: factor {f} needs a crop area of "
                        f"{f * patch_size} px a side ({f} × the {patch_size} px patch); the "
                        f"largest holds {largest} px. Use smaller factors or a smaller patch."
                    )
                self._areas_by_factor[f] = holding

    def __len__(self) -> int:
        return self.count

    def factor(self, epoch: int, index: int) -> int:
        """The coarsening factor of crop ``index`` of ``epoch`` (1: not coarsened)."""
        if self.coarsen == 0.0:
            return 1
        rng = item_rng(self.seed, _COARSEN_STREAM, epoch, index)
        if rng.random() >= self.coarsen:
            return 1
        return self.coarsen_factors[int(rng.integers(len(self.coarsen_factors)))]

    def draw(self, epoch: int, index: int) -> PatchRef:
        """Crop ``index`` of ``epoch``: the same for the same seed, epoch and index.

        Raises:
            IndexError: ``index`` not in ``[0, count)``.
            RuntimeError: every try left the data and there is no fallback crop.
        """
        if not 0 <= index < self.count:
            raise IndexError(f"Crop {index} out of range for {self.count} crops per epoch.")
        rng = item_rng(self.seed, _CROP_STREAM, epoch, index)
        factor = self.factor(epoch, index)
        areas = self._areas_by_factor[factor]
        side = self.patch_size * factor
        area = areas[index % len(areas)]
        for _ in range(CROP_ATTEMPTS):
            rx, ry = area.res
            left = area.left + int(rng.integers(area.width - side + 1)) * rx
            top = area.top - int(rng.integers(area.height - side + 1)) * ry
            if area.data is None or patch_inside(area.data, left, top, side * rx, side * ry):
                return PatchRef(area.scene, left, top, factor)
            area = areas[int(rng.integers(len(areas)))]
        if not self.fallback:
            raise RuntimeError(
                f"Crop {index} of epoch {epoch}: {CROP_ATTEMPTS} random corners all left the "
                f"data of its {len(areas)} area(s), and there is no fallback crop."
            )
        return self.fallback[int(rng.integers(len(self.fallback)))]
