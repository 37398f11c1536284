"""Skipping a training step whose loss is not finite, on every rank together.

A skipped step moves nothing: no parameter, no optimiser state (AdamW's moments, its step
count), no learning-rate schedule. Returning a zero loss is not enough for that: AdamW
still applies its momentum and weight decay to zero gradients (such a "skipped" step moved
the parameters by 82% of a normal one). So the step's gradients are dropped (set to None,
which every torch optimiser skips) just before the optimiser runs, and the schedule is not
advanced.

Whether to skip is decided by all ranks together: each reports whether its loss is finite,
the reports are summed over ranks, and every rank skips when any rank saw a non-finite
loss. The count of skipped steps is therefore the same everywhere, and the stop after
``max_nonfinite_losses`` happens on every rank at the same step, so no rank is left waiting
in a collective for one that stopped.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

__all__ = ["NonFiniteLossError", "NonFiniteSkips", "drop_gradients", "zero_through_parameters"]

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training stopped after more non-finite losses than ``max_nonfinite_losses``."""


class NonFiniteSkips:
    """Counts skipped steps, remembers which optimiser step is skipped, stops at the limit.

    Args:
        limit: steps with a non-finite loss tolerated (each skipped); one more stops.
    """

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"max_nonfinite_losses must be at least 0, got {limit}.")
        self.limit = limit
        self.skipped = 0
        self._skipped_step: int | None = None

    def skip(self, step: int, ranks: int, own_loss: Tensor | None, source: str) -> None:
        """Record that optimiser step ``step`` is skipped; stop past the limit.

        Args:
            step: the optimiser step the current batch contributes to (``global_step``).
            ranks: how many ranks saw a non-finite loss in this step.
            own_loss: this rank's loss when it is the non-finite one, else None.
            source: this rank's source, named in the messages.

        Raises:
            NonFiniteLossError: past ``limit`` skipped steps (on every rank at once).
        """
        if self._skipped_step != step:  # micro-batches of one accumulated step count once
            self.skipped += 1
        self._skipped_step = step
        where = (
            f"on source {source!r} (loss {float(own_loss.detach())})"
            if own_loss is not None
            else f"on {ranks} other rank(s) (this rank trained on {source!r})"
        )
        if self.skipped > self.limit:
            raise NonFiniteLossError(
                f"Stopping at step {step}: {self.skipped} steps had a non-finite loss (limit "
                f"max_nonfinite_losses={self.limit}); the last {where}. Check that source's "
                "inputs and labels for NaN, inf or an undeclared nodata value such as -3.4e38, "
                "or lower the learning rate."
            )
        log.warning(
            "Non-finite loss %s at step %d: step skipped on every rank (%d of at most %d).",
            where,
            step,
            self.skipped,
            self.limit,
        )

    def skips(self, step: int) -> bool:
        """Whether optimiser step ``step`` is skipped."""
        return self._skipped_step == step

    def state_dict(self) -> dict[str, int]:
        """The count, for a checkpoint."""
        return {"skipped": self.skipped}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the count."""
        self.skipped = int(state.get("skipped", 0))


def drop_gradients(optimizer: torch.optim.Optimizer) -> None:
    """Set every gradient the optimiser would use to None: its step then changes nothing."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            parameter.grad = None


def zero_through_parameters(module: nn.Module) -> Tensor:
    """0, with a (zero) gradient for every trainable parameter of ``module``.

    What a rank returns for a skipped step (it has no loss to give, and DDP needs every
    rank's backward pass), and what a normal step adds under DDP without
    ``find_unused_parameters``, so that parameters a batch leaves unused still get a
    gradient (see docs/cluster.md).
    """
    return (
        torch.stack([p.sum().float() for p in module.parameters() if p.requires_grad]).sum() * 0.0
    )
