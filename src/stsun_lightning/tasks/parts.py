"""Parts of the network by name, to freeze or to train slowly in a fine-tune run.

A part is a set of the network's parameters named the way a person thinks of them
(``tokenizer``, ``trunk``, ``decoder``, ...). Every parameter of :class:`Stsun` belongs
to exactly one part. A frozen part gets no gradient, is left out of the optimiser and
runs in eval mode, also while the rest trains.

The category vocabulary (``categories``: its rows with their biases, and the head's
cosine scale) can train at a reduced rate where the run adds new names: the known rows
and the scale move by ``ratio`` × the optimiser's step, the new rows by the full step
(:class:`KnownRowsRate`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from stsun_lightning.errors import ConfigError, unknown_name_error
from stsun_lightning.models import Stsun

__all__ = ["PARTS", "KnownRowsRate", "freeze_parts", "frozen_modules", "part_of"]

PARTS: dict[str, tuple[str, ...]] = {
    "band_encoder": ("band_encoder.",),
    "tokenizer": ("tokenizer.", "conv_stem."),
    "date_encoder": ("date_encoder.",),
    "trunk": ("date_trunk.", "output_slots.", "slot_trunk."),
    "decoder": ("decoder.",),
    "heads": ("category_head.proj.", "value_head."),
    "tasks": ("task_embedding.",),
    "variables": ("variable_embedding.",),
    "categories": ("category_embedding.", "category_head.log_scale"),
}
"""Part name -> prefixes of the network's parameter names."""

BACKBONE = ("band_encoder", "tokenizer", "date_encoder", "trunk", "decoder")
"""What ``freeze: [backbone]`` stands for: everything before the heads."""


def part_of(parameter_name: str) -> str:
    """The part a parameter of :class:`Stsun` belongs to.

    Raises:
        KeyError: a parameter of no part (a network this module does not describe).
    """
    for part, prefixes in PARTS.items():
        if any(parameter_name.startswith(prefix) for prefix in prefixes):
            return part
    raise KeyError(f"The network's parameter {parameter_name!r} belongs to no part.")


def _expand(parts: Iterable[str]) -> list[str]:
    """Part names with ``backbone`` spelt out; unknown names are an error."""
    expanded: list[str] = []
    for part in parts:
        if part == "backbone":
            expanded += BACKBONE
        elif part in PARTS:
            expanded.append(part)
        else:
            raise unknown_name_error(
                "network part", part, [*PARTS, "backbone"], where="model.freeze"
            )
    return list(dict.fromkeys(expanded))


def freeze_parts(network: Stsun, parts: Sequence[str]) -> list[str]:
    """Turn off the gradients of the named parts' parameters.

    Args:
        network: the network.
        parts: names of :data:`PARTS`, or ``backbone``.

    Returns:
        The parts frozen (``backbone`` spelt out).

    Raises:
        UnknownNameError: a part that does not exist, listing those that do.
    """
    frozen = _expand(parts)
    for name, parameter in network.named_parameters():
        if part_of(name) in frozen:
            parameter.requires_grad_(False)
    return frozen


def frozen_modules(network: Stsun, parts: Sequence[str]) -> list[nn.Module]:
    """The submodules that lie wholly inside the frozen parts (to keep in eval mode)."""
    prefixes = tuple(p for part in _expand(parts) for p in PARTS[part] if p.endswith("."))
    return [m for name, m in network.named_modules() if name and (name + ".").startswith(prefixes)]


class KnownRowsRate:
    """Known category rows and the cosine scale at ``ratio`` × the learning rate.

    An optimiser step moves every parameter; right after it, the known rows (and the
    scale) are set back to ``before + ratio × (after - before)``. For AdamW (whose
    moments do not depend on the learning rate) that is exactly a learning rate of
    ``ratio`` × the group's, without splitting the table into two parameters.

    Args:
        network: the network.
        known: names whose rows move slowly (the checkpoint's); the others move fully.
        ratio: in [0, 1]; 0 keeps them as they are, 1 is an ordinary step.

    Raises:
        ConfigError: a ratio outside [0, 1].
    """

    def __init__(self, network: Stsun, known: Sequence[str], ratio: float) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ConfigError(f"model.known_categories_lr must be in [0, 1], got {ratio}.")
        self.network = network
        self.ratio = ratio
        table = network.category_embedding
        self.rows = torch.tensor(
            [table.vocabulary.index(n) for n in known if n in table.vocabulary], dtype=torch.long
        )
        self._before: list[Tensor] = []
        self._handles: list[RemovableHandle] = []

    def _targets(self) -> list[tuple[Tensor, Tensor | None]]:
        """(parameter, rows or None for all of it) that move slowly and train at all."""
        table = self.network.category_embedding.weight
        scale = self.network.category_head.log_scale
        targets: list[tuple[Tensor, Tensor | None]] = []
        if table.requires_grad and len(self.rows):
            targets.append((table, self.rows.to(table.device)))
        if scale.requires_grad:
            targets.append((scale, None))
        return targets

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Hook into ``optimizer``'s steps (a ratio of 1 needs no hook)."""
        if self.ratio == 1.0:
            return
        self._handles = [
            optimizer.register_step_pre_hook(lambda *_: self._remember()),
            optimizer.register_step_post_hook(lambda *_: self._slow_down()),
        ]

    @torch.no_grad()
    def _remember(self) -> None:
        self._before = [
            (p.detach()[rows] if rows is not None else p.detach()).clone()
            for p, rows in self._targets()
        ]

    @torch.no_grad()
    def _slow_down(self) -> None:
        for (parameter, rows), before in zip(self._targets(), self._before, strict=True):
            after = parameter[rows] if rows is not None else parameter.detach()
            slowed = before + self.ratio * (after - before)
            if rows is not None:
                parameter[rows] = slowed
            else:
                parameter.copy_(slowed)
        self._before = []
