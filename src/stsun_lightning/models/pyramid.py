"""Early convolutions: a strided 3×3 pyramid over the full-resolution band mix.

The spectral tokeniser turns each p×p patch into a token by one linear map, so every
spatial pattern inside a patch must be learnt by the transformer from a single
projection. A small convolutional pyramid over the decoder's band mix (which is already
weighted by band metadata, so it reads any band set) gives the tokens local features
and gives the decoder features at twice the pixel spacing, as the encoder of a U-Net
gives its decoder. Convolutional stems are known to make vision transformers train
faster and more stably (Xiao et al., "Early Convolutions Help Transformers See Better").

Every level reads zeros at invalid pixels and is set to zero wherever its cells hold no
valid pixel, so padding stays exact as it does in the rest of the network; its strides
are powers of two up to the patch size, so padding by whole patches keeps every
level's alignment.
"""

from __future__ import annotations

import itertools
import math

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvPyramid", "PixelNorm"]


class PixelNorm(nn.Module):
    """LayerNorm over the channels of each pixel (no statistics across pixels or items)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> the same, each pixel's channels normalised."""
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _Stage(nn.Module):
    """A stride-2 3×3 convolution, a pixel norm, a GELU, and a 3×3 convolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        self.norm = PixelNorm(out_channels)
        self.conv = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        x = F.gelu(self.norm(self.down(x))) * keep
        return F.gelu(self.conv(x)) * keep


class ConvPyramid(nn.Module):
    """Band mix (N, c0, H, W) -> token features (N, D, H/p, W/p) and stride-2 features.

    Args:
        in_channels: c0, channels of the band mix.
        dim: token width D.
        patch_size: p, a power of two >= 2 (one stage per factor of two).
        width: channels of the first stage; each further stage doubles them.

    Raises:
        ValueError: if ``patch_size`` is not a power of two >= 2.
    """

    def __init__(self, in_channels: int, dim: int, patch_size: int, width: int) -> None:
        super().__init__()
        stages = int(math.log2(patch_size)) if patch_size >= 2 else 0
        if stages == 0 or 2**stages != patch_size:
            raise ValueError(
                f"conv_stem needs a patch_size that is a power of two >= 2, got {patch_size}."
            )
        channels = [in_channels] + [width * 2**k for k in range(stages)]
        self.stages = nn.ModuleList(_Stage(a, b) for a, b in itertools.pairwise(channels))
        self.fine_channels = channels[1]
        self.to_tokens = nn.Conv2d(channels[-1], dim, 1)
        # Starts at zero: the network begins as it is without the pyramid.
        nn.init.zeros_(self.to_tokens.weight)
        nn.init.zeros_(self.to_tokens.bias)

    def forward(self, mixed: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Run the pyramid.

        Args:
            mixed: (N, c0, H, W) band mix, 0 at invalid pixels; N = B·T frames.
            valid: (N, H, W) bool, pixels with data; H and W multiples of p.

        Returns:
            token features (N, D, H/p, W/p) and stride-2 features (N, width, H/2, W/2),
            both 0 wherever their cells hold no valid pixel.
        """
        x, fine = mixed, mixed
        keep = valid[:, None].to(mixed.dtype)
        for index, stage in enumerate(self.stages):
            keep = F.max_pool2d(keep, 2, 2)
            x = stage(x, keep)
            if index == 0:
                fine = x
        return self.to_tokens(x) * keep, fine
