"""Small reusable blocks: multi-head attention on arbitrary leading dims, MLP, FiLM."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Attention", "Mlp", "TaskModulation", "allow_some_key", "modulate"]


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """Adaptive layer-norm modulation: ``x * (1 + scale) + shift`` (FiLM)."""
    return x * (1 + scale) + shift


def allow_some_key(key_mask: Tensor) -> Tensor:
    """Let a query whose every key is masked attend to all (its output is discarded).

    Fully masked rows make softmax return NaN, whose gradients poison the whole step.

    Args:
        key_mask: (..., S) bool, True = key may be attended.

    Returns:
        (..., S) bool with no all-False row.
    """
    return key_mask | ~key_mask.any(-1, keepdim=True)


class Mlp(nn.Module):
    """Two-layer perceptron with GELU: (..., dim) -> (..., dim)."""

    def __init__(self, dim: int, ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """(..., dim) -> (..., dim)."""
        return self.fc2(F.gelu(self.fc1(x)))


class TaskModulation(nn.Module):
    """Per-block shift, scale and gate for each sub-layer, from the task embedding.

    Args:
        dim: token width.
        num_sublayers: sub-layers of the block to modulate (3 chunks each).
    """

    def __init__(self, dim: int, num_sublayers: int) -> None:
        super().__init__()
        self.num_chunks = 3 * num_sublayers
        self.linear = nn.Linear(dim, self.num_chunks * dim)
        # Small, not zero: a zero init would make every task give the same output at start.
        nn.init.normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)

    def forward(self, task_embedding: Tensor, token_dims: int) -> list[Tensor]:
        """Chunks for modulation.

        Args:
            task_embedding: (B, dim).
            token_dims: how many dims the tokens have between B and dim.

        Returns:
            ``3 * num_sublayers`` tensors of shape (B, 1, ..., 1, dim), broadcastable to
            tokens (B, ..., dim), in the order shift, scale, gate per sub-layer.
        """
        out = self.linear(F.silu(task_embedding))
        shape = (out.shape[0],) + (1,) * token_dims + (-1,)
        return [c.reshape(shape) for c in out.chunk(self.num_chunks, -1)]


class Attention(nn.Module):
    """Multi-head attention over the second-to-last dim, any leading dims.

    Args:
        dim: token width.
        num_heads: attention heads.
        cross: whether keys and values come from a separate context.
        null_key: add a learned key with a zero value. A query with no other key to
            attend then returns exactly zero, so the layer is an exact identity in a
            residual branch when there is nothing to attend to (one real date).
    """

    def __init__(
        self, dim: int, num_heads: int, cross: bool = False, null_key: bool = False
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Attention width {dim} is not divisible by {num_heads} heads.")
        self.num_heads = num_heads
        self.cross = cross
        if cross:
            self.q = nn.Linear(dim, dim)
            self.kv = nn.Linear(dim, 2 * dim)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim, bias=not null_key)
        self.null_key = (
            nn.Parameter(torch.randn(num_heads, 1, dim // num_heads) * 0.02) if null_key else None
        )

    def _heads(self, x: Tensor) -> Tensor:
        """(..., L, dim) -> (..., heads, L, head_dim)."""
        *lead, length, dim = x.shape
        return x.reshape(*lead, length, self.num_heads, dim // self.num_heads).transpose(-3, -2)

    def forward(
        self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None
    ) -> Tensor:
        """Attend.

        Args:
            x: (..., Lq, dim) queries (and keys/values for self-attention).
            context: (..., Lk, dim) keys and values for cross-attention.
            mask: bool, broadcastable to (..., 1, Lq, Lk) (True = may attend), or None.
                With ``null_key`` the null key is always allowed and needs no column.

        Returns:
            (..., Lq, dim).
        """
        if self.cross:
            if context is None:
                raise ValueError("Cross-attention needs a context.")
            q = self._heads(self.q(x))
            k, v = (self._heads(t) for t in self.kv(context).chunk(2, -1))
        else:
            q, k, v = (self._heads(t) for t in self.qkv(x).chunk(3, -1))
        if self.null_key is not None:
            null_k = self.null_key.to(k.dtype).expand(*k.shape[:-2], 1, k.shape[-1])
            k = torch.cat([k, null_k], -2)
            v = torch.cat([v, torch.zeros_like(null_k)], -2)
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones(*mask.shape[:-1], 1)], -1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.transpose(-3, -2).flatten(-2)
        return self.proj(out)
