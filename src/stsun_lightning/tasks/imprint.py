"""New category rows that start from what the network already sees.

A fine-tune run that adds category names gives their rows values before the first step,
in one of two ways (the classic "weight imprinting" of few-shot learning, adapted to
the cosine head of :class:`~stsun_lightning.models.heads.CategoryHead`):

- from named known categories, where the user says so (``init_categories: {glacier:
  [snow_ice]}``): the mean of those rows, embedding and bias;
- otherwise from the mean pixel feature of the first labelled pixels of the category
  in the training loader: the row is solved so that the head's projection of it points
  along that mean (the cosine is highest on pixels that look like the labelled ones),
  its length that of the known rows' projections, its bias the known rows' mean bias.

Shapes: B batch, To output slots, De pixel-feature width, E category-embedding width.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from stsun_lightning.batch import Batch
from stsun_lightning.errors import ConfigError, unknown_name_error
from stsun_lightning.models import Stsun

__all__ = ["PixelFeatureMeans", "imprint_rows", "rows_from_categories"]


@torch.no_grad()
def rows_from_categories(
    network: Stsun, sources: Mapping[str, Sequence[str]], new: Sequence[str]
) -> list[str]:
    """Set each new row named in ``sources`` to the mean of the rows it names.

    Args:
        network: the network, whose table holds the new rows already.
        sources: ``{new name: [known names]}`` (``model.init_categories``).
        new: the names this run added.

    Returns:
        The names set.

    Raises:
        ConfigError: a key that is not a new name, an empty list, or a known name that
            is itself new or not in the table.
    """
    table = network.category_embedding
    known = [n for n in table.vocabulary if n not in set(new)]
    for name, parents in sources.items():
        if name not in new:
            raise ConfigError(
                f"model.init_categories names {name!r}, which is not a category this run "
                f"adds (new: {', '.join(new) or 'none'}); only new rows are initialised."
            )
        if not parents:
            raise ConfigError(f"model.init_categories.{name} lists no category to start from.")
        for parent in parents:
            if parent not in known:
                raise unknown_name_error(
                    "category", parent, known, where=f"model.init_categories.{name}"
                )
        rows = table.rows(list(parents))
        table.weight[table.vocabulary.index(name)] = table.weight[rows].mean(0)
    return list(sources)


class PixelFeatureMeans:
    """Sums of unit pixel features per category, from labelled batches.

    Args:
        network: the network (its category head's input is what is averaged).
        names: the categories to average.
    """

    def __init__(self, network: Stsun, names: Sequence[str]) -> None:
        self.network = network
        self.names = list(names)
        self.rows = network.category_embedding.rows(self.names)  # (N,)
        width = network.category_head.proj.out_features
        self.sums = torch.zeros(len(self.names), width, device=self.rows.device)
        self.counts = torch.zeros(len(self.names), device=self.rows.device)

    @torch.no_grad()
    def add(self, batch: Batch) -> None:
        """Add the labelled pixels of the categories in ``batch`` (rows in the network's).

        Args:
            batch: a batch with ``categories`` (B, K) and ``target`` (B, To, H', W').
        """
        if batch.categories is None or batch.target is None:
            return
        asked = batch.categories[:, None, :] == self.rows[None, :, None]  # (B, N, K)
        if not bool(asked.any()):
            return
        captured: list[Tensor] = []
        handle = self.network.category_head.register_forward_hook(
            lambda _m, args, _o: captured.append(args[0])
        )
        try:
            self.network(batch)
        finally:
            handle.remove()
        features = torch.nn.functional.normalize(captured[0].float(), dim=2)  # (B, To, De, H, W)
        target = batch.target  # (B, To, H, W): positions in categories
        for n in range(len(self.names)):
            for item, position in asked[:, n].nonzero().tolist():
                pixels = target[item] == position  # (To, H, W)
                if bool(pixels.any()):
                    self.sums[n] += features[item].permute(0, 2, 3, 1)[pixels].sum(0)
                    self.counts[n] += pixels.sum()

    def complete(self, min_pixels: int) -> bool:
        """Whether every category has at least ``min_pixels`` labelled pixels."""
        return bool((self.counts >= min_pixels).all())

    def reduce(self, total: Callable[[Tensor], Tensor]) -> None:
        """Sum over processes (``total``: the strategy's sum of a tensor)."""
        both = total(torch.cat([self.sums, self.counts[:, None]], 1))
        self.sums, self.counts = both[:, :-1], both[:, -1]

    def means(self) -> dict[str, Tensor]:
        """Mean unit feature (De,) of each category that had labelled pixels."""
        return {
            name: self.sums[n] / self.counts[n]
            for n, name in enumerate(self.names)
            if self.counts[n] > 0
        }


@torch.no_grad()
def imprint_rows(network: Stsun, means: Mapping[str, Tensor], known: Iterable[str]) -> None:
    """Set the rows of ``means``' categories so that they point along their mean feature.

    The head scores ``cos(feature, W e + b)`` for row ``e`` (W: (De, E), b: (De,)), so
    the row is the shortest least-squares solution of ``W e + b = m̂ × r``: ``m̂`` the unit mean
    feature, ``r`` the mean length of the known rows' projections. Its bias is the
    known rows' mean bias (0 without known rows).

    Args:
        network: the network.
        means: category -> mean unit pixel feature (De,).
        known: the categories the checkpoint had (their rows give length and bias).
    """
    if not means:
        return
    table = network.category_embedding
    proj = network.category_head.proj
    weight, bias = proj.weight.float(), proj.bias.float()
    known_rows = table.weight[table.rows(list(known))].float() if known else None
    if known_rows is not None and len(known_rows):
        length = torch.linalg.vector_norm(known_rows[:, :-1] @ weight.t() + bias, dim=1).mean()
        known_bias = known_rows[:, -1].mean()
    else:
        length, known_bias = torch.linalg.vector_norm(bias) + 1.0, weight.new_zeros(())
    names = list(means)
    goal = torch.stack([torch.nn.functional.normalize(means[n].float(), dim=0) for n in names])
    rhs = (goal * length - bias).t()  # (De, N)
    embed = (torch.linalg.pinv(weight) @ rhs).t()  # (N, E): the shortest solution
    rows = table.rows(names)
    table.weight[rows, :-1] = embed.to(table.weight.dtype)
    table.weight[rows, -1] = known_bias.to(table.weight.dtype)
