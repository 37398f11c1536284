"""Pixel decoder: slot tokens back to full-resolution features, on the label grid.

Most of the work stays at token resolution: each token is projected to the features of
its own p×p pixels (a linear pixel shuffle, so no token ever leaks into a neighbour's
pixels, which keeps padding exact). A light full-resolution stem over the input adds
the detail: a band mix weighted by band metadata (1×1), then a depthwise 3×3 — the same
result as a per-band stem, without materialising (B, T, C, c0, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stsun_lightning.models.spectral import band_weights

__all__ = ["PixelDecoder", "resize_features"]


def resize_features(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize (N, D, H, W) features to ``size`` (bilinear; anti-aliased when shrinking)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


class PixelDecoder(nn.Module):
    """Slot tokens and the input -> per-pixel features of each output slot.

    Args:
        dim: token width D.
        patch_size: patch side p.
        band_dim: width of band embeddings.
        decoder_dim: per-pixel feature width De.
        stem_dim: channels c0 of the full-resolution band mix.
    """

    def __init__(
        self, dim: int, patch_size: int, band_dim: int, decoder_dim: int, stem_dim: int
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.decoder_dim = decoder_dim
        self.norm = nn.LayerNorm(dim)
        self.unpatch = nn.Linear(dim, patch_size * patch_size * decoder_dim)
        self.band_mix = nn.Linear(band_dim, stem_dim)
        self.depthwise = nn.Conv2d(2 * stem_dim, 2 * stem_dim, 3, padding=1, groups=2 * stem_dim)
        self.skip = nn.Conv2d(2 * stem_dim, decoder_dim, 1)
        self.out = nn.Conv2d(decoder_dim, decoder_dim, 1)

    def stem(self, image: Tensor, band_embedding: Tensor, band_mask: Tensor) -> Tensor:
        """Metadata-weighted band mix of every frame, averaged over that frame's bands.

        Args:
            image: (B, T, C, H, W), 0 wherever a value is not real.
            band_embedding: (B, C, band_dim).
            band_mask: (B, T, C) bool, band c observed at frame t.

        Returns:
            (B, T, c0, H, W).
        """
        b, t, c, h, w = image.shape
        weights = band_weights(band_mask).to(band_embedding.dtype)  # (B, T, C)
        mix = self.band_mix(band_embedding).transpose(1, 2)  # (B, c0, C)
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

        Returns:
            (B, To, De, H', W').
        """
        b, to, h, w, _ = slots.shape
        p, de = self.patch_size, self.decoder_dim
        up = self.unpatch(self.norm(slots)).view(b, to, h, w, p, p, de)
        up = up.permute(0, 1, 6, 2, 4, 3, 5).reshape(b * to, de, h * p, w * p)
        mixed = self.stem(image, band_embedding, band_mask)  # (B, T, c0, Hp, Wp)
        weights_a, weights_b = (a.to(mixed.dtype) for a in anchors)
        start_a = torch.einsum("bot,btkhw->bokhw", weights_a, mixed)
        start_b = torch.einsum("bot,btkhw->bokhw", weights_b, mixed)
        skip = torch.cat([start_a, start_b - start_a], 2).flatten(0, 1)  # (B*To, 2c0, Hp, Wp)
        x = up + self.skip(self.depthwise(skip))
        x = x + self.out(F.gelu(x))
        x = x[..., : image_size[0], : image_size[1]]
        x = resize_features(x, label_size)
        return x.view(b, to, de, *label_size)
