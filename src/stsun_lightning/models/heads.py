"""Heads: classes by cosine similarity to category embeddings; values by query embeddings.

A category's logit depends only on the pixel feature and that category's own row, so
it does not depend on which other categories were asked for, and any subset or merge
of the vocabulary needs no new parameters.

Both heads run in float32 under mixed precision: a cosine in bfloat16 has about three
significant digits, and the learnt scale (10 and more) multiplies that error into the
logits; regression values need more than bfloat16's 8-bit mantissa too. The features
they read are narrow (``decoder_dim`` channels), so the float32 copy is cheap.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MASKED_LOGIT", "CategoryHead", "ValueHead"]

MASKED_LOGIT = -1.0e4
"""Logit of a category that was not requested: never wins, finite in half precision."""


class CategoryHead(nn.Module):
    """logits = scale × cosine(pixel feature, projected category embedding) + category bias.

    Category rows are projected into the pixel-feature space (not pixel features into
    the category space), so at full resolution only a dot product and one norm per pixel
    are computed.

    Args:
        feature_dim: per-pixel feature width De.
        embed_dim: category embedding width.
        init_scale: initial cosine scale (learned, in log space).
    """

    def __init__(self, feature_dim: int, embed_dim: int, init_scale: float = 10.0) -> None:
        super().__init__()
        self.proj = nn.Linear(embed_dim, feature_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    def forward(self, features: Tensor, category_rows: Tensor, category_mask: Tensor) -> Tensor:
        """Score categories.

        Args:
            features: (B, To, De, H, W).
            category_rows: (B, K, embed_dim + 1) rows of the category table; the last
                column is the category's bias.
            category_mask: (B, K) or (B, To, K) bool, True for requested rows.

        Returns:
            (B, To, K, H, W) logits; unrequested rows hold :data:`MASKED_LOGIT`.
        """
        with torch.autocast(features.device.type, enabled=False):
            features = _float32(features)
            category_rows = _float32(category_rows)
            embed, bias = category_rows[..., :-1], category_rows[..., -1]
            e = F.normalize(self.proj(embed), dim=-1)  # (B, K, De)
            dots = torch.einsum("bodhw,bkd->bokhw", features, e)
            norm = torch.linalg.vector_norm(features, dim=2, keepdim=True).clamp(min=1e-6)
            logits = dots * (self.log_scale.exp() / norm) + bias[:, None, :, None, None]
        mask = category_mask if category_mask.dim() == 3 else category_mask[:, None, :]
        return logits.masked_fill(~mask[..., None, None], MASKED_LOGIT)


class ValueHead(nn.Module):
    """value_v = <pixel feature, W q_v> + b(q_v) for each query embedding q_v.

    The queries are rows of the variable table (named variables such as canopy height)
    or band embeddings of requested output bands, so any band can be asked for.

    Args:
        feature_dim: per-pixel feature width De.
        query_dim: width of the query embeddings.
    """

    def __init__(self, feature_dim: int, query_dim: int) -> None:
        super().__init__()
        self.weight = nn.Linear(query_dim, feature_dim)
        self.bias = nn.Linear(query_dim, 1)

    def forward(self, features: Tensor, queries: Tensor) -> Tensor:
        """Predict values.

        Args:
            features: (B, To, De, H, W).
            queries: (B, V, query_dim).

        Returns:
            (B, To, V, H, W).
        """
        with torch.autocast(features.device.type, enabled=False):
            features, queries = _float32(features), _float32(queries)
            weight = self.weight(queries)  # (B, V, De)
            bias = self.bias(queries)[..., 0]  # (B, V)
            return torch.einsum("bodhw,bvd->bovhw", features, weight) + bias[:, None, :, None, None]


def _float32(x: Tensor) -> Tensor:
    """``x`` in float32 when it is in a narrower float type (mixed precision), else as is."""
    return x.float() if x.is_floating_point() and x.element_size() < 4 else x
