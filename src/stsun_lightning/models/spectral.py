"""From bands described by metadata to tokens: band encoder and spectral tokenisers.

Physical units (wavelength, bandwidth, modality) rather than band indices are what let
an unseen sensor work: a Landsat red band and a Sentinel-2 red band get nearly the same
embedding, whatever their position in the file.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stsun_lightning.batch import Modality
from stsun_lightning.models.layers import Attention, allow_some_key

__all__ = [
    "BandEncoder",
    "IndexBandEncoder",
    "SpectralTokenizer",
    "TokenizerMode",
    "band_weights",
]

TokenizerMode = Literal["hypernetwork", "attention"]


def band_weights(band_mask: Tensor) -> Tensor:
    """Weights of a mean over the real bands: (..., C) bool -> (..., C) float summing to 1.

    Per frame with a (B, T, C) mask; a frame without a real band gets all zeros.
    """
    weights = band_mask.float()
    return weights / weights.sum(-1, keepdim=True).clamp(min=1)


def _fourier(x: Tensor, frequencies: Tensor) -> Tensor:
    """(...,) -> (..., 2 * F) sin/cos features of ``x`` at ``frequencies`` (cycles per unit)."""
    angles = 2 * math.pi * x[..., None] * frequencies
    return torch.cat([angles.sin(), angles.cos()], -1)


class BandEncoder(nn.Module):
    """Band metadata -> an embedding per band.

    Fourier features of log10 wavelength (0.25 to 64 cycles per decade, enough to part
    red-edge bands 15 nm apart) and log10 bandwidth, a flag for each when it is unknown,
    and a modality embedding, through a small MLP.

    Args:
        dim: embedding width.
        num_frequencies: Fourier frequencies per quantity.
    """

    def __init__(self, dim: int, num_frequencies: int = 16) -> None:
        super().__init__()
        self.register_buffer(
            "wavelength_freqs",
            torch.logspace(math.log10(0.25), math.log10(64.0), num_frequencies),
            persistent=False,
        )
        self.register_buffer(
            "bandwidth_freqs",
            torch.logspace(math.log10(0.25), math.log10(16.0), num_frequencies),
            persistent=False,
        )
        in_features = 4 * num_frequencies + 4
        self.mlp = nn.Sequential(nn.Linear(in_features, dim), nn.GELU(), nn.Linear(dim, dim))
        self.modality = nn.Embedding(len(Modality), dim)

    def forward(self, wavelength_nm: Tensor, bandwidth_nm: Tensor, modality: Tensor) -> Tensor:
        """Embed bands.

        Args:
            wavelength_nm: (B, C) centre wavelength; <= 0 or NaN = meaningless.
            bandwidth_nm: (B, C) FWHM; <= 0 or NaN = unknown.
            modality: (B, C) long modality ids.

        Returns:
            (B, C, dim).
        """
        feats = []
        for value, freqs in (
            (wavelength_nm, self.wavelength_freqs),
            (bandwidth_nm, self.bandwidth_freqs),
        ):
            value = value.float()
            known = torch.isfinite(value) & (value > 0)
            log_value = torch.where(known, value, torch.ones_like(value)).log10()
            feats += [
                _fourier(log_value, freqs) * known[..., None],
                (log_value * known)[..., None] / 4,
                known[..., None].float(),
            ]
        features = torch.cat(feats, -1)
        return self.mlp(features) + self.modality(modality.clamp(0, len(Modality) - 1))


class IndexBandEncoder(nn.Module):
    """Band position -> a learned embedding: the band-index baseline of :class:`BandEncoder`.

    The band in input position c gets row c of a table, whatever its metadata, as in a
    network trained on one fixed band list. It takes the same arguments as
    :class:`BandEncoder` so that it replaces it in :class:`~stsun_lightning.models.Stsun`
    (``create_model(..., band_encoding="index")``), and ignores them; output bands
    requested by metadata (band prediction) are meaningless with it.

    Args:
        dim: embedding width.
        max_bands: rows of the table, the most bands an input may have.
    """

    def __init__(self, dim: int, max_bands: int = 32) -> None:
        super().__init__()
        self.table = nn.Embedding(max_bands, dim)

    def forward(self, wavelength_nm: Tensor, bandwidth_nm: Tensor, modality: Tensor) -> Tensor:
        """Embed bands by position.

        Args:
            wavelength_nm: (B, C), ignored but for its shape.
            bandwidth_nm: (B, C), ignored.
            modality: (B, C), ignored.

        Returns:
            (B, C, dim): row c of the table at position c.

        Raises:
            ValueError: for more bands than the table has rows.
        """
        b, c = wavelength_nm.shape
        if c > self.table.num_embeddings:
            raise ValueError(
                f"IndexBandEncoder has {self.table.num_embeddings} band positions, got {c} bands."
            )
        return self.table.weight[:c].unsqueeze(0).expand(b, c, -1)


class SpectralTokenizer(nn.Module):
    """Any band set -> one token per patch and date, invariant to the order of bands.

    Two modes, chosen by ``mode``:

    - ``"hypernetwork"``: the patch-embedding kernel of each band is generated from its
      embedding (the DOFA idea) and the kernels are averaged over the bands observed at
      each frame; the cost is that of one ordinary patch embedding, flat in the number
      of bands.
    - ``"attention"``: every band is embedded by a shared ``Conv2d(1, Da, p, p)``, its
      band embedding added, and the bands observed at each frame fused by masked
      cross-attention with a learned query biased by the task embedding; more
      expressive, cost linear in C.

    In both modes a band masked at a frame contributes nothing to that frame's tokens,
    exactly as if it were absent there.

    Args:
        dim: token width D.
        patch_size: patch side p in pixels.
        band_dim: width of the band embeddings.
        mode: ``"hypernetwork"`` or ``"attention"``.
        attention_dim: band-token width Da in attention mode.
        num_heads: heads of the fusion attention.
    """

    def __init__(
        self,
        dim: int,
        patch_size: int,
        band_dim: int,
        mode: TokenizerMode = "hypernetwork",
        attention_dim: int = 64,
        num_heads: int = 4,
    ) -> None:
        super().__init__()
        if mode not in ("hypernetwork", "attention"):
            raise ValueError(
                f"Unknown tokenizer mode {mode!r}; expected 'hypernetwork' or 'attention'."
            )
        self.mode = mode
        self.dim = dim
        self.patch_size = patch_size
        if mode == "hypernetwork":
            self.kernel = nn.Linear(band_dim, dim * patch_size * patch_size)
            self.bias = nn.Linear(band_dim, dim)
            nn.init.normal_(self.kernel.weight, std=0.02)
            nn.init.normal_(self.kernel.bias, std=1.0 / patch_size)
        else:
            self.band_patch = nn.Conv2d(1, attention_dim, patch_size, patch_size)
            self.band_key = nn.Linear(band_dim, attention_dim)
            self.query = nn.Parameter(torch.randn(attention_dim) * 0.02)
            self.task_query = nn.Linear(dim, attention_dim)
            self.fuse = Attention(attention_dim, num_heads, cross=True)
            self.out = nn.Linear(attention_dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, image: Tensor, band_embedding: Tensor, band_mask: Tensor, task_embedding: Tensor
    ) -> Tensor:
        """Tokenise.

        Args:
            image: (B, T, C, H, W), H and W multiples of the patch size; 0 wherever a
                value is not real (invalid pixel, or band masked at that frame).
            band_embedding: (B, C, band_dim).
            band_mask: (B, T, C) bool, band c observed at frame t.
            task_embedding: (B, dim).

        Returns:
            (B, T, h, w, dim) with h = H / p, w = W / p.
        """
        if self.mode == "hypernetwork":
            tokens = self._hypernetwork(image, band_embedding, band_mask)
        else:
            tokens = self._attention(image, band_embedding, band_mask, task_embedding)
        return self.norm(tokens)

    def _hypernetwork(self, image: Tensor, band_embedding: Tensor, band_mask: Tensor) -> Tensor:
        b, t, c, height, width = image.shape
        p = self.patch_size
        weights = band_weights(band_mask).to(band_embedding.dtype)  # (B, T, C)
        kernel = self.kernel(band_embedding)  # (B, C, D*p*p)
        kernel = kernel.view(b, c, self.dim, p, p).transpose(1, 2).reshape(b * self.dim, c, p, p)
        # The mean over the bands of frame t is (1 / n_t) × the sum over all bands,
        # because a band masked at t is 0 there: the convolution stays one for every
        # frame, and the per-frame band count scales its output.
        inverse_count = weights.amax(-1).to(image.dtype)  # (B, T): 1 / n_t, 0 if none
        bias = torch.einsum("btc,bcd->btd", weights, self.bias(band_embedding)).to(image.dtype)
        # One grouped convolution, a group per item. At T = 1 its input is a view of the
        # image, so autograd keeps the same storage the decoder's stem keeps.
        frames = image.transpose(0, 1).reshape(t, b * c, height, width)
        tokens = F.conv2d(frames, kernel.to(image.dtype), stride=p, groups=b)
        tokens = tokens.view(t, b, self.dim, height // p, width // p).permute(1, 0, 3, 4, 2)
        return torch.addcmul(
            bias[:, :, None, None, :], tokens, inverse_count[:, :, None, None, None]
        )  # (B, T, h, w, D)

    def _attention(
        self, image: Tensor, band_embedding: Tensor, band_mask: Tensor, task_embedding: Tensor
    ) -> Tensor:
        b, t, c, height, width = image.shape
        p = self.patch_size
        h, w = height // p, width // p
        band_tokens = self.band_patch(image.reshape(b * t * c, 1, height, width))  # (BTC, Da, h, w)
        band_tokens = band_tokens.view(b, t, c, -1, h * w).permute(
            0, 1, 4, 2, 3
        )  # (B, T, hw, C, Da)
        band_tokens = band_tokens + self.band_key(band_embedding)[:, None, None]
        query = (self.query + self.task_query(task_embedding))[
            :, None, None, None, :
        ]  # (B, 1, 1, 1, Da)
        query = query.expand(b, t, h * w, 1, -1)
        # Per frame; a frame with no real band (which counts as not real) attends to all
        # rather than returning NaN.
        mask = allow_some_key(band_mask)[:, :, None, None, None, :]  # (B, T, 1, 1, 1(Lq), C)
        fused = self.fuse(query, band_tokens, mask=mask)  # (B, T, hw, 1, Da)
        return self.out(fused.squeeze(-2)).view(b, t, h, w, self.dim)
