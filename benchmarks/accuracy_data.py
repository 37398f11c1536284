"""In-memory SpectralWorld scenes for the accuracy benchmarks, and the transforms they test.

The accuracy experiments need the *same* landscapes seen by other sensors, at other
ground sample distances (GSD) and on other dates than the training data, which the
GeoTIFF world on disk does not offer. This module draws landscapes with SpectralWorld's
own layout generator and renders them with its own renderer
(:mod:`stsun_lightning.data.datasets.world.layout`, :mod:`stsun_lightning.data.datasets.world.render`), in
memory: a landscape is drawn once on a 5 m grid and rendered at 10, 20 or 30 m through
any sensor's bands on any dates, under a clear sky.

Shapes: N scenes, T dates, C bands, H×W pixels, B batch, K classes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from stsun_lightning.batch import Batch, OutputKind
from stsun_lightning.data.datasets.world.layout import (
    CROP_TYPES,
    Layout,
    LayoutSpec,
    generate_layout,
)
from stsun_lightning.data.datasets.world.render import (
    draw_sky,
    majority,
    render_optical,
    surface_state,
)
from stsun_lightning.data.datasets.world.sources import (
    COARSE_CLASSES,
    FINE_CLASSES,
    SOURCES,
    coarse_classes,
    crop_classes,
    fine_classes,
)
from stsun_lightning.data.sensors import Band, band_metadata

__all__ = [
    "FARMLAND_SPEC",
    "FINE_RES_M",
    "LABELS",
    "LANDCOVER_SPEC",
    "Stack",
    "date_pool",
    "drop_bands",
    "make_batch",
    "make_layouts",
    "mask_bands",
    "random_crops",
    "render_labels",
    "render_stack",
    "select_dates",
    "standardise",
    "subsample_dates",
]

FINE_RES_M = 5.0
"""Pixel size of the drawn landscapes; every rendered GSD is a multiple of it."""
_EPOCH = dt.date(1970, 1, 1)
_YEAR = 2021
LANDCOVER_SPEC: LayoutSpec = SOURCES["s1s2_landcover"].layout
FARMLAND_SPEC: LayoutSpec = SOURCES["s2_crops"].layout
LABELS: dict[str, tuple[Callable[[Layout], np.ndarray], tuple[str, ...]]] = {
    "coarse": (coarse_classes, COARSE_CLASSES),
    "fine": (fine_classes, FINE_CLASSES),
    "crops": (crop_classes, CROP_TYPES),
}
"""Label kinds: the function giving label values 1..K (0 = none) on the fine grid, and
the class names of values 1..K."""


@dataclass
class Stack:
    """Rendered scenes of one configuration (one sensor, GSD and date list per scene).

    Attributes:
        image: (N, T, C, H, W) float32 reflectance (or kelvin / 100 for thermal bands),
            standardised once :func:`standardise` has run.
        dates: (N, T) float32 days since 1970-01-01.
        label: (N, H, W) int64 class positions 0..K-1, -1 where unlabelled.
        bands: the C bands, in order.
        gsd_m: metres per pixel.
        classes: the K class names.
    """

    image: Tensor
    dates: Tensor
    label: Tensor
    bands: tuple[Band, ...]
    gsd_m: float
    classes: tuple[str, ...]


def make_layouts(seed: int, count: int, extent_m: float, spec: LayoutSpec) -> list[Layout]:
    """Draw ``count`` landscapes of ``extent_m`` × ``extent_m`` on the 5 m grid.

    Args:
        seed: seed of the draws (landscape i uses the seed sequence (seed, i)).
        count: number of landscapes.
        extent_m: side in metres, a multiple of 30 m so that 10, 20 and 30 m grids fit.
        spec: what the landscape looks like.
    """
    size = round(extent_m / FINE_RES_M)
    if size * FINE_RES_M != extent_m or extent_m % 30:
        raise ValueError(f"extent_m must be a multiple of 30 m, got {extent_m}")
    return [
        generate_layout(np.random.default_rng([seed, index]), size, FINE_RES_M, spec)
        for index in range(count)
    ]


def date_pool(first_doy: int, last_doy: int, step_days: int) -> list[dt.date]:
    """Regularly spaced dates of the year 2021, from ``first_doy`` to ``last_doy``."""
    return [
        dt.date(_YEAR, 1, 1) + dt.timedelta(days=d - 1)
        for d in range(first_doy, last_doy + 1, step_days)
    ]


def render_stack(
    layouts: Sequence[Layout],
    bands: Sequence[Band],
    gsd_m: float,
    dates: Sequence[dt.date],
    label: str,
    seed: int,
) -> Stack:
    """Render every landscape through ``bands`` at ``gsd_m`` on each of ``dates``.

    Args:
        layouts: landscapes on the 5 m grid, all of one size.
        bands: optical bands of any sensor(s).
        gsd_m: output pixel size, a multiple of 5 m.
        dates: acquisition dates (the same for every scene).
        label: a key of :data:`LABELS`.
        seed: seed of illumination and noise (scene i uses the sequence (seed, i)).

    Returns:
        The :class:`Stack`, not yet standardised.
    """
    factor = round(gsd_m / FINE_RES_M)
    if factor * FINE_RES_M != gsd_m:
        raise ValueError(f"gsd_m must be a multiple of {FINE_RES_M} m, got {gsd_m}")
    classes = LABELS[label][1]
    images = []
    for index, layout in enumerate(layouts):
        rng = np.random.default_rng([seed, index, factor])
        size = layout.cover.shape[0] // factor
        frames = []
        for date in dates:
            state = surface_state(layout, date.timetuple().tm_yday, factor)
            sky = draw_sky(rng, size, gsd_m, 0.0)
            frames.append(render_optical(state, bands, rng, sky))
        images.append(np.stack(frames))
    days = [float((d - _EPOCH).days) for d in dates]
    return Stack(
        image=torch.from_numpy(np.stack(images)),
        dates=torch.tensor([days] * len(layouts), dtype=torch.float32),
        label=render_labels(layouts, gsd_m, label),
        bands=tuple(bands),
        gsd_m=float(gsd_m),
        classes=classes,
    )


def render_labels(layouts: Sequence[Layout], gsd_m: float, label: str) -> Tensor:
    """Labels of ``label`` at ``gsd_m``: the majority class of the 5 m pixels under each pixel.

    Returns:
        (N, H, W) int64 class positions, -1 where there is no class.
    """
    factor = round(gsd_m / FINE_RES_M)
    label_fn, classes = LABELS[label]
    values = [majority(label_fn(layout), len(classes) + 1, factor)[0] for layout in layouts]
    return torch.from_numpy(np.stack(values).astype(np.int64) - 1)


def standardise(
    stack: Stack, statistics: tuple[Tensor, Tensor] | None = None
) -> tuple[Stack, tuple[Tensor, Tensor]]:
    """Standardise each band, with given statistics or the stack's own.

    Args:
        stack: the scenes.
        statistics: (C,) means and (C,) standard deviations; default: the stack's own.

    Returns:
        The standardised stack and the statistics used.
    """
    if statistics is None:
        flat = stack.image.transpose(0, 2).flatten(1)  # (C, N*T*H*W)
        statistics = (flat.mean(1), flat.std(1).clamp(min=1e-6))
    mean, std = statistics
    image = (stack.image - mean[:, None, None]) / std[:, None, None]
    return dataclasses.replace(stack, image=image), statistics


def random_crops(
    stack: Stack, size: int, count: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """``count`` random windows of ``size`` × ``size`` pixels from random scenes.

    Returns:
        image (count, T, C, size, size), dates (count, T) and label (count, size, size).
    """
    n, _, _, height, width = stack.image.shape
    scene = torch.randint(n, (count,), generator=generator)
    top = torch.randint(height - size + 1, (count,), generator=generator)
    left = torch.randint(width - size + 1, (count,), generator=generator)
    windows = [
        (s, slice(int(y), int(y) + size), slice(int(x), int(x) + size))
        for s, y, x in zip(scene.tolist(), top, left, strict=True)
    ]
    image = torch.stack([stack.image[s, :, :, ys, xs] for s, ys, xs in windows])
    label = torch.stack([stack.label[s, ys, xs] for s, ys, xs in windows])
    return image, stack.dates[scene], label


def subsample_dates(
    days: Sequence[float], count: int, gap_days: float, generator: torch.Generator
) -> list[int]:
    """Indices of ``count`` dates drawn at random outside a random gap, in date order.

    The gap is a window of ``gap_days`` days (0 for none) placed at random inside the
    span of ``days``; no date inside it is chosen. When fewer than ``count`` dates lie
    outside the gap, the gap is dropped.

    Args:
        days: the available dates (sorted).
        count: how many to choose, at most ``len(days)``.
        gap_days: length of the window without dates.
        generator: draws the gap and the dates.

    Returns:
        ``count`` distinct sorted indices into ``days``.
    """
    if not 1 <= count <= len(days):
        raise ValueError(f"count must be in [1, {len(days)}], got {count}")
    candidates = list(range(len(days)))
    if gap_days > 0:
        span = days[-1] - days[0] - gap_days
        start = days[0] + float(torch.rand((), generator=generator)) * max(span, 0.0)
        outside = [i for i in candidates if not start <= days[i] < start + gap_days]
        if len(outside) >= count:
            candidates = outside
    order = torch.randperm(len(candidates), generator=generator)[:count]
    return sorted(candidates[int(i)] for i in order)


def select_dates(image: Tensor, dates: Tensor, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Keep the frames ``indices`` of (B, T, C, H, W) images and (B, T) dates."""
    index = torch.as_tensor(list(indices), dtype=torch.long)
    return image[:, index], dates[:, index]


def make_batch(
    image: Tensor,
    dates: Tensor,
    bands: Sequence[Band],
    gsd_m: float,
    task_row: int,
    num_categories: int,
    label: Tensor | None = None,
    output: OutputKind = OutputKind.STATE,
    category_rows: Sequence[int] | None = None,
) -> Batch:
    """A batch of the project's contract from in-memory scenes.

    Args:
        image: (B, T, C, H, W) standardised.
        dates: (B, T) days since 1970-01-01.
        bands: the C bands.
        gsd_m: metres per pixel.
        task_row: row of the task in the network's task vocabulary.
        num_categories: K; the requested rows are ``category_rows`` or 0..K-1.
        label: (B, H, W) class positions (-1 = ignore), or None.
        output: one output slot: the state at the last date, or an aggregate over all.
        category_rows: the network's category rows of the K classes.

    Returns:
        The validated :class:`Batch` (one output slot).
    """
    b, t, c, height, width = image.shape
    rows = list(range(num_categories)) if category_rows is None else list(category_rows)
    ref = float(t - 1) if output == OutputKind.STATE else -1.0
    metadata = band_metadata(bands)
    return Batch(
        image=image.float(),
        wavelength_nm=metadata["wavelength_nm"].expand(b, c),
        bandwidth_nm=metadata["bandwidth_nm"].expand(b, c),
        modality=metadata["modality"].expand(b, c),
        band_mask=torch.ones(b, t, c, dtype=torch.bool),
        gsd_m=torch.full((b,), float(gsd_m)),
        dates=dates.float(),
        time_mask=torch.ones(b, t, dtype=torch.bool),
        valid_mask=torch.ones(b, height, width, dtype=torch.bool),
        task=torch.full((b,), task_row, dtype=torch.long),
        outputs=torch.tensor([[[float(output), ref, -1.0]]]).expand(b, 1, 3).clone(),
        categories=torch.tensor(rows, dtype=torch.long).expand(b, len(rows)).clone(),
        category_mask=torch.ones(b, len(rows), dtype=torch.bool),
        target=None if label is None else label[:, None].long(),
        source=["accuracy"] * b,
    ).validate()


def mask_bands(batch: Batch, removed: Sequence[int]) -> Batch:
    """The batch with the bands at positions ``removed`` marked missing (kept in place).

    Their values become NaN and ``band_mask`` False, as a datamodule does for a band
    without data; every other band keeps its position.
    """
    index = torch.as_tensor(list(removed), dtype=torch.long)
    band_mask = batch.band_mask.clone()
    band_mask[..., index] = False
    image = batch.image.clone()
    image[:, :, index] = math.nan
    return dataclasses.replace(batch, image=image, band_mask=band_mask)


def drop_bands(batch: Batch, removed: Sequence[int]) -> Batch:
    """The batch without the bands at positions ``removed`` (C shrinks)."""
    gone = set(removed)
    return batch.select_bands([i for i in range(batch.image.shape[2]) if i not in gone])
