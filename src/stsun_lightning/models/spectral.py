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
from stsun_lightning.models.layers import Attention, Mlp, allow_some_key

__all__ = [
    "BandEncoder",
    "BandSetContext",
    "IndexBandEncoder",
    "SpectralTokenizer",
    "TokenizerMode",
    "WavelengthEncoding",
    "band_weights",
    "response_features",
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


WavelengthEncoding = Literal["response", "fourier"]

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
"""Standard deviation of a Gaussian over its full width at half maximum."""


def response_features(
    log_wavelength: Tensor, log_sigma: Tensor, centres: Tensor, width: float
) -> Tensor:
    """A Gaussian band response integrated against Gaussian basis functions.

    The response is a Gaussian in log10 wavelength (centre ``log_wavelength``, standard
    deviation ``log_sigma``); basis function k is ``exp(-(x - centres[k])² / (2 width²))``.
    Their integral is analytic: ``width / S * exp(-(m - c_k)² / (2 S²))`` with
    ``S² = width² + sigma²``. Each feature is a smooth function of the band's centre and
    width, with a slope bounded by about ``1 / width`` per decade, whatever is learnt
    after it: a band moved by a fraction of ``width`` moves its features by as little.

    Args:
        log_wavelength: (...) log10 of the centre wavelength in nm.
        log_sigma: (...) response width in decades (0 = a line).
        centres: (K,) basis centres in log10 nm.
        width: basis width in decades.

    Returns:
        (..., K) features in [0, 1].
    """
    spread = width**2 + log_sigma.square()[..., None]  # (..., 1)
    distance = (log_wavelength[..., None] - centres).square()
    return (width / spread.sqrt()) * torch.exp(-distance / (2 * spread))


class BandEncoder(nn.Module):
    """Band metadata -> an embedding per band, smooth in wavelength.

    ``encoding="response"`` (the default): the band's spectral response, a Gaussian from
    its centre and FWHM in log10 wavelength, integrated against ``num_basis`` Gaussian
    basis functions spaced evenly over 282 nm - 17.8 µm (reflective and thermal
    infrared), as wide as their spacing (:func:`response_features`). Landsat-8 and
    Sentinel-2 blue are then a fifth as far apart as blue and green, and the 15 nm
    wide red-edge bands B05 and B06 almost three times as far as the two blues.
    ``encoding="fourier"`` is the earlier encoding, kept as the baseline of the
    transfer ablation: Fourier features of log10 wavelength up to 64 cycles per decade,
    which give two nearly identical bands nearly unrelated features.

    Both add log10 wavelength and bandwidth as scalars (radar wavelengths lie beyond
    the basis), a flag for each when it is unknown, and a modality embedding, through a
    small MLP.

    Args:
        dim: embedding width.
        num_frequencies: Fourier frequencies per quantity (``"fourier"`` only).
        encoding: ``"response"`` or ``"fourier"``.
        num_basis: basis functions of the response encoding.
    """

    BASIS_RANGE = (2.45, 4.25)
    """log10 nm spanned by the basis centres of the response encoding."""

    def __init__(
        self,
        dim: int,
        num_frequencies: int = 16,
        encoding: WavelengthEncoding = "response",
        num_basis: int = 64,
    ) -> None:
        super().__init__()
        if encoding not in ("response", "fourier"):
            raise ValueError(
                f"Unknown band encoding {encoding!r}; expected 'response' or 'fourier'."
            )
        self.encoding = encoding
        if encoding == "response":
            lo, hi = self.BASIS_RANGE
            self.register_buffer(
                "basis_centres", torch.linspace(lo, hi, num_basis), persistent=False
            )
            self.basis_width = (hi - lo) / (num_basis - 1)
            in_features = num_basis + 4
        else:
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

    @torch.no_grad()
    def balance_init(self) -> None:
        """Start each band's embedding from its own features, not from what all bands share.

        By default a modality row drawn from N(0, 1) (norm about √dim) and the MLP's
        biases, the same for every band of a modality, dominate the embeddings: red,
        green, blue and near infrared start 0.999 alike (cosine). Here the modality rows
        start at N(0, 0.02) and the MLP's biases at zero, so the embeddings start as
        distinct as the MLP makes the bands' features (``benchmarks/band_probe.py``).
        """
        nn.init.normal_(self.modality.weight, std=0.02)
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.zeros_(layer.bias)

    def features(self, wavelength_nm: Tensor, bandwidth_nm: Tensor) -> Tensor:
        """The parameter-free features the MLP reads: (B, C), (B, C) -> (B, C, F)."""
        logs, knowns = [], []
        for value in (wavelength_nm, bandwidth_nm):
            value = value.float()
            known = torch.isfinite(value) & (value > 0)
            logs.append(torch.where(known, value, torch.ones_like(value)).log10())
            knowns.append(known)
        (log_wl, log_bw), (known_wl, known_bw) = logs, knowns
        scalars = [
            (log_wl * known_wl)[..., None] / 4,
            known_wl[..., None].float(),
            (log_bw * known_bw)[..., None] / 4,
            known_bw[..., None].float(),
        ]
        if self.encoding == "fourier":
            spectral = [
                _fourier(log_wl, self.wavelength_freqs) * known_wl[..., None],
                _fourier(log_bw, self.bandwidth_freqs) * known_bw[..., None],
            ]
            return torch.cat([spectral[0], *scalars[:2], spectral[1], *scalars[2:]], -1)
        # FWHM in nm -> sigma in decades at the band centre; unknown FWHM = a line.
        bandwidth = torch.where(known_bw & known_wl, bandwidth_nm.float(), 0.0)
        log_sigma = (
            FWHM_TO_SIGMA * bandwidth / (wavelength_nm.float().clamp(min=1e-6) * math.log(10))
        )
        basis = response_features(log_wl, log_sigma, self.basis_centres, self.basis_width)
        # where, not a product: an unknown (NaN) wavelength must not make NaN features.
        return torch.cat([torch.where(known_wl[..., None], basis, 0.0), *scalars], -1)

    @property
    def response_dim(self) -> int:
        """Width of :meth:`response` (the basis functions); 0 for the Fourier encoding."""
        return 0 if self.encoding == "fourier" else int(self.basis_centres.numel())

    def response(self, wavelength_nm: Tensor, bandwidth_nm: Tensor) -> Tensor:
        """The band's spectral response integrated against each basis function.

        (B, C), (B, C) -> (B, C, :attr:`response_dim`): smooth in wavelength, and 0 for
        a band whose wavelength is unknown or lies beyond the basis (radar).

        Raises:
            ValueError: with the Fourier encoding, which has no basis.
        """
        if self.encoding != "response":
            raise ValueError("Band responses need wavelength_encoding='response'.")
        return self.features(wavelength_nm, bandwidth_nm)[..., : self.response_dim]

    def forward(self, wavelength_nm: Tensor, bandwidth_nm: Tensor, modality: Tensor) -> Tensor:
        """Embed bands.

        Args:
            wavelength_nm: (B, C) centre wavelength; <= 0 or NaN = meaningless.
            bandwidth_nm: (B, C) FWHM; <= 0 or NaN = unknown.
            modality: (B, C) long modality ids.

        Returns:
            (B, C, dim).
        """
        features = self.features(wavelength_nm, bandwidth_nm)
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


class BandSetContext(nn.Module):
    """Band embeddings conditioned on the whole band set of each frame.

    Pre-norm transformer blocks (self-attention over the bands, then an MLP) over the
    band embeddings, the attention masked to the bands observed at each frame, so each
    band's embedding, and the kernel generated from it, knows which other bands it is
    seen with (the idea of DOFA's weight generator). Without positions it is equivariant
    to the order of the bands; a band masked at a frame is no key at that frame, so it
    changes no other band's embedding there.

    Args:
        band_dim: width of the band embeddings.
        num_heads: attention heads.
        depth: blocks.
    """

    def __init__(self, band_dim: int, num_heads: int = 4, depth: int = 1) -> None:
        super().__init__()
        heads = math.gcd(band_dim, num_heads)
        self.norms = nn.ModuleList(nn.LayerNorm(band_dim) for _ in range(2 * depth))
        self.attention = nn.ModuleList(Attention(band_dim, heads) for _ in range(depth))
        self.mlp = nn.ModuleList(Mlp(band_dim, 2.0) for _ in range(depth))

    @torch.no_grad()
    def balance_init(self) -> None:
        """Start as the identity: every block's attention and MLP output zero.

        A fresh block adds outputs of unit scale (they read layer-normed embeddings)
        to embeddings of norm about 1/4 (balanced by :meth:`BandEncoder.balance_init`),
        and what it adds is much the same for every band; starting at zero keeps the
        bands as distinct as their embeddings until training makes use of the set.
        """
        for attention, mlp in zip(self.attention, self.mlp, strict=True):
            for layer in (attention.proj, mlp.fc2):
                nn.init.zeros_(layer.weight)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)

    def forward(self, band_embedding: Tensor, band_mask: Tensor) -> Tensor:
        """Condition.

        Args:
            band_embedding: (B, C, band_dim).
            band_mask: (B, T, C) bool, band c observed at frame t.

        Returns:
            (B, T, C, band_dim); rows of bands masked at a frame are meaningless there.
        """
        t = band_mask.shape[1]
        # Most series observe the same bands at every frame: one pass serves them all.
        same = t == 1 or bool((band_mask == band_mask[:, :1]).all())
        mask = band_mask[:, :1] if same else band_mask
        x = band_embedding[:, None].expand(-1, mask.shape[1], -1, -1)
        key_mask = allow_some_key(mask)[:, :, None, None, :]  # (B, T, 1, 1, C)
        for i, (attention, mlp) in enumerate(zip(self.attention, self.mlp, strict=True)):
            x = x + attention(self.norms[2 * i](x), mask=key_mask)
            x = x + mlp(self.norms[2 * i + 1](x))
        return x.expand(-1, t, -1, -1) if same else x


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

    With ``band_context`` the band embeddings first pass through a
    :class:`BandSetContext`, so each band's kernel (or key) is generated from its own
    metadata and the whole band set observed at that frame, rather than from its own
    metadata alone (where a token is a fixed average over whatever bands are present).

    In both modes a band masked at a frame contributes nothing to that frame's tokens,
    exactly as if it were absent there.

    Args:
        dim: token width D.
        patch_size: patch side p in pixels.
        band_dim: width of the band embeddings.
        mode: ``"hypernetwork"`` or ``"attention"``.
        attention_dim: band-token width Da in attention mode.
        num_heads: heads of the fusion attention (and of the band-set context).
        band_context: condition each band's embedding on the frame's whole band set.
        response_dim: width of the band responses (:meth:`BandEncoder.response`) whose
            learnt map is added to each band's kernel (``basis_kernels`` of the network);
            0 = none. Hypernetwork mode only.

    Raises:
        ValueError: unknown ``mode``; ``response_dim`` with the attention mode.
    """

    def __init__(
        self,
        dim: int,
        patch_size: int,
        band_dim: int,
        mode: TokenizerMode = "hypernetwork",
        attention_dim: int = 64,
        num_heads: int = 4,
        band_context: bool = False,
        response_dim: int = 0,
    ) -> None:
        super().__init__()
        if mode not in ("hypernetwork", "attention"):
            raise ValueError(
                f"Unknown tokenizer mode {mode!r}; expected 'hypernetwork' or 'attention'."
            )
        if response_dim and mode != "hypernetwork":
            raise ValueError("basis_kernels needs tokenizer='hypernetwork'.")
        # A kernel per basis function, weighted by each band's response; starts at zero.
        self.basis_kernel = (
            nn.Linear(response_dim, dim * patch_size * patch_size, bias=False)
            if response_dim
            else None
        )
        if self.basis_kernel is not None:
            nn.init.zeros_(self.basis_kernel.weight)
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
        self.context = BandSetContext(band_dim, num_heads) if band_context else None
        self.norm = nn.LayerNorm(dim)

    BALANCED_KERNEL_GAIN = 4.0
    """Weight std × p of the kernel generator in :meth:`balance_init`: band embeddings
    balanced by :meth:`BandEncoder.balance_init` have norm about 1/4 (0.19-0.29 for
    the aerial bands in ``stsun_tiny``; it grows as √band_dim), so the part of a
    kernel that depends on its band starts about as large as the shared part (std 1/p)."""

    @torch.no_grad()
    def balance_init(self) -> None:
        """Start each band's kernel as much from its embedding as from the shared bias.

        By default the generator's weights (std 0.02) are small beside its bias (std
        1/p): the patch kernels of red, green, blue and near infrared start within 1 %
        of their mean, so a token starts as the mean of its bands. Here the weights
        start at std ``BALANCED_KERNEL_GAIN / p``, and the band-set context (if any) as
        the identity (:meth:`BandSetContext.balance_init`). The attention mode's keys are
        left as they are.
        """
        if self.context is not None:
            self.context.balance_init()
        if self.mode == "hypernetwork":
            nn.init.normal_(self.kernel.weight, std=self.BALANCED_KERNEL_GAIN / self.patch_size)

    def forward(
        self,
        image: Tensor,
        band_embedding: Tensor,
        band_mask: Tensor,
        task_embedding: Tensor,
        response: Tensor | None = None,
    ) -> Tensor:
        """Tokenise.

        Args:
            image: (B, T, C, H, W), H and W multiples of the patch size; 0 wherever a
                value is not real (invalid pixel, or band masked at that frame).
            band_embedding: (B, C, band_dim).
            band_mask: (B, T, C) bool, band c observed at frame t.
            task_embedding: (B, dim).
            response: (B, C, response_dim) band responses, when built with
                ``response_dim``.

        Returns:
            (B, T, h, w, dim) with h = H / p, w = W / p.
        """
        if self.context is not None:
            band_embedding = self.context(band_embedding, band_mask)  # (B, T, C, band_dim)
        if self.mode == "hypernetwork":
            tokens = self._hypernetwork(image, band_embedding, band_mask, response)
        else:
            tokens = self._attention(image, band_embedding, band_mask, task_embedding)
        return self.norm(tokens)

    def _hypernetwork(
        self, image: Tensor, band_embedding: Tensor, band_mask: Tensor, response: Tensor | None
    ) -> Tensor:
        """band_embedding: (B, C, band_dim), or (B, T, C, band_dim) conditioned per frame."""
        b, t, c, height, width = image.shape
        p = self.patch_size
        weights = band_weights(band_mask).to(band_embedding.dtype)  # (B, T, C)
        kernel = self.kernel(band_embedding)  # (B, [T,] C, D*p*p)
        if self.basis_kernel is not None:
            if response is None:
                raise ValueError("This tokenizer adds basis kernels: pass the band responses.")
            basis = self.basis_kernel(response.to(kernel.dtype))  # (B, C, D*p*p)
            kernel = kernel + (basis if kernel.dim() == 3 else basis[:, None])
        # The mean over the bands of frame t is (1 / n_t) × the sum over all bands,
        # because a band masked at t is 0 there: the convolution stays one for every
        # frame, and the per-frame band count scales its output.
        inverse_count = weights.amax(-1).to(image.dtype)  # (B, T): 1 / n_t, 0 if none
        if band_embedding.dim() == 3:
            bias = torch.einsum("btc,bcd->btd", weights, self.bias(band_embedding))
            kernel = kernel.view(b, c, self.dim, p, p).transpose(1, 2).reshape(-1, c, p, p)
            # One grouped convolution, a group per item. At T = 1 its input is a view of
            # the image, so autograd keeps the same storage the decoder's stem keeps.
            frames = image.transpose(0, 1).reshape(t, b * c, height, width)
            groups = b
        else:  # a kernel per item and frame: a group per frame
            bias = torch.einsum("btc,btcd->btd", weights, self.bias(band_embedding))
            kernel = kernel.view(b * t, c, self.dim, p, p).transpose(1, 2).reshape(-1, c, p, p)
            frames = image.reshape(1, b * t * c, height, width)
            groups = b * t
        tokens = F.conv2d(frames, kernel.to(image.dtype), stride=p, groups=groups)
        if groups == b:
            tokens = tokens.view(t, b, self.dim, height // p, width // p).permute(1, 0, 3, 4, 2)
        else:
            tokens = tokens.view(b, t, self.dim, height // p, width // p).permute(0, 1, 3, 4, 2)
        return torch.addcmul(
            bias.to(image.dtype)[:, :, None, None, :], tokens, inverse_count[:, :, None, None, None]
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
        keys = self.band_key(band_embedding)  # (B, [T,] C, Da)
        keys = keys[:, None, None] if keys.dim() == 3 else keys[:, :, None]
        band_tokens = band_tokens + keys
        query = (self.query + self.task_query(task_embedding))[
            :, None, None, None, :
        ]  # (B, 1, 1, 1, Da)
        query = query.expand(b, t, h * w, 1, -1)
        # Per frame; a frame with no real band (which counts as not real) attends to all
        # rather than returning NaN.
        mask = allow_some_key(band_mask)[:, :, None, None, None, :]  # (B, T, 1, 1, 1(Lq), C)
        fused = self.fuse(query, band_tokens, mask=mask)  # (B, T, hw, 1, Da)
        return self.out(fused.squeeze(-2)).view(b, t, h, w, self.dim)
