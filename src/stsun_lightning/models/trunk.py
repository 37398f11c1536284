"""Factorised space-time transformer trunk, conditioned on the task in every block."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from stsun_lightning.models.layers import (
    Attention,
    Mlp,
    TaskModulation,
    exporting,
    fold_modulation,
    folded_linear,
)
from stsun_lightning.models.spatial import windowed_attention

__all__ = ["SpaceTimeBlock", "SpaceTimeTrunk", "TokenLayout"]


class TokenLayout:
    """Everything a block needs to know about the token grid of one batch.

    Built once per forward pass, so masks are not rebuilt in every block.

    Args:
        grid: (h, w) token grid.
        token_valid: (B, h * w) bool, tokens with at least one valid pixel.
        time_mask: (B, T) bool, real frames (or every slot, for the slot trunk).
        window: window side of the spatial attention.
        temporal: whether the blocks attend over T at all (the slot trunk does not).
    """

    def __init__(
        self,
        grid: tuple[int, int],
        token_valid: Tensor,
        time_mask: Tensor,
        window: int,
        temporal: bool = True,
    ) -> None:
        self.grid = grid
        self.window = window
        # One real frame everywhere: temporal attention would be an exact identity (null key).
        # (An exported graph cannot branch on values: it keeps the layers whenever T > 1.)
        several = time_mask.shape[1] > 1 if exporting() else bool((time_mask.sum(1) > 1).any())
        self.temporal = temporal and several
        b, t = time_mask.shape
        if self.temporal:
            # Each date attends to the other real dates (not itself) and the null key.
            others = ~torch.eye(t, dtype=torch.bool, device=time_mask.device)
            self.time_attention_mask = (others[None] & time_mask[:, None, :])[
                :, None, None
            ]  # (B, 1, 1, T, T)
        # Keys of the spatial attention per frame, (B*T, L); None when every token is real,
        # so that attention runs without a mask (its fastest kernel).
        self.key_valid = (
            None
            if not exporting() and bool(token_valid.all())
            else token_valid[:, None].expand(b, t, -1).reshape(b * t, -1)
        )


class SpaceTimeBlock(nn.Module):
    """Attention over dates at each location, then over locations in each date, then MLP.

    Every sub-layer is modulated by the task embedding (adaptive layer norm). Spatial
    attention is windowed at every grid size, so a 256² training patch and a 512² scene
    are treated alike.

    Args:
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width over ``dim``.
        shift: offset (in tokens) of this block's window grid.
        temporal: whether the block attends over dates; blocks over output slots do
            not, so that a slot's output never depends on which other slots were asked for.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        shift: int = 0,
        temporal: bool = True,
    ) -> None:
        super().__init__()
        self.shift = shift
        self.temporal = temporal
        if temporal:
            self.norm_time = nn.LayerNorm(dim, elementwise_affine=False)
            self.time_attention = Attention(dim, num_heads, null_key=True)
        self.norm_space = nn.LayerNorm(dim, elementwise_affine=False)
        self.space_attention = Attention(dim, num_heads)
        self.norm_mlp = nn.LayerNorm(dim, elementwise_affine=False)
        self.mlp = Mlp(dim, mlp_ratio)
        self.modulation = TaskModulation(dim, 3 if temporal else 2)

    def forward(self, x: Tensor, task_embedding: Tensor, layout: TokenLayout) -> Tensor:
        """Apply the block.

        Args:
            x: (B, T, L, D) tokens.
            task_embedding: (B, D), or (1, D) when the whole batch has one task.
            layout: masks and grid of this batch.

        Returns:
            (B, T, L, D).
        """
        b, t, length, d = x.shape
        modulations = self.modulation(task_embedding)
        space_mod, mlp_mod = modulations[-2:]
        if self.temporal and layout.temporal:
            shift, scale, gate = modulations[0]
            qkv = self.time_attention.project(self.norm_time(x), shift, scale).transpose(
                1, 2
            )  # (B, L, T, 3D)
            y = self.time_attention.attend(qkv, mask=layout.time_attention_mask).transpose(1, 2)
            x = x + self.time_attention.output(y, gate)
        shift, scale, gate = space_mod
        qkv = self.space_attention.project(self.norm_space(x), shift, scale).reshape(
            b * t, length, 3 * d
        )
        attention = self.space_attention
        projection = fold_modulation(attention.proj, qkv.dtype, gate=gate)  # folded once

        def attend(windows: Tensor, mask: Tensor | None) -> Tensor:
            # Projected per window: the projection keeps the attention's own output for
            # backward, and only its result is regrouped (one copy fewer kept).
            return folded_linear(attention.attend(windows, mask), *projection)

        y = windowed_attention(
            qkv, layout.grid, layout.window, self.shift, attend, layout.key_valid
        )
        x = x + y.view(b, t, length, d)
        return x + self.mlp(self.norm_mlp(x), mlp_mod)


class SpaceTimeTrunk(nn.Module):
    """A stack of :class:`SpaceTimeBlock`, alternating window shifts.

    Block ``i`` of the whole network (``first_block + i`` here) shifts its windows by half
    a window when ``i`` is odd, so shifts alternate across the two trunks too and
    information crosses window borders in every second block.

    Args:
        dim: token width.
        depth: number of blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width over ``dim``.
        window: window side (tokens) of the spatial attention.
        first_block: index of the first block in the whole network (sets the shift parity).
        temporal: whether the blocks attend over the second dim (dates); False for
            the trunk over output slots, which must not see each other.
        activation_checkpointing: in training, keep only each block's input and recompute
            its activations in the backward pass (see :attr:`activation_checkpointing`).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        window: int = 16,
        first_block: int = 0,
        temporal: bool = True,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if window < 2:
            raise ValueError(f"Attention window must be at least 2 tokens, got {window}.")
        self.activation_checkpointing = activation_checkpointing
        self.window = window
        self.temporal = temporal
        self.blocks = nn.ModuleList(
            SpaceTimeBlock(
                dim,
                num_heads,
                mlp_ratio,
                shift=(window // 2) * ((first_block + i) % 2),
                temporal=temporal,
            )
            for i in range(depth)
        )

    def layout(self, grid: tuple[int, int], token_valid: Tensor, time_mask: Tensor) -> TokenLayout:
        """The masks of one batch, for :meth:`forward`.

        Args:
            grid: (h, w).
            token_valid: (B, h * w) bool.
            time_mask: (B, T) bool real frames (every slot, for the slot trunk).
        """
        return TokenLayout(grid, token_valid, time_mask, self.window, self.temporal)

    def forward(self, x: Tensor, task_embedding: Tensor, layout: TokenLayout) -> Tensor:
        """(B, T, L, D) -> (B, T, L, D)."""
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            if recompute:
                x = checkpoint(block, x, task_embedding, layout, use_reentrant=False)
            else:
                x = block(x, task_embedding, layout)
        return x
