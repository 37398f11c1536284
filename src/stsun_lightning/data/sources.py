"""What a data source offers the model: its task, class names and variables.

A datamodule describes each of its sources with a :class:`SourceInfo`; the model's
vocabularies are built from them by :func:`build_vocabularies`, the one place that
decides row order, so a datamodule and a model built from the same sources agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from stsun_lightning.models.vocabulary import DEFAULT_TASKS

__all__ = ["SourceInfo", "build_vocabularies", "parse_sources"]


@dataclass(frozen=True)
class SourceInfo:
    """One data source (a dataset, or one part of the synthetic world).

    Attributes:
        name: source name, used in logs (``val/<name>/miou``).
        task: task name (a row of the task vocabulary).
        categories: class names predicted for this source, in target order
            (target value i means ``categories[i]``); empty for regression.
        variables: regression variables (empty for classes).
        slot_categories: for sources whose output slots predict different class sets
            (semantic change), the categories each slot may predict; empty otherwise.
    """

    name: str
    task: str
    categories: tuple[str, ...] = ()
    variables: tuple[str, ...] = ()
    slot_categories: tuple[tuple[str, ...], ...] = field(default=())

    def __post_init__(self) -> None:
        if bool(self.categories) == bool(self.variables):
            raise ValueError(
                f"Source {self.name!r} must declare either categories or variables, "
                f"got categories={list(self.categories)} and variables={list(self.variables)}."
            )

    @property
    def is_classification(self) -> bool:
        """Whether the source's targets are classes."""
        return bool(self.categories)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists), e.g. for configs and ``link_arguments``."""
        return {
            k: [list(v) for v in val]
            if k == "slot_categories"
            else (list(val) if isinstance(val, tuple) else val)
            for k, val in asdict(self).items()
        }


def parse_sources(
    sources: Mapping[str, Mapping[str, Any] | SourceInfo] | Iterable[SourceInfo],
) -> list[SourceInfo]:
    """Source descriptions as :class:`SourceInfo`, from objects or plain mappings by name."""
    if isinstance(sources, Mapping):
        items = []
        for name, spec in sources.items():
            if isinstance(spec, SourceInfo):
                items.append(spec)
                continue
            spec = dict(spec)
            spec.setdefault("name", name)
            spec["categories"] = tuple(spec.get("categories", ()))
            spec["variables"] = tuple(spec.get("variables", ()))
            spec["slot_categories"] = tuple(tuple(s) for s in spec.get("slot_categories", ()))
            items.append(SourceInfo(**spec))
        return items
    return list(sources)


def build_vocabularies(sources: Iterable[SourceInfo]) -> dict[str, list[str]]:
    """The task, category and variable vocabularies covering ``sources``.

    Tasks start with :data:`DEFAULT_TASKS`; categories and variables appear in the order
    the sources name them, each once.

    Returns:
        ``{"tasks": [...], "categories": [...], "variables": [...]}``.
    """
    vocab: dict[str, list[str]] = {"tasks": list(DEFAULT_TASKS), "categories": [], "variables": []}
    for source in sources:
        for key, names in (
            ("tasks", [source.task]),
            ("categories", source.categories),
            ("variables", source.variables),
        ):
            vocab[key] += [n for n in names if n not in vocab[key]]
    return vocab
