"""Vocabularies of names (categories, tasks, variables) and their trainable tables.

A dataset speaks of classes and tasks by name; the model holds one trainable row per
name. The same name in two datasets is the same row, and new names append rows, so a
merged or new class set needs no new head. The names travel in the module's state dict
(as extra state), so a checkpoint always knows what its rows mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from stsun_lightning.errors import unknown_name_error

__all__ = ["DEFAULT_TASKS", "Vocabulary", "VocabularyEmbedding"]

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
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # A checkpoint may hold more (or other) names than this fresh module: take its
        # vocabulary and resize the table before the rows are copied in.
        weight = state_dict.get(prefix + "weight")
        if weight is not None and tuple(weight.shape) != tuple(self.weight.shape):
            self.weight = nn.Parameter(torch.empty_like(weight, device=self.weight.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        """Kind, rows and width, for printing."""
        return f"{self.vocabulary.kind}: {len(self.vocabulary)} × {self.dim}"
