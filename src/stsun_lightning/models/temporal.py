"""Time: date encoding, and output slots that turn input dates into requested outputs.

An output slot asks for the state at one input frame, the change between two frames,
or an aggregate over the series. Slots are how outputs get any temporal length: one
map for segmentation, one for a change map, T maps for per-date maps, T + 1 for
semantic change detection.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stsun_lightning.batch import OutputKind
from stsun_lightning.models.layers import Attention, TaskModulation, exporting

__all__ = ["DAYS_PER_YEAR", "DateEncoder", "OutputSlots", "slot_anchor_weights"]

DAYS_PER_YEAR = 365.2425


class DateEncoder(nn.Module):
    """Dates -> embeddings: day-of-year harmonics and the year; a learned vector if unknown.

    Args:
        dim: embedding width.
        num_harmonics: yearly harmonics (1 = one cycle per year).
    """

    def __init__(self, dim: int, num_harmonics: int = 4) -> None:
        super().__init__()
        self.register_buffer(
            "harmonics", torch.arange(1, num_harmonics + 1, dtype=torch.float32), persistent=False
        )
        self.linear = nn.Linear(2 * num_harmonics + 1, dim)
        self.unknown = nn.Parameter(torch.randn(dim) * 0.02)

    def forward(self, dates: Tensor) -> Tensor:
        """Encode.

        Args:
            dates: (B, T) days since 1970-01-01, NaN where unknown.

        Returns:
            (B, T, dim).
        """
        dates = dates.float()
        known = torch.isfinite(dates)
        days = torch.where(known, dates, torch.zeros_like(dates))
        years = days / DAYS_PER_YEAR
        phase = 2 * math.pi * torch.frac(years)[..., None] * self.harmonics
        year = ((years + 1970 - 2020) / 10)[..., None]
        encoded = self.linear(torch.cat([phase.sin(), phase.cos(), year], -1))
        return torch.where(known[..., None], encoded, self.unknown.to(encoded.dtype))


def slot_anchor_weights(outputs: Tensor, time_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Which input frames each output slot starts from.

    A state slot reads frame ``ref_a``; a change slot reads ``ref_a`` and ``ref_b``; an
    aggregate slot reads the mean over the real frames.

    Args:
        outputs: (B, To, 3) slot ``(kind, ref_a, ref_b)``.
        time_mask: (B, T) bool.

    Returns:
        Weights ``a`` and ``b``, each (B, To, T) summing to 1 over T.
    """
    t = time_mask.shape[1]
    kind = outputs[..., 0].round().long()
    ref_a = outputs[..., 1].round().long().clamp(0, t - 1)
    # int(): torch.compile reads ``tensor == IntEnum`` as a Python bool.
    ref_b = torch.where(
        kind == int(OutputKind.CHANGE), outputs[..., 2].round().long().clamp(0, t - 1), ref_a
    )
    mean = time_mask.float() / time_mask.float().sum(-1, keepdim=True).clamp(min=1)  # (B, T)
    aggregate = (kind == int(OutputKind.AGGREGATE))[..., None]
    weights_a = torch.where(aggregate, mean[:, None], F.one_hot(ref_a, t).float())
    weights_b = torch.where(aggregate, mean[:, None], F.one_hot(ref_b, t).float())
    return weights_a, weights_b


class OutputSlots(nn.Module):
    """Input-date tokens -> one token per output slot at every location.

    Each slot starts from its anchor frames (``a`` and the difference ``b - a``) plus a
    learned embedding of its kind, then attends over the *other* real input dates at its
    location (state and change slots leave out their anchors, which they already hold;
    aggregate slots attend to every date), masked and with a null key, modulated by the
    task. With nothing else to attend to (a single date and no aggregate slot) the
    attention would return exactly zero, so it is skipped. No MLP here: the slot blocks
    of the trunk that follow have their own.

    Args:
        dim: token width.
        num_heads: attention heads.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.kind = nn.Embedding(len(OutputKind), dim)
        self.start = nn.Linear(2 * dim, dim)
        self.norm_query = nn.LayerNorm(dim, elementwise_affine=False)
        self.norm_context = nn.LayerNorm(dim)
        self.attention = Attention(dim, num_heads, cross=True, null_key=True)
        self.modulation = TaskModulation(dim, 1)

    def forward(
        self,
        tokens: Tensor,
        outputs: Tensor,
        anchors: tuple[Tensor, Tensor],
        time_mask: Tensor,
        task_embedding: Tensor,
    ) -> Tensor:
        """Build slot tokens.

        Args:
            tokens: (B, T, L, D) trunk output.
            outputs: (B, To, 3) slot descriptions.
            anchors: weights ``a`` and ``b`` from :func:`slot_anchor_weights`, (B, To, T).
            time_mask: (B, T) bool.
            task_embedding: (B, D), or (1, D) when the whole batch has one task.

        Returns:
            (B, To, L, D).
        """
        weights_a, weights_b = (w.to(tokens.dtype) for w in anchors)
        start_a = torch.einsum("bot,btld->blod", weights_a, tokens)
        start_b = torch.einsum("bot,btld->blod", weights_b, tokens)
        kind = outputs[..., 0].round().long().clamp(0, len(OutputKind) - 1)
        slots = (
            self.start(torch.cat([start_a, start_b - start_a], -1)) + self.kind(kind)[:, None]
        )  # (B, L, To, D)
        not_aggregate = (kind != int(OutputKind.AGGREGATE))[..., None]
        anchored = ((weights_a > 0) | (weights_b > 0)) & not_aggregate
        keys = time_mask[:, None, :] & ~anchored  # (B, To, T)
        if exporting() or bool(keys.any()):
            context = self.norm_context(tokens.transpose(1, 2))  # (B, L, T, D)
            (attention_mod,) = self.modulation(task_embedding)
            mask = keys[:, None, None]  # (B, 1(L), 1(heads), To, T)
            slots = slots + self.attention(
                self.norm_query(slots), context, mask=mask, modulation=attention_mod
            )
        return slots.transpose(1, 2)
