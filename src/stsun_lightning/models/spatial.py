"""Where a token is on the ground: band-limited position encoding, grid anchoring, windows.

Positions are in metres, not in patch indices, so the same place seen at 10 m and at
30 m gets consistent encodings. They are measured from the first real token (the
top-left corner of the real tokens' bounding box), and windows are anchored there too,
so padding an image at any side never changes how real tokens are placed or grouped.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from stsun_lightning.models.layers import allow_some_key

__all__ = [
    "encode_ground_positions",
    "ground_position_encoding",
    "nyquist_taper",
    "real_token_origin",
    "roll_token_grid",
    "window_segments",
    "windowed_attention",
]


def nyquist_taper(wavelength_m: Tensor, spacing_m: Tensor) -> Tensor:
    """Amplitude of each encoded wavelength on a grid of tokens ``spacing_m`` apart.

    0 at and below the grid's Nyquist wavelength (two token spacings), 1 from twice that
    on, and a smoothstep in log2 of the wavelength between: no encoded frequency aliases,
    and the amplitude is a smooth function of the GSD, so a small GSD change is a small
    change of the encoding.

    Args:
        wavelength_m: (N,) wavelengths on the ground.
        spacing_m: (B,) metres between token centres.

    Returns:
        (B, N) amplitudes in [0, 1].
    """
    octaves = torch.log2(wavelength_m[None] / (2 * spacing_m[:, None])).clamp(0.0, 1.0)
    return octaves * octaves * (3 - 2 * octaves)


def encode_ground_positions(
    positions_m: Tensor,
    spacing_m: Tensor,
    num_wavelengths: int,
    min_wavelength_m: float = 10.0,
    max_wavelength_m: float = 100_000.0,
) -> Tensor:
    """Sin-cos code of positions on one ground axis, band-limited to a token grid.

    The wavelengths are fixed in metres (log-spaced), so a channel codes the same ground
    position at every GSD; each is weighted by :func:`nyquist_taper` for the grid's
    spacing, so channels the grid cannot resolve are zero instead of aliased.

    Args:
        positions_m: (B, N) positions in metres.
        spacing_m: (B,) metres between token centres.
        num_wavelengths: n, the wavelengths of the code.
        min_wavelength_m: shortest wavelength (used where the grid resolves it).
        max_wavelength_m: longest wavelength.

    Returns:
        (B, N, 2 n): n sines, then n cosines.
    """
    wavelengths = torch.logspace(
        math.log10(min_wavelength_m),
        math.log10(max_wavelength_m),
        num_wavelengths,
        device=positions_m.device,
    )
    amplitude = nyquist_taper(wavelengths, spacing_m.float())[:, None, :]  # (B, 1, n)
    angles = 2 * math.pi * positions_m.float()[..., None] / wavelengths
    return torch.cat([angles.sin() * amplitude, angles.cos() * amplitude], -1)


def ground_position_encoding(
    h: int, w: int, patch_size: int, gsd_m: Tensor, dim: int, offset_m: Tensor | None = None
) -> Tensor:
    """2-D code of each token centre's ground position (:func:`encode_ground_positions`).

    Args:
        h: token rows.
        w: token columns.
        patch_size: pixels per token side.
        gsd_m: (B,) metres per pixel.
        dim: encoding width, a multiple of 4.
        offset_m: (B, 2) metres added to every (row, column) position, or None: where the
            grid's corner lies in the encoding (a random offset in training makes every
            phase of every wavelength seen, whatever the size of the training patches).

    Returns:
        (B, h * w, dim): first half codes the row (northing), second the column;
        positions are metres from the top-left token's outer corner (plus ``offset_m``).
    """
    if dim % 4:
        raise ValueError(f"Position encoding width must be a multiple of 4, got {dim}.")
    b = gsd_m.shape[0]
    spacing = patch_size * gsd_m.float()  # (B,) metres per token
    # Rows and columns coded apart (not one code of max(h, w) cut to each): an exported
    # graph keeps h and w symbolic, with no branch on which is larger.
    row_code, col_code = (
        encode_ground_positions(
            (torch.arange(n, device=gsd_m.device, dtype=torch.float32) + 0.5)[None]
            * spacing[:, None]
            + (0.0 if offset_m is None else offset_m.to(spacing)[:, axis : axis + 1]),
            spacing,
            dim // 4,
        )  # (B, n, dim / 2)
        for axis, n in enumerate((h, w))
    )
    row_enc = row_code[:, :, None, :].expand(-1, h, w, -1)
    col_enc = col_code[:, None, :, :].expand(-1, h, w, -1)
    return torch.cat([row_enc, col_enc], -1).reshape(b, h * w, dim)


def real_token_origin(token_valid: Tensor) -> Tensor:
    """The first row and the first column that hold a real token, per item.

    Args:
        token_valid: (B, h, w) bool.

    Returns:
        (B, 2) long (row, column); (0, 0) for an item without a real token.
    """
    rows = token_valid.any(2)  # (B, h)
    cols = token_valid.any(1)  # (B, w)
    # argmax of a bool row is its first True (0 when there is none).
    return torch.stack([rows.int().argmax(1), cols.int().argmax(1)], 1)


def roll_token_grid(
    x: Tensor, origin: list[tuple[int, int]] | Tensor, inverse: bool = False
) -> Tensor:
    """Move each item's grid so that its ``origin`` is at (0, 0), or back with ``inverse``.

    What rolls off the top and left wraps round to the bottom and right; those rows and
    columns hold no real token (they lie before the first real one), so they end up as
    padding after the real tokens, where padding is exact.

    Args:
        x: (B, ..., h, w, D) or (B, h, w) tokens or masks.
        origin: per item, the (row, column) that becomes (0, 0): a list of numbers, or
            a (B, 2) long tensor (what an exported graph uses: it cannot branch on values).
        inverse: undo the move.

    Returns:
        ``x`` with each item's grid rolled.
    """
    dims = (-3, -2) if x.dim() > 3 else (-2, -1)
    sign = 1 if inverse else -1
    if isinstance(origin, Tensor):
        return _gather_roll(x, origin, dims, sign)
    if not any(r or c for r, c in origin):
        return x
    return torch.stack(
        [
            item.roll((sign * r, sign * c), dims) if (r or c) else item
            for item, (r, c) in zip(x, origin, strict=True)
        ]
    )


def _gather_roll(x: Tensor, origin: Tensor, dims: tuple[int, int], sign: int) -> Tensor:
    """:func:`roll_token_grid` by a (B, 2) tensor of shifts, as gathers from the doubled grid.

    Indices into ``cat([x, x])`` never need a modulo (which ONNX export cannot take by a
    symbolic size): rolling back by r reads token i + r, rolling forth reads i + size - r.
    """
    for axis, dim in enumerate(dims):
        size = x.shape[dim]
        steps = origin[:, axis : axis + 1]  # (B, 1)
        start = steps if sign < 0 else size - steps
        index = torch.arange(size, device=x.device)[None] + start  # (B, size), in [0, 2 size)
        view = [x.shape[0]] + [1] * (x.dim() - 1)
        view[dim] = size
        x = torch.gather(torch.cat([x, x], dim), dim, index.view(view).expand_as(x))
    return x


def window_segments(size: int, window: int, shift: int) -> list[tuple[int, int, int]]:
    """How one axis of ``size`` tokens splits into windows whose grid starts at ``-shift``.

    Args:
        size: tokens along the axis.
        window: window side.
        shift: offset of the window grid, 0 <= shift < window.

    Returns:
        Runs ``(start, count, length)``: ``count`` consecutive windows of ``length``
        tokens from token ``start``: a short first window when shifted, the full ones,
        and a short last one where ``size`` ends inside a window.
    """
    head = (window - shift) % window
    if head > size:  # not min(): an exported graph then keeps a plain number here
        head = size
    full = (size - head) // window
    tail = size - head - full * window
    runs = [(0, 1, head), (head, full, window), (head + full * window, 1, tail)]
    return [run for run in runs if run[1] and run[2]]


def windowed_attention(
    qkv: Tensor,
    grid: tuple[int, int],
    window: int,
    shift: int,
    attend: Callable[[Tensor, Tensor | None], Tensor],
    key_valid: Tensor | None = None,
) -> Tensor:
    """Attention within the windows of a token grid whose window grid starts at ``-shift``.

    Windows cut by the image border (a shifted grid's first row and column, the last
    ones where the grid ends inside a window) are attended at their own size, windows
    of one shape together, so no token is padded and no mask is needed when every key
    is real. Windows are anchored at the grid's origin: tokens added at the bottom or
    right never regroup the others.

    Args:
        qkv: (N, h * w, E) per token (e.g. queries, keys and values concatenated).
        grid: (h, w).
        window: window side in tokens.
        shift: offset of the window grid, 0 <= shift < window.
        attend: ``(x (N * nW, L, E), key mask (N * nW, 1, 1, L) or None) -> (N * nW, L, D)``,
            attention and anything per token after it (the output projection).
        key_valid: (N, h * w) bool keys that may be attended, or None for all.

    Returns:
        (N, h * w, D).
    """
    h, w = grid
    n = qkv.shape[0]
    x = qkv.view(n, h, w, -1)
    valid = key_valid.view(n, h, w) if key_valid is not None else None
    rows = []
    for r0, rn, rl in window_segments(h, window, shift):
        cols = []
        for c0, cn, cl in window_segments(w, window, shift):
            block = x[:, r0 : r0 + rn * rl, c0 : c0 + cn * cl]
            mask = None
            if valid is not None:
                keys = _to_windows(valid[:, r0 : r0 + rn * rl, c0 : c0 + cn * cl, None], rl, cl)
                mask = allow_some_key(keys[..., 0])[:, None, None, :]
            y = attend(_to_windows(block, rl, cl), mask)  # (N * rn * cn, rl * cl, D)
            cols.append(
                y.view(n, rn, cn, rl, cl, -1).transpose(2, 3).reshape(n, rn * rl, cn * cl, -1)
            )
        rows.append(cols[0] if len(cols) == 1 else torch.cat(cols, 2))
    out = rows[0] if len(rows) == 1 else torch.cat(rows, 1)
    return out.reshape(n, h * w, -1)


def _to_windows(x: Tensor, rows: int, cols: int) -> Tensor:
    """(N, rn * rows, cn * cols, E) -> (N * rn * cn, rows * cols, E)."""
    n, height, width, e = x.shape
    x = x.reshape(n, height // rows, rows, width // cols, cols, e).transpose(2, 3)
    return x.reshape(-1, rows * cols, e)
