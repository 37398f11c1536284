"""Batch rows (the datamodule's numbering of names) to network rows (the checkpoint's).

A datamodule numbers task, category and variable names by its own sources; a network
restored from a checkpoint trained on other sources numbers them its own way. Rows are
matched by name, so a network predicts any subset of what it learnt, in any order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from stsun_lightning.batch import Batch
from stsun_lightning.errors import UnknownNameError, unknown_name_error
from stsun_lightning.models import Stsun

__all__ = ["RowMap", "unlearnt_name_error"]

# Batch field -> (vocabulary kind, the network's table of that kind, name in messages).
_FIELDS = {
    "task": ("tasks", "task_embedding", "task"),
    "categories": ("categories", "category_embedding", "category"),
    "variables": ("variables", "variable_embedding", "variable"),
}


def unlearnt_name_error(noun: str, name: str, known: Sequence[str], kind: str) -> UnknownNameError:
    """The error for a datamodule's name (of vocabulary ``kind``) the network never learnt."""
    return unknown_name_error(
        noun,
        name,
        known,
        where=f"the datamodule's {'task' if kind == 'tasks' else kind}; the network, e.g. "
        "from its checkpoint, never learnt it",
    )


class RowMap:
    """Translates a batch's rows to a network's rows, by name.

    Args:
        data_vocabularies: ``{"tasks": [...], "categories": [...], "variables": [...]}``:
            what the rows of the datamodule's batches mean.
    """

    def __init__(self, data_vocabularies: Mapping[str, Sequence[str]]) -> None:
        self.data_vocabularies = {k: list(v) for k, v in data_vocabularies.items()}
        # Per kind: the network's names when the lookup was built, and the lookup
        # (None where the network's first rows are the datamodule's).
        self._cache: dict[str, tuple[tuple[str, ...], Tensor | None]] = {}

    def __call__(self, batch: Batch, network: Stsun) -> Batch:
        """The batch with its task, category and variable rows in the network's numbering.

        Returns:
            ``batch`` itself when every vocabulary agrees, else a shallow copy.

        Raises:
            UnknownNameError: a name of the datamodule that the network never learnt.
        """
        changes = {}
        for field in _FIELDS:
            rows = getattr(batch, field)
            lookup = self._lookup(field, network) if rows is not None else None
            if lookup is not None:
                changes[field] = lookup.to(rows.device)[rows]
        return dataclasses.replace(batch, **changes) if changes else batch

    def _lookup(self, field: str, network: Stsun) -> Tensor | None:
        """Data row -> network row for one vocabulary, or None where they agree."""
        kind, table, noun = _FIELDS[field]
        names = tuple(getattr(network, table).vocabulary.names)
        cached = self._cache.get(kind)
        if cached is not None and cached[0] == names:
            return cached[1]
        data_names = self.data_vocabularies.get(kind, [])
        lookup = None
        if list(names[: len(data_names)]) != data_names:
            index = {name: row for row, name in enumerate(names)}
            for name in data_names:
                if name not in index:
                    raise unlearnt_name_error(noun, name, names, kind)
            lookup = torch.tensor([index[n] for n in data_names], dtype=torch.long)
        self._cache[kind] = (names, lookup)
        return lookup
