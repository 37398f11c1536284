"""What an exported model serves, fixed inside one ``nn.Module`` around :class:`Stsun`.

:class:`ServedStsun` takes the raw image of one input configuration in physical units and
builds the rest of the batch contract itself, from constants chosen at export: the band
metadata, the normalisation statistics, the task, the categories (or variables) and the
output slots. Masks come from the image's NaNs exactly as the one reader
(:mod:`~stsun_lightning.data.datasets.series`) derives them, so a window predicted
through the exported graph sees what ``stsun predict`` feeds the network.

Graph inputs: ``image`` (B, T, C, H, W) float32 physical values (stored × scale), NaN
where there is no data; ``dates`` (B, T) float32 days since 1970-01-01, NaN where
unknown; ``gsd_m`` (B,) float32 metres per pixel. Output: ``logits`` (B, To, K, H, W)
or ``values`` (B, To, V, H, W).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from stsun_lightning.batch import Batch, OutputKind
from stsun_lightning.errors import ConfigError
from stsun_lightning.models.stsun import Stsun

__all__ = ["ServedBand", "ServedStsun", "ServingSpec", "output_slots"]

OUTPUT_CHOICES = ("state", "change", "aggregate", "per_date")


@dataclass(frozen=True)
class ServedBand:
    """One input channel of the exported graph.

    Attributes:
        input: the input (of the training configuration) the band belongs to.
        sensor: that input's sensor.
        name: band name.
        wavelength_nm: centre wavelength.
        bandwidth_nm: full width at half maximum.
        modality: :class:`~stsun_lightning.batch.Modality` id.
        mean: normalisation mean, physical units.
        std: normalisation standard deviation, physical units.
    """

    input: str
    sensor: str
    name: str
    wavelength_nm: float
    bandwidth_nm: float
    modality: int
    mean: float
    std: float


@dataclass(frozen=True)
class ServingSpec:
    """Everything an exported graph fixes.

    Attributes:
        bands: the channels of ``image``, in order.
        task: the task name.
        categories: category names (classification), or empty.
        variables: regression variables, or empty.
        outputs: "state", "change", "aggregate" or "per_date".
        dates: T, the frames of ``image``.
    """

    bands: tuple[ServedBand, ...]
    task: str
    categories: tuple[str, ...]
    variables: tuple[str, ...]
    outputs: str
    dates: int

    @property
    def names(self) -> tuple[str, ...]:
        """The categories or variables predicted, in output order."""
        return self.categories or self.variables


def output_slots(outputs: str, time_mask: Tensor) -> Tensor:
    """``Batch.outputs`` (B, To, 3) for ``outputs`` over frames ``time_mask`` (B, T).

    As :func:`~stsun_lightning.data.datasets.items.window_batch` does: "state" at the last
    real frame, "change" from the first to the last real frame, "aggregate", or a state
    at every frame ("per_date").
    """
    b, t = time_mask.shape
    index = torch.arange(t, device=time_mask.device)[None].expand(b, t)
    # First and last real frame; 0 and T - 1 when there is none (as the reader does).
    last = torch.where(time_mask, index, -1).amax(1)
    first = torch.where(time_mask, index, t).amin(1)
    last = torch.where(last < 0, t - 1, last).float()
    first = torch.where(first >= t, 0, first).float()
    ones = torch.ones_like(last)
    if outputs == "per_date":
        refs = index.float()
        return torch.stack([torch.zeros_like(refs), refs, refs], -1)
    if outputs == "state":
        slot = [ones * float(OutputKind.STATE), last, last]
    elif outputs == "change":
        slot = [ones * float(OutputKind.CHANGE), first, last]
    else:
        slot = [ones * float(OutputKind.AGGREGATE), -ones, -ones]
    return torch.stack(slot, -1)[:, None]


class ServedStsun(nn.Module):
    """:class:`Stsun` with one input configuration, task and class set fixed inside.

    Args:
        network: the trained network (any of its presets; used as it is).
        spec: what is served.

    Raises:
        ConfigError: a task, category or variable the network does not know, naming
            them and what it knows.
    """

    def __init__(self, network: Stsun, spec: ServingSpec) -> None:
        super().__init__()
        if spec.outputs not in OUTPUT_CHOICES:
            raise ConfigError(
                f"outputs must be one of {', '.join(OUTPUT_CHOICES)}; got {spec.outputs!r}."
            )
        if bool(spec.categories) == bool(spec.variables):
            raise ConfigError("Export either categories or variables (exactly one).")
        self.network = network
        self.spec = spec
        self.classification = bool(spec.categories)
        known = network.categories if self.classification else network.variables
        kind = "categories" if self.classification else "variables"
        _check_known("task", [spec.task], network.tasks)
        _check_known(kind, spec.names, known)
        bands = spec.bands
        self.register_buffer("wavelength_nm", _floats([b.wavelength_nm for b in bands]))
        self.register_buffer("bandwidth_nm", _floats([b.bandwidth_nm for b in bands]))
        self.register_buffer("modality", torch.tensor([b.modality for b in bands]))
        self.register_buffer("mean", _floats([b.mean for b in bands])[:, None, None])
        self.register_buffer("std", _floats([b.std for b in bands])[:, None, None])
        self.register_buffer("task_row", torch.tensor(network.tasks.index(spec.task)))
        self.register_buffer("rows", torch.tensor([list(known).index(n) for n in spec.names]))

    def forward(self, image: Tensor, dates: Tensor, gsd_m: Tensor) -> Tensor:
        """Predict from physical values.

        Args:
            image: (B, T, C, H, W) physical values, NaN where there is no data.
            dates: (B, T) days since 1970-01-01, NaN where unknown.
            gsd_m: (B,) metres per pixel.

        Returns:
            logits (B, To, K, H, W), or values (B, To, V, H, W).
        """
        b, _t, c, height, width = image.shape
        image = (image - self.mean) / self.std
        # The reader's masks (RasterSeries.read): data is what is finite.
        present = torch.isfinite(image)
        band_mask = present.any(-1).any(-1)  # (B, T, C)
        valid = present.any(2).any(1)  # (B, H, W)
        time_mask = band_mask.any(-1)  # (B, T)
        empty = ~time_mask.any(-1, keepdim=True)  # no data at all: masks pixels instead
        band_mask = band_mask | empty[..., None]
        time_mask = time_mask | empty
        rows = self.rows.expand(b, -1)
        batch = Batch(
            image=torch.where(present, image, torch.nan),
            wavelength_nm=self.wavelength_nm.expand(b, c),
            bandwidth_nm=self.bandwidth_nm.expand(b, c),
            modality=self.modality.expand(b, c),
            band_mask=band_mask,
            gsd_m=gsd_m,
            dates=dates,
            time_mask=time_mask,
            valid_mask=valid,
            task=self.task_row.expand(b),
            outputs=output_slots(self.spec.outputs, time_mask),
            categories=rows if self.classification else None,
            category_mask=torch.ones_like(rows, dtype=torch.bool) if self.classification else None,
            variables=None if self.classification else rows,
        )
        output = self.network(batch, (height, width))
        prediction = output.logits if self.classification else output.values
        assert prediction is not None
        return prediction


def _floats(values: Sequence[float]) -> Tensor:
    return torch.tensor(list(values), dtype=torch.float32)


def _check_known(kind: str, names: Sequence[str], known: Sequence[str]) -> None:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            f"Cannot export {kind} {', '.join(map(repr, unknown))}: the model does not know "
            f"{'it' if len(unknown) == 1 else 'them'}. It knows {kind} "
            f"{', '.join(map(repr, known)) or '(none)'}."
        )
