"""Baselines for the model benchmark, and the batches STSUN is timed on.

Every ViT baseline has the width, depth, heads, MLP ratio and patch size of the
``stsun_small`` preset, so a speed or memory ratio against it measures what STSUN's
extra machinery (band-metadata tokeniser, task modulation, output slots, metadata
stem) costs, not a difference in size. The baselines take a plain tensor
(B, 13, H, W) and return logits (B, K, H, W):

- :class:`VitSameDecoder`: plain ViT + STSUN's own :class:`PixelDecoder` (reused, not
  copied) + a 1×1 classifier.
- :class:`VitLightDecoder`: plain ViT + 1×1 classifier at token resolution + bilinear
  upsampling (the cheapest dense decoder).
- :func:`unet_resnet18`: ``segmentation_models_pytorch`` U-Net with a ResNet-18 encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from timm.layers import build_sincos2d_pos_embed
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from stsun_lightning.batch import Batch
from stsun_lightning.data.examples import example_batch
from stsun_lightning.models import PRESETS, Stsun, create_model
from stsun_lightning.models.decoder import PixelDecoder

__all__ = [
    "CATEGORIES",
    "IN_CHANNELS",
    "PRESET",
    "VitEncoder",
    "VitLightDecoder",
    "VitSameDecoder",
    "make_batch",
    "make_stsun",
    "num_parameters",
    "unet_resnet18",
]

PRESET: dict[str, Any] = PRESETS["stsun_small"]
"""Hyper-parameters of the benchmarked STSUN; the ViT baselines copy their sizes."""

IN_CHANNELS = 13
"""Bands of the fixed-input baselines (Sentinel-2 L1C)."""

CATEGORIES: tuple[str, ...] = (
    "water",
    "tree_cover",
    "cropland",
    "building",
    "road",
    "bare_soil",
)
"""The K = 6 categories of every benchmark."""


def make_batch(
    b: int, t: int, c: int, h: int, w: int, num_classes: int = len(CATEGORIES), seed: int = 0
) -> Batch:
    """A valid segmentation batch: one output slot (the state at the last date), K classes.

    Band metadata: :func:`stsun_lightning.data.examples.example_band_metadata`.
    """
    return example_batch(
        b, t, c, h, w, categories=range(num_classes), seed=seed, source="benchmark"
    )


def make_stsun(name: str = "stsun_small") -> Stsun:
    """A preset of STSUN that knows the benchmark's categories."""
    return create_model(name, categories=list(CATEGORIES))


class VitEncoder(nn.Module):
    """Plain ViT trunk: fixed patch embedding, 2-D sin-cos positions, pre-LN blocks.

    The blocks are timm's ``Block`` (pre-LN, fused ``scaled_dot_product_attention``,
    qkv bias like STSUN's attention). No class token and no final norm: the decoders
    normalise.

    Args:
        in_channels: input bands.
        dim: token width D.
        depth: blocks.
        num_heads: attention heads.
        patch_size: patch side p.
        mlp_ratio: MLP hidden width over D.
    """

    def __init__(
        self,
        in_channels: int = IN_CHANNELS,
        dim: int = PRESET["dim"],
        depth: int = PRESET["depth"],
        num_heads: int = PRESET["num_heads"],
        patch_size: int = PRESET["patch_size"],
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.patch_size = patch_size
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, patch_size)
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio, qkv_bias=True) for _ in range(depth)
        )
        self._positions: dict[tuple[int, int], Tensor] = {}

    def position(self, h: int, w: int, like: Tensor) -> Tensor:
        """(h * w, D) sin-cos encoding of the token grid, cached per grid size."""
        if (h, w) not in self._positions:
            self._positions[(h, w)] = build_sincos2d_pos_embed([h, w], dim=self.dim)
        return self._positions[(h, w)].to(like)

    def forward(self, image: Tensor) -> Tensor:
        """(B, C, H, W), H and W multiples of p -> tokens (B, h, w, D)."""
        x = self.patch_embed(image)  # (B, D, h, w)
        b, d, h, w = x.shape
        x = x.flatten(2).transpose(1, 2) + self.position(h, w, x)
        for block in self.blocks:
            x = block(x)
        return x.view(b, h, w, d)


class VitSameDecoder(nn.Module):
    """Plain ViT + the same pixel decoder as STSUN + a 1×1 classifier.

    The decoder is an instance of STSUN's own :class:`PixelDecoder`, so its compute
    is the network's to the op: LayerNorm + Linear(D, p·p·De) pixel shuffle, plus a
    full-resolution stem (1×1 band mix to ``stem_dim`` channels, depthwise 3×3 over
    the ``2 * stem_dim`` state/change channels, 1×1 to De), added, then
    ``x + conv1x1(gelu(x))``. In place of band embeddings from metadata it is fed a
    learned table (one row per input band), which makes the band mix an ordinary
    learned 1×1 convolution; with one frame and one state slot, the anchor weights
    are ones, exactly as STSUN's at T = 1.

    Args:
        num_classes: K.
        in_channels: input bands.
    """

    def __init__(self, num_classes: int = len(CATEGORIES), in_channels: int = IN_CHANNELS) -> None:
        super().__init__()
        self.encoder = VitEncoder(in_channels)
        self.band_table = nn.Parameter(torch.randn(in_channels, PRESET["band_dim"]))
        self.decoder = PixelDecoder(
            PRESET["dim"],
            PRESET["patch_size"],
            PRESET["band_dim"],
            PRESET["decoder_dim"],
            PRESET["stem_dim"],
        )
        self.classifier = nn.Conv2d(PRESET["decoder_dim"], num_classes, 1)

    def forward(self, image: Tensor) -> Tensor:
        """(B, C, H, W), H and W multiples of p -> logits (B, K, H, W)."""
        b, c, height, width = image.shape
        tokens = self.encoder(image)[:, None]  # (B, To=1, h, w, D)
        band_embedding = self.band_table.expand(b, -1, -1)
        band_mask = torch.ones(b, 1, c, dtype=torch.bool, device=image.device)  # (B, T=1, C)
        ones = torch.ones(b, 1, 1, dtype=image.dtype, device=image.device)
        features = self.decoder(
            tokens,
            image[:, None],
            band_embedding,
            band_mask,
            (ones, ones),
            (height, width),
            (height, width),
        )  # (B, 1, De, H, W)
        return self.classifier(features[:, 0])


class VitLightDecoder(nn.Module):
    """Plain ViT + LayerNorm + 1×1 classifier at token resolution + bilinear upsampling.

    Args:
        num_classes: K.
        in_channels: input bands.
    """

    def __init__(self, num_classes: int = len(CATEGORIES), in_channels: int = IN_CHANNELS) -> None:
        super().__init__()
        self.encoder = VitEncoder(in_channels)
        self.norm = nn.LayerNorm(PRESET["dim"])
        self.classifier = nn.Conv2d(PRESET["dim"], num_classes, 1)

    def forward(self, image: Tensor) -> Tensor:
        """(B, C, H, W), H and W multiples of p -> logits (B, K, H, W)."""
        tokens = self.norm(self.encoder(image)).permute(0, 3, 1, 2)  # (B, D, h, w)
        logits = self.classifier(tokens)
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)


def unet_resnet18(num_classes: int = len(CATEGORIES), in_channels: int = IN_CHANNELS) -> nn.Module:
    """Smp U-Net with a randomly initialised ResNet-18 encoder."""
    return smp.Unet(
        encoder_name="resnet18", encoder_weights=None, in_channels=in_channels, classes=num_classes
    )


def num_parameters(module: nn.Module, names: Sequence[str] | None = None) -> int:
    """Trainable parameters of ``module`` (of its children ``names`` only, if given)."""
    modules = [module] if names is None else [getattr(module, n) for n in names]
    return sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)
