"""Vocabularies of names (categories, tasks, variables) and their trainable tables.

A dataset speaks of classes and tasks by name; the model holds one trainable row per
name. The same name in two datasets is the same row, and new names append rows, so a
merged or new class set needs no new head. The names travel in the module's state dict
(as extra state), so a checkpoint always knows what its rows mean.

Loading a state dict merges: the checkpoint's names keep their rows bit for bit, in the
checkpoint's order, and the names only this module knows follow, with this module's own
rows. Those are not learnt yet (:attr:`VocabularyEmbedding.unlearnt`) until a run trains
or initialises them (see :mod:`stsun_lightning.tasks.imprint`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from stsun_lightning.errors import unknown_name_error

__all__ = ["DEFAULT_TASKS", "Vocabulary", "VocabularyEmbedding", "VocabularyMerge"]

DEFAULT_TASKS: tuple[str, ...] = (
    "semantic_segmentation",
    "change_detection",
    "semantic_change_detection",
    "cloud_mask",
    "time_series_segmentation",
    "regression",
    "band_prediction",
)
"""Task names every model knows; more can be added."""


@dataclass(frozen=True)
class VocabularyMerge:
    """What loading a state dict did to one vocabulary.

    Attributes:
        kind: what the names name ("category", "task", "variable").
        kept: the checkpoint's names, whose rows were loaded as they are, in row order.
        new: names only the loading module knew: rows appended after the kept ones.
    """

    kind: str
    kept: tuple[str, ...]
    new: tuple[str, ...]


class Vocabulary:
    """An ordered set of unique names; a name's position is its row.

    Args:
        names: initial names, in row order; duplicates are an error.
        kind: what the names name ("category", "task", ...), used in error messages.
    """

    def __init__(self, names: Iterable[str] = (), kind: str = "name") -> None:
        self.kind = kind
        self._names: list[str] = []
        self._index: dict[str, int] = {}
        names = list(names)
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"Duplicate {kind} names: {dupes}.")
        self.add(names)

    @property
    def names(self) -> list[str]:
        """The names in row order (a copy)."""
        return list(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __repr__(self) -> str:
        return f"Vocabulary({self.kind}: {self._names})"

    def index(self, name: str) -> int:
        """The row of ``name``.

        Raises:
            UnknownNameError: listing the known names and the closest match.
        """
        try:
            return self._index[name]
        except KeyError:
            raise unknown_name_error(self.kind, name, self._names) from None

    def indices(self, names: Sequence[str]) -> list[int]:
        """Rows of several names, in the order given."""
        return [self.index(n) for n in names]

    def add(self, names: Iterable[str]) -> list[str]:
        """Append names not yet known; returns those that were new."""
        new = []
        for name in names:
            if not isinstance(name, str) or not name:
                raise ValueError(f"A {self.kind} name must be a non-empty string, got {name!r}.")
            if name not in self._index:
                self._index[name] = len(self._names)
                self._names.append(name)
                new.append(name)
        return new


class VocabularyEmbedding(nn.Module):
    """A trainable table with one row per name of a :class:`Vocabulary`.

    Args:
        names: the names, in row order.
        dim: width of a row.
        kind: what the names name, for error messages.
        init_std: standard deviation of the initial rows.
    """

    def __init__(self, names: Iterable[str], dim: int, kind: str, init_std: float = 0.02) -> None:
        super().__init__()
        self.vocabulary = Vocabulary(names, kind)
        self.dim = dim
        self.init_std = init_std
        self.weight = nn.Parameter(torch.randn(len(self.vocabulary), dim) * init_std)
        # Names whose rows a loaded checkpoint did not have, until a run learns them.
        self.unlearnt: list[str] = []
        # What the last load did (None until a state dict is loaded).
        self.last_merge: VocabularyMerge | None = None

    def forward(self, rows: Tensor) -> Tensor:
        """Rows of the table: (...) long -> (..., dim)."""
        return nn.functional.embedding(rows, self.weight)

    def rows(self, names: Sequence[str]) -> Tensor:
        """The rows of ``names`` as a long tensor on the table's device: (len(names),)."""
        return torch.tensor(
            self.vocabulary.indices(names), dtype=torch.long, device=self.weight.device
        )

    def add(self, names: Iterable[str]) -> list[str]:
        """Append rows for new names (existing rows are kept exactly).

        The weight becomes a new ``Parameter``: build the optimiser after adding names.

        Returns:
            The names that were new.
        """
        new = self.vocabulary.add(names)
        if new:
            extra = torch.randn(len(new), self.dim, device=self.weight.device) * self.init_std
            self.weight = nn.Parameter(
                torch.cat([self.weight.data, extra.to(self.weight.dtype)], 0)
            )
        return new

    def get_extra_state(self) -> dict[str, Any]:
        """The names, saved in the state dict beside the rows."""
        return {"kind": self.vocabulary.kind, "names": self.vocabulary.names}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the names saved by :meth:`get_extra_state`."""
        self.vocabulary = Vocabulary(state["names"], state.get("kind", self.vocabulary.kind))

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # Merge rather than replace: the checkpoint's names and rows first, exactly as
        # saved, then the names only this module knows, with the rows it has for them.
        weight = state_dict.get(prefix + "weight")
        saved = state_dict.get(prefix + "_extra_state")
        own = {k: v for k, v in state_dict.items() if k.startswith(prefix)}
        if isinstance(weight, Tensor) and isinstance(saved, dict) and "names" in saved:
            kept = list(saved["names"])
            if weight.shape[0] != len(kept) or weight.shape[1:] != self.weight.shape[1:]:
                # A shape error: leave it to the default loader, which names it.
                super()._load_from_state_dict(
                    own, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
                )
                return
            new = [n for n in self.vocabulary if n not in set(kept)]
            own_rows = self.weight.detach()[self.vocabulary.indices(new)] if new else None
            merged = weight if own_rows is None else torch.cat([weight, own_rows.to(weight)], 0)
            own[prefix + "weight"] = merged
            own[prefix + "_extra_state"] = {**saved, "names": kept + new}
            unlearnt = [n for n in self.unlearnt if n not in set(kept)] + [
                n for n in new if n not in self.unlearnt
            ]
            self.last_merge = VocabularyMerge(self.vocabulary.kind, tuple(kept), tuple(new))
            self.unlearnt = unlearnt
        if isinstance(weight, Tensor) and tuple(own[prefix + "weight"].shape) != tuple(
            self.weight.shape
        ):
            self.weight = nn.Parameter(
                torch.empty_like(own[prefix + "weight"], device=self.weight.device)
            )
        super()._load_from_state_dict(
            own, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def mark_learnt(self, names: Iterable[str] | None = None) -> None:
        """Count ``names`` (default: all) as learnt: a run trains or initialised their rows."""
        drop = set(self.unlearnt if names is None else names)
        self.unlearnt = [n for n in self.unlearnt if n not in drop]

    def extra_repr(self) -> str:
        """Kind, rows and width, for printing."""
        return f"{self.vocabulary.kind}: {len(self.vocabulary)} × {self.dim}"
