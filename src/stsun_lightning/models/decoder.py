"""Pixel decoder: slot tokens back to full-resolution features, on the label grid.

Most of the work stays at token resolution. Each token is projected to De features and
upsampled bilinearly, normalised by the bilinearly upsampled mask of real tokens, so a
padding token has no weight and padding stays exact (``upsampling="bilinear"``); the
per-token linear unpatch (``"unpatch"``, the default: each token to the features of
its own p×p pixels) makes every token border a step. A light full-resolution
stem over the input adds the detail (with "bilinear" modulated by the upsampled
tokens, a shift and a scale per feature): a band mix weighted by band metadata (1×1), then
a depthwise 3×3 and a GELU — the same as a per-band stem, without materialising
(B, T, C, c0, H, W) — and a nonlinear refinement (depthwise 3×3, GELU, 1×1) over the
sum. Every 3×3 reads zeros at invalid pixels, as at the border of an unpadded image.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stsun_lightning.models.pyramid import PixelNorm
from stsun_lightning.models.spectral import band_weights

__all__ = ["PixelDecoder", "Upsampling", "masked_upsample", "resize_features"]

Upsampling = Literal["bilinear", "unpatch"]


def masked_upsample(features: Tensor, token_valid: Tensor, factor: int) -> Tensor:
    """Bilinear upsampling that gives tokens outside the mask no weight.

    Each output pixel is the bilinear mean of the real tokens around it: features and
    mask are upsampled alike and divided, so a padding token changes nothing, and a
    pixel whose neighbours are all padding gets 0. Next to padding it equals the
    border-clamped upsampling of the real grid alone.

    Args:
        features: (N, D, h, w).
        token_valid: (N, h, w) bool, or (B, h, w) with N a multiple of B (slots of an item).
        factor: upsampling factor (the patch size).

    Returns:
        (N, D, h * factor, w * factor).
    """
    n, b = features.shape[0], token_valid.shape[0]
    mask = token_valid.to(features.dtype)[:, None]
    if n != b:
        mask = mask.repeat_interleave(n // b, 0)
    size = (features.shape[-2] * factor, features.shape[-1] * factor)
    up = F.interpolate(features * mask, size=size, mode="bilinear", align_corners=False)
    weight = F.interpolate(mask, size=size, mode="bilinear", align_corners=False)
    return up / weight.clamp(min=1e-6) * (weight > 1e-6)


def resize_features(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize (N, D, H, W) features to ``size`` (bilinear; anti-aliased when shrinking)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def _anchored(frames: Tensor, anchors: tuple[Tensor, Tensor]) -> Tensor:
    """Each slot's anchor mix ``a`` and its change ``b - a``, per pixel.

    Args:
        frames: (B, T, k, H, W) features of every frame.
        anchors: (B, To, T) weights ``a`` and ``b`` of each slot's anchor frames.

    Returns:
        (B*To, 2k, H, W).
    """
    weights_a, weights_b = (a.to(frames.dtype) for a in anchors)
    start_a = torch.einsum("bot,btkhw->bokhw", weights_a, frames)
    start_b = torch.einsum("bot,btkhw->bokhw", weights_b, frames)
    return torch.cat([start_a, start_b - start_a], 2).flatten(0, 1)


class _DenseBlock(nn.Module):
    """Residual refinement: dense 3×3, pixel norm, GELU, 1×1 (zero-initialised)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = PixelNorm(channels)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        """(N, De, H, W) -> the same; ``keep`` (N or 1, 1, H, W): 0 at invalid pixels."""
        return x + self.out(F.gelu(self.norm(self.conv(x * keep))))


class PixelDecoder(nn.Module):
    """Slot tokens and the input -> per-pixel features of each output slot.

    Args:
        dim: token width D.
        patch_size: patch side p.
        band_dim: width of band embeddings.
        decoder_dim: per-pixel feature width De.
        stem_dim: channels c0 of the full-resolution band mix.
        upsampling: ``"bilinear"`` (mask-normalised, smooth across token borders) or
            ``"unpatch"`` (per-token linear, the baseline of the transfer ablation).
        fine_channels: channels of optional stride-2 features of each frame (the
            network's ``conv_stem`` pyramid), added to the pixel features; 0 = none.
        dense_refine: full-resolution refinement blocks with dense 3×3 convolutions
            (3×3, pixel norm, GELU, 1×1: each pixel reads every feature of its
            neighbours, as a U-Net's decoder does) instead of the one depthwise block;
            0 = the depthwise block. Needs ``upsampling="bilinear"``.
        response_dim: width of the band responses whose learnt map is added to each
            band's stem weights (``basis_kernels`` of the network); 0 = none.

    Raises:
        ValueError: unknown ``upsampling``; ``dense_refine`` < 0, or > 0 without bilinear.
    """

    def __init__(
        self,
        dim: int,
        patch_size: int,
        band_dim: int,
        decoder_dim: int,
        stem_dim: int,
        upsampling: Upsampling = "unpatch",
        fine_channels: int = 0,
        dense_refine: int = 0,
        response_dim: int = 0,
    ) -> None:
        super().__init__()
        if upsampling not in ("bilinear", "unpatch"):
            raise ValueError(
                f"Unknown decoder upsampling {upsampling!r}; expected 'bilinear' or 'unpatch'."
            )
        if dense_refine < 0 or (dense_refine and upsampling != "bilinear"):
            raise ValueError(
                f"dense_refine must be >= 0 and needs upsampling='bilinear', got "
                f"{dense_refine} with {upsampling!r}."
            )
        self.patch_size = patch_size
        self.decoder_dim = decoder_dim
        self.upsampling = upsampling
        self.norm = nn.LayerNorm(dim)
        # Bilinear: each token gives a shift and a scale of the stem's pixel features.
        factor = 2 if upsampling == "bilinear" else patch_size * patch_size
        self.unpatch = nn.Linear(dim, factor * decoder_dim)
        self.band_mix = nn.Linear(band_dim, stem_dim)
        self.basis_mix = nn.Linear(response_dim, stem_dim, bias=False) if response_dim else None
        if self.basis_mix is not None:  # starts at zero: the stem begins as without it
            nn.init.zeros_(self.basis_mix.weight)
        self.depthwise = nn.Conv2d(2 * stem_dim, 2 * stem_dim, 3, padding=1, groups=2 * stem_dim)
        self.skip = nn.Conv2d(2 * stem_dim, decoder_dim, 1)
        # The depthwise refinement's (or the unpatch path's) 1×1; dense blocks have their own.
        self.out = nn.Conv2d(decoder_dim, decoder_dim, 1) if not dense_refine else None
        self.refine = (
            nn.Conv2d(decoder_dim, decoder_dim, 3, padding=1, groups=decoder_dim)
            if upsampling == "bilinear" and not dense_refine
            else None
        )
        self.dense = nn.ModuleList(_DenseBlock(decoder_dim) for _ in range(dense_refine))
        self.fine = nn.Conv2d(2 * fine_channels, decoder_dim, 1) if fine_channels else None

    @torch.no_grad()
    def balance_init(self) -> None:
        """Start each band's stem weights about as much from its embedding as from the bias.

        By default the band mix's weights (PyTorch's, std 1 / √(3 band_dim)) applied to
        band embeddings balanced by :meth:`BandEncoder.balance_init` (norm about 1/4)
        give each band's part a quarter of the shared bias; here they start at std
        2 / √band_dim, about as large.
        """
        nn.init.normal_(self.band_mix.weight, std=2.0 / self.band_mix.in_features**0.5)

    def stem(
        self,
        image: Tensor,
        band_embedding: Tensor,
        band_mask: Tensor,
        response: Tensor | None = None,
    ) -> Tensor:
        """Metadata-weighted band mix of every frame, averaged over that frame's bands.

        Args:
            image: (B, T, C, H, W), 0 wherever a value is not real.
            band_embedding: (B, C, band_dim).
            band_mask: (B, T, C) bool, band c observed at frame t.
            response: (B, C, response_dim) band responses, when built with ``response_dim``.

        Returns:
            (B, T, c0, H, W).

        Raises:
            ValueError: built with ``response_dim`` and given no responses.
        """
        b, t, c, h, w = image.shape
        weights = band_weights(band_mask).to(band_embedding.dtype)  # (B, T, C)
        mix = self.band_mix(band_embedding)  # (B, C, c0)
        if self.basis_mix is not None:
            if response is None:
                raise ValueError("This stem adds basis weights: pass the band responses.")
            mix = mix + self.basis_mix(response.to(mix.dtype))
        mix = mix.transpose(1, 2)  # (B, c0, C)
        mix = (mix[:, None] * weights[:, :, None, :]).to(image.dtype)  # (B, T, c0, C)
        # A matmul over the image as it lies in memory (an einsum here copied it).
        return torch.matmul(mix, image.view(b, t, c, h * w)).view(b, t, -1, h, w)

    def forward(
        self,
        slots: Tensor,
        image: Tensor,
        band_embedding: Tensor,
        band_mask: Tensor,
        anchors: tuple[Tensor, Tensor],
        image_size: tuple[int, int],
        label_size: tuple[int, int],
        valid: Tensor | None = None,
        token_valid: Tensor | None = None,
        mixed: Tensor | None = None,
        fine: Tensor | None = None,
    ) -> Tensor:
        """Decode.

        Args:
            slots: (B, To, h, w, D) slot tokens.
            image: (B, T, C, h*p, w*p) padded input, 0 wherever a value is not real.
            band_embedding: (B, C, band_dim).
            band_mask: (B, T, C) bool, band c observed at frame t.
            anchors: (B, To, T) weights ``a`` and ``b`` of each slot's anchor frames.
            image_size: (H, W) of the real input, before padding to the patch size.
            label_size: (H', W') of the label grid.
            valid: (B, h*p, w*p) bool, pixels with data (default: all).
            token_valid: (B, h, w) bool, tokens with a valid pixel (default: all).
            mixed: (B, T, c0, h*p, w*p), :meth:`stem` of the input when the caller has
                it already (default: computed here).
            fine: (B, T, cf, h*p/2, w*p/2) stride-2 features of each frame, 0 at
                invalid cells; required when ``fine_channels`` > 0.

        Returns:
            (B, To, De, H', W').
        """
        b, to, h, w, _ = slots.shape
        p, de = self.patch_size, self.decoder_dim
        tokens = self.unpatch(self.norm(slots))
        if self.upsampling == "unpatch":
            up = tokens.view(b, to, h, w, p, p, de).permute(0, 1, 6, 2, 4, 3, 5)
            up = up.reshape(b * to, de, h * p, w * p)
        else:
            if token_valid is None:
                token_valid = slots.new_ones(b, h, w, dtype=torch.bool)
            grid = tokens.view(b * to, h, w, 2 * de).permute(0, 3, 1, 2)  # (B*To, 2De, h, w)
            up, up_scale = masked_upsample(grid, token_valid, p).chunk(2, 1)
        if mixed is None:
            mixed = self.stem(image, band_embedding, band_mask)  # (B, T, c0, Hp, Wp)
        skip = _anchored(mixed, anchors)  # (B*To, 2c0, Hp, Wp)
        if self.fine is not None:
            if fine is None:
                raise ValueError("This decoder adds stride-2 features: pass 'fine'.")
            if valid is None:
                valid = image.new_ones(b, *image.shape[-2:], dtype=torch.bool)
            fine_valid = F.max_pool2d(valid[:, None].to(up.dtype), 2, 2)[:, 0] > 0
            # Mask-normalised: a cell without data has no weight, as padding tokens.
            up = up + masked_upsample(self.fine(_anchored(fine, anchors)), fine_valid, 2)
        if self.upsampling == "unpatch":
            x = up + self.skip(self.depthwise(skip))
        else:
            # The tokens modulate the pixels (FiLM), so what a pixel's values mean can
            # depend on the task and the context its tokens carry.
            x = up + self.skip(F.gelu(self.depthwise(skip))) * (1 + up_scale)
            # A 3×3 reads zeros at invalid pixels, as beyond the border of an unpadded image.
            keep = (
                valid.to(x.dtype).repeat_interleave(to, 0)[:, None]
                if valid is not None
                else x.new_ones(1)
            )
            if self.refine is not None and self.out is not None:
                x = x + self.out(F.gelu(self.refine(x * keep)))
            for block in self.dense:
                x = block(x, keep)
        if self.upsampling == "unpatch" and self.out is not None:
            x = x + self.out(F.gelu(x))
        x = x[..., : image_size[0], : image_size[1]]
        x = resize_features(x, label_size)
        return x.view(b, to, de, *label_size)
