"""Named presets of the STSUN network, created through one factory."""

from __future__ import annotations

from typing import Any, Literal

from stsun_lightning.errors import unknown_name_error
from stsun_lightning.models.spectral import IndexBandEncoder
from stsun_lightning.models.stsun import Stsun

__all__ = ["PRESETS", "BandEncoding", "create_model", "list_models"]

BandEncoding = Literal["metadata", "index"]

PRESETS: dict[str, dict[str, Any]] = {
    # CPU tests and the demo.
    "stsun_tiny": dict(
        dim=64,
        depth=2,
        num_heads=4,
        patch_size=8,
        band_dim=32,
        decoder_dim=16,
        stem_dim=8,
        category_dim=32,
        window=8,
    ),
    # Width, depth and patch of a ViT-Tiny at patch 8: the benchmarked configuration.
    "stsun_small": dict(
        dim=192,
        depth=6,
        num_heads=3,
        patch_size=8,
        band_dim=64,
        decoder_dim=24,
        stem_dim=8,
        category_dim=64,
        window=16,
    ),
    "stsun_base": dict(
        dim=768,
        depth=12,
        num_heads=12,
        patch_size=16,
        band_dim=128,
        decoder_dim=64,
        stem_dim=32,
        category_dim=128,
        window=16,
    ),
}


def list_models() -> list[str]:
    """Names of the presets."""
    return sorted(PRESETS)


def create_model(name: str, band_encoding: BandEncoding = "metadata", **overrides: Any) -> Stsun:
    """Build a preset, optionally overriding any constructor argument of :class:`Stsun`.

    Args:
        name: one of :func:`list_models`.
        band_encoding: ``"metadata"`` (bands embedded from wavelength, bandwidth and
            modality: :class:`~stsun_lightning.models.spectral.BandEncoder`) or
            ``"index"`` (from their position in the input, the baseline of a fixed band
            list: :class:`~stsun_lightning.models.spectral.IndexBandEncoder`).
        **overrides: e.g. ``categories=["water", "building"]``, ``tokenizer="attention"``.

    Returns:
        The network, freshly initialised.

    Raises:
        UnknownNameError: for an unknown preset, listing the presets.
        ValueError: for an unknown ``band_encoding``.
    """
    if name not in PRESETS:
        raise unknown_name_error("model preset", name, PRESETS)
    if band_encoding not in ("metadata", "index"):
        raise ValueError(f"band_encoding must be 'metadata' or 'index', got {band_encoding!r}.")
    model = Stsun(**{**PRESETS[name], **overrides})
    if band_encoding == "index":
        model.band_encoder = IndexBandEncoder(model.band_encoder.mlp[-1].out_features)
    return model
