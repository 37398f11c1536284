"""Validation and test scores per source, reduced across ranks once per epoch.

Under DDP each rank sees batches of other sources, so the keys a rank could log differ
from its neighbours', and a per-step ``sync_dist=True`` on a key one rank never logs would
hang the others. Nothing is synchronised per step: losses and metric states are
accumulated per source, and at the end of the epoch one all-reduce gathers, per source,
whether any rank saw it and its loss sums; then the metrics of every source seen anywhere
are computed on every rank (torchmetrics reduces their states, on ranks that saw none of
the source too, or the collective would wait for them).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from stsun_lightning.data.sources import SourceInfo
from stsun_lightning.tasks.metrics import SourceMetrics

__all__ = ["SourceEvaluation"]


class SourceEvaluation(nn.Module):
    """Loss and metrics of every source for one stage (validation or test).

    Args:
        sources: the sources, by name.
    """

    def __init__(self, sources: Mapping[str, SourceInfo]) -> None:
        super().__init__()
        self.metrics = nn.ModuleDict({name: SourceMetrics(s) for name, s in sources.items()})
        # Per source: (sum of batch loss × batch size, sum of batch sizes), float64.
        self._losses: dict[str, tuple[Tensor, Tensor]] = {}

    def update(self, source: str, prediction: Tensor, target: Tensor, loss: Tensor) -> None:
        """Add one batch of ``source``.

        Args:
            source: the batch's source name.
            prediction: logits (B, To, K, H, W) or values (B, To, V, H, W).
            target: the batch's target.
            loss: the batch's mean loss (scalar).
        """
        self.metrics[source].update(prediction, target)
        size = torch.tensor(float(prediction.shape[0]), dtype=torch.float64, device=loss.device)
        total, count = self._losses.get(source, (torch.zeros_like(size), torch.zeros_like(size)))
        self._losses[source] = (total + loss.detach().double() * size, count + size)

    def compute(
        self, device: torch.device, sum_over_ranks: Callable[[Tensor], Tensor] | None
    ) -> dict[str, Tensor]:
        """Scores of every source any rank saw, as ``{"<source>/<metric>": value}``; resets.

        Args:
            device: where the collective runs (this rank's device).
            sum_over_ranks: all-reduce (sum) of a tensor over ranks, or None in one process.

        Returns:
            ``<source>/loss`` and ``<source>/<metric>`` for each source seen; the same on
            every rank.
        """
        if not self.metrics:
            return {}
        zero = torch.zeros((), dtype=torch.float64, device=device)
        rows = []
        for name, metrics in self.metrics.items():
            total, count = self._losses.get(name, (zero, zero))
            seen = torch.ones_like(zero) if metrics.updated else zero
            rows.append(torch.stack([seen, total.to(device), count.to(device)]))
        table = torch.stack(rows)
        if sum_over_ranks is not None:
            table = sum_over_ranks(table)
        scores: dict[str, Tensor] = {}
        for (name, metrics), (seen, total, count) in zip(
            self.metrics.items(), table.tolist(), strict=True
        ):
            if not seen:
                continue
            with warnings.catch_warnings():
                # A rank that saw no batch of this source still joins the reduction.
                warnings.filterwarnings("ignore", message=".*was called before the ``update``")
                values = metrics.compute()
            if count > 0:
                scores[f"{name}/loss"] = torch.tensor(total / count, dtype=torch.float32)
            scores.update({f"{name}/{metric}": value for metric, value in values.items()})
            metrics.reset()
        self._losses = {}
        return scores
