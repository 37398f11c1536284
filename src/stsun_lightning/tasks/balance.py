"""Loss balance across tasks: each task's loss over a normaliser measured once, then frozen.

Losses of different tasks come in different units (cross-entropy in nats, L1 in metres),
so their raw sum is dominated by whichever has the largest numbers. Dividing each by a
typical value of its own makes the sum independent of those units. The typical value is
the mean of the task's loss over its first ``warmup_batches`` labelled batches (counted
over all ranks), after which it is frozen.

A running mean would be the wrong typical value: dividing a loss by a running mean of
itself follows the gradient of log L, so a task's weight grows as it is learnt (after its
loss fell 20x, its multiplier was 15x, and in the demo's final state cloud masking weighed
about 1500x more than regression, relative to the raw sum). With a frozen normaliser a
task's weight stays what it was at the start; a learnt task contributes less, as it should.

On the demo (seven sources, five tasks) the raw sum trained better than this balance
(docs/architecture.md, "Departures from the design"), so ``StsunTask`` trains on the raw
sum unless ``loss_balance="initial_mean"`` is asked for: for losses whose units differ by
orders of magnitude (a regression target in hundreds of metres, say).

Batches without a labelled pixel are not measured (their loss is 0 and says nothing), and
every rank folds in the same all-reduced sums, so the normalisers agree across ranks. The
state is plain data (names and floats) that a checkpoint carries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = ["BALANCE_MODES", "LossBalance"]

BALANCE_MODES = ("initial_mean", "none")
"""``initial_mean``: divide by the frozen mean of the first batches; ``none``: the raw loss."""


class LossBalance:
    """Per-task normalisers of the training loss.

    Args:
        tasks: names of the tasks the run trains (the same on every rank).
        mode: one of :data:`BALANCE_MODES`.
        warmup_batches: labelled batches of a task (over all ranks) whose mean loss
            becomes its normaliser.

    Raises:
        ValueError: an unknown mode or a warm-up of fewer than one batch.
    """

    def __init__(
        self,
        tasks: Iterable[str],
        mode: Literal["initial_mean", "none"] = "initial_mean",
        warmup_batches: int = 20,
    ) -> None:
        if mode not in BALANCE_MODES:
            raise ValueError(
                f"loss_balance must be one of {', '.join(BALANCE_MODES)}, got {mode!r}."
            )
        if warmup_batches < 1:
            raise ValueError(f"balance_batches must be at least 1, got {warmup_batches}.")
        self.tasks = tuple(sorted(set(tasks)))
        self.mode = mode
        self.warmup_batches = warmup_batches
        self.loss_sum: dict[str, float] = {}
        self.batches: dict[str, float] = {}

    def measuring(self) -> tuple[str, ...]:
        """The tasks whose normaliser is still being measured, in a fixed order."""
        if self.mode == "none":
            return ()
        return tuple(t for t in self.tasks if self.batches.get(t, 0.0) < self.warmup_batches)

    def report(self, task: str, loss: float | None, device: torch.device) -> Tensor:
        """This rank's measurement, to be summed over ranks and given to :meth:`add`.

        Args:
            task: the task of this rank's batch.
            loss: its finite loss, or None when it measured nothing (nothing labelled,
                or a step that is skipped).
            device: where the collective runs.

        Returns:
            (2 · len(measuring()),) float32: per measuring task, the loss and the count.
        """
        measuring = self.measuring()
        report = torch.zeros(2 * len(measuring), dtype=torch.float32)
        if loss is not None and task in measuring:
            i = measuring.index(task)
            report[2 * i], report[2 * i + 1] = loss, 1.0
        return report.to(device)

    def add(self, totals: Tensor) -> None:
        """Fold in the measurements of one step, summed over ranks (see :meth:`report`)."""
        values = totals.detach().double().cpu().view(-1, 2).tolist()
        for task, (loss_sum, count) in zip(self.measuring(), values, strict=True):
            if count > 0:
                self.loss_sum[task] = self.loss_sum.get(task, 0.0) + loss_sum
                self.batches[task] = self.batches.get(task, 0.0) + count

    def normaliser(self, task: str) -> float:
        """What the task's loss is divided by: 1 until it has been measured."""
        count = self.batches.get(task, 0.0)
        if self.mode == "none" or count == 0:
            return 1.0
        mean = self.loss_sum[task] / count
        # A task whose first losses were exactly 0 has nothing to scale.
        return mean if mean > 0 else 1.0

    def __call__(self, loss: Tensor, task: str) -> Tensor:
        """``loss`` divided by the task's normaliser."""
        return loss / self.normaliser(task)

    def state_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint (loadable with ``torch.load(weights_only=True)``)."""
        return {
            "mode": self.mode,
            "warmup_batches": self.warmup_batches,
            "loss_sum": dict(self.loss_sum),
            "batches": dict(self.batches),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the measurements (of tasks this run trains and any others)."""
        self.loss_sum = {str(k): float(v) for k, v in state.get("loss_sum", {}).items()}
        self.batches = {str(k): float(v) for k, v in state.get("batches", {}).items()}
