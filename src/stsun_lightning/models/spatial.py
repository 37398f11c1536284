"""Where a token is on the ground: GSD-scaled position encoding and windowed attention.

Positions are in metres, not in patch indices, so the same place seen at 10 m and at
30 m gets consistent encodings. Windows are anchored at the top-left corner, so adding
padded pixels at the bottom or right never changes how real tokens are grouped.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ground_position_encoding", "merge_windows", "partition_windows"]


def ground_position_encoding(
    h: int,
    w: int,
    patch_size: int,
    gsd_m: Tensor,
    dim: int,
    min_wavelength_m: float = 10.0,
    max_wavelength_m: float = 100_000.0,
) -> Tensor:
    """2-D sin-cos encoding of each token centre's ground position.

    Args:
        h: token rows.
        w: token columns.
        patch_size: pixels per token side.
        gsd_m: (B,) metres per pixel.
        dim: encoding width, a multiple of 4.
        min_wavelength_m: shortest encoded wavelength on the ground.
        max_wavelength_m: longest encoded wavelength on the ground.

    Returns:
        (B, h * w, dim): first half encodes the row (northing), second the column.
    """
    if dim % 4:
        raise ValueError(f"Position encoding width must be a multiple of 4, got {dim}.")
    device = gsd_m.device
    n = dim // 4
    wavelengths = torch.logspace(
        math.log10(min_wavelength_m), math.log10(max_wavelength_m), n, device=device
    )
    spacing = (patch_size * gsd_m.float())[:, None]  # (B, 1) metres per token
    rows = (torch.arange(h, device=device, dtype=torch.float32) + 0.5)[None] * spacing  # (B, h)
    cols = (torch.arange(w, device=device, dtype=torch.float32) + 0.5)[None] * spacing  # (B, w)

    def encode(x: Tensor) -> Tensor:
        angles = 2 * math.pi * x[..., None] / wavelengths
        return torch.cat([angles.sin(), angles.cos()], -1)

    row_enc = encode(rows)[:, :, None, :].expand(-1, h, w, -1)
    col_enc = encode(cols)[:, None, :, :].expand(-1, h, w, -1)
    return torch.cat([row_enc, col_enc], -1).reshape(gsd_m.shape[0], h * w, dim)


def partition_windows(
    x: Tensor, grid: tuple[int, int], window: int, shift: int
) -> tuple[Tensor, tuple[int, int]]:
    """Split a token grid into square windows.

    The grid is padded by ``shift`` at the top and left (shifted windows without the
    cyclic roll, whose result would depend on the grid's size) and up to a multiple of
    ``window`` at the bottom and right.

    Args:
        x: (N, h * w, D) tokens, or (N, h * w) a mask.
        grid: (h, w).
        window: window side in tokens.
        shift: offset of the window grid, 0 <= shift < window.

    Returns:
        (N * nW, window * window, D) (or without D), and the padded grid (Hp, Wp).
    """
    h, w = grid
    extra = x.shape[2:]
    x = x.reshape(x.shape[0], h, w, *extra)
    pad_bottom = (-(h + shift)) % window
    pad_right = (-(w + shift)) % window
    if x.dim() == 4:
        x = F.pad(x, (0, 0, shift, pad_right, shift, pad_bottom))
    else:
        x = F.pad(x, (shift, pad_right, shift, pad_bottom))
    hp, wp = h + shift + pad_bottom, w + shift + pad_right
    n = x.shape[0]
    x = x.reshape(n, hp // window, window, wp // window, window, *extra)
    x = x.transpose(2, 3).reshape(n * (hp // window) * (wp // window), window * window, *extra)
    return x, (hp, wp)


def merge_windows(
    x: Tensor, grid: tuple[int, int], padded: tuple[int, int], window: int, shift: int
) -> Tensor:
    """Inverse of :func:`partition_windows`: (N * nW, window², D) -> (N, h * w, D)."""
    h, w = grid
    hp, wp = padded
    d = x.shape[-1]
    n = x.shape[0] // ((hp // window) * (wp // window))
    x = (
        x.reshape(n, hp // window, wp // window, window, window, d)
        .transpose(2, 3)
        .reshape(n, hp, wp, d)
    )
    return x[:, shift : shift + h, shift : shift + w].reshape(n, h * w, d)
