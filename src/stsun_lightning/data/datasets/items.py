"""One-item batches of windows: labels mapped to targets, and the batch fields around them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from stsun_lightning.batch import Batch, OutputKind

__all__ = ["class_target", "label_lookup", "target_tensor", "value_target", "window_batch"]


def label_lookup(
    classes: Mapping[int, str], ignore_values: Sequence[float], categories: Sequence[str]
) -> dict[int, int]:
    """Label value -> index into ``categories`` (-1 for ignored values)."""
    lut = {int(v): list(categories).index(name) for v, name in classes.items()}
    lut.update({int(v): -1 for v in ignore_values})
    return lut


def class_target(values: np.ndarray, lut: Mapping[int, int]) -> tuple[np.ndarray, int | None]:
    """Class labels as class indices.

    Args:
        values: (..., h, w) integer label values.
        lut: value -> class index (-1 = ignore), see :func:`label_lookup`.

    Returns:
        int64 class indices (-1 = ignore) and the first value that is neither a declared
        class nor ignored (None when there is none); such values map to -1.
    """
    values = np.asarray(values).astype(np.int64, copy=False)
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    lookup = np.full(high - low + 1, -2, dtype=np.int64)  # -2: undeclared
    for value, index in lut.items():
        if low <= value <= high:
            lookup[value - low] = index
    target = lookup[values - low]
    undeclared = target == -2
    if bool(undeclared.any()):
        first = int(values[undeclared][0])
        target[undeclared] = -1
        return target, first
    return target, None


def value_target(raw: np.ndarray, ignore_values: Sequence[float]) -> np.ndarray:
    """Value labels as float32 targets, NaN where ignored or without data."""
    return np.where(np.isin(raw, list(ignore_values)), np.nan, raw).astype(np.float32)


def window_batch(
    metadata: list[dict[str, Tensor]],
    gsd_m: float,
    dates: list[float],
    image: np.ndarray,
    valid: np.ndarray,
    task_row: int,
    outputs: Literal["state", "change", "aggregate", "per_date"],
    rows: list[int],
    classification: bool,
    source: str,
    target: np.ndarray | None = None,
    time_mask: np.ndarray | None = None,
    band_mask: np.ndarray | None = None,
) -> Batch:
    """A one-item batch of a window.

    Args:
        metadata: per input, its bands' metadata (``Sensor.metadata(bands)``), in the
            order of the image's channels.
        gsd_m: metres per pixel.
        dates: (T,) days since 1970-01-01 of each frame, NaN where unknown.
        image: (T, C, h, w) normalised values.
        valid: (h, w) bool.
        task_row: row of the task vocabulary.
        outputs: "state" (at the last real frame), "change" (first to last real frame),
            "aggregate", or "per_date" (a state at every frame: To = T).
        rows: category rows (classification) or variable rows (regression).
        classification: whether ``rows`` are categories.
        source: source name.
        target: labels (long, -1 ignored) as (h', w') or (To, h', w'); values (float,
            NaN ignored) as (h', w'), (To, h', w') or (To, V, h', w'); or None.
        time_mask: (T,) bool real frames (default: all).
        band_mask: (T, C) bool, band c observed at frame t (default: all).

    Returns:
        The batch, B = 1, To = 1 (T for "per_date").
    """
    t = len(dates)
    real = np.ones(t, dtype=bool) if time_mask is None else np.asarray(time_mask, dtype=bool)
    frames = np.flatnonzero(real)
    first, last = (int(frames[0]), int(frames[-1])) if frames.size else (0, t - 1)
    if outputs == "per_date":
        slots = [[float(OutputKind.STATE), float(i), float(i)] for i in range(t)]
    else:
        kind, ref_a, ref_b = {
            "state": (OutputKind.STATE, last, last),
            "change": (OutputKind.CHANGE, first, last),
            "aggregate": (OutputKind.AGGREGATE, -1, -1),
        }[outputs]
        slots = [[float(kind), float(ref_a), float(ref_b)]]
    fields: dict[str, object] = dict(
        image=torch.from_numpy(image)[None],
        wavelength_nm=torch.cat([m["wavelength_nm"] for m in metadata])[None],
        bandwidth_nm=torch.cat([m["bandwidth_nm"] for m in metadata])[None],
        modality=torch.cat([m["modality"] for m in metadata])[None],
        band_mask=(
            torch.ones(1, *image.shape[:2], dtype=torch.bool)
            if band_mask is None
            else torch.from_numpy(np.asarray(band_mask, dtype=bool))[None]
        ),
        gsd_m=torch.tensor([gsd_m], dtype=torch.float32),
        dates=torch.tensor([dates], dtype=torch.float32),
        time_mask=torch.from_numpy(real)[None],
        valid_mask=torch.from_numpy(valid)[None],
        task=torch.tensor([task_row]),
        outputs=torch.tensor([slots]),
        source=[source],
    )
    if classification:
        fields["categories"] = torch.tensor([rows])
        fields["category_mask"] = torch.ones(1, len(rows), dtype=torch.bool)
    else:
        fields["variables"] = torch.tensor([rows])
    fields["target"] = target_tensor(target, classification)
    return Batch(**fields)


def target_tensor(target: np.ndarray | None, classification: bool) -> Tensor | None:
    """A one-item batch's target from a window's labels (see :func:`window_batch`).

    Returns:
        (1, To, h', w') classes or (1, To, V, h', w') values, or None.
    """
    if target is None:
        return None
    if target.ndim == 2:
        target = target[None]  # (To = 1, h', w')
    if not classification and target.ndim == 3:
        target = target[:, None]  # (To, V = 1, h', w')
    return torch.from_numpy(target)[None]
