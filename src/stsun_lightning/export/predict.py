"""``stsun predict`` through an exported file: the batch contract to the graph's inputs.

:class:`~stsun_lightning.tasks.module.StsunTask` with ``onnx: model.onnx`` predicts with
the file instead of its network. It hands the datamodule a data record whose statistics
are mean 0 and standard deviation 1 for the exported bands, so the one reader yields
physical values (stored × scale), which the graph normalises with the statistics fixed
inside it; everything else (windows, blending, the COG writer) is what a checkpoint
predicts with.
"""

from __future__ import annotations

from typing import Any

import torch

from stsun_lightning.batch import Batch
from stsun_lightning.data.record import RECORD_FORMAT
from stsun_lightning.errors import ConfigError
from stsun_lightning.export.onnx import OnnxModel
from stsun_lightning.export.served import output_slots
from stsun_lightning.models import StsunOutput

__all__ = ["physical_record", "predict_exported"]


def physical_record(metadata: dict[str, Any]) -> dict[str, Any]:
    """A data record (as checkpoints carry) that leaves the exported inputs in physical units."""
    inputs = {
        entry["name"]: {
            "sensor": entry["sensor"],
            "scale": 1.0,
            "bands": list(entry["bands"]),
            "mean": [0.0] * len(entry["bands"]),
            "std": [1.0] * len(entry["bands"]),
        }
        for entry in metadata["inputs"]
    }
    return {
        "format": RECORD_FORMAT,
        "sources": {metadata["source"]: {"inputs": inputs, "frames": metadata["frames"]}},
    }


def predict_exported(
    model: OnnxModel, batch: Batch, vocabularies: dict[str, list[str]]
) -> StsunOutput:
    """Run ``batch`` (physical values) through the exported graph.

    Args:
        model: the exported file.
        batch: a batch whose rows index ``vocabularies``.
        vocabularies: the datamodule's ``{"tasks", "categories", "variables"}``.

    Raises:
        ConfigError: the batch asks for another task, other categories or variables,
            other bands or other outputs than the file serves (naming both).
    """
    meta = model.metadata
    where = f"onnx: {model.path.name} serves"
    task = vocabularies["tasks"][int(batch.task[0])]
    if task != meta["task"]:
        raise ConfigError(f"{where} task {meta['task']!r}, but the datamodule asks for {task!r}.")
    classification = batch.categories is not None
    kind = "categories" if classification else "variables"
    rows = batch.categories if classification else batch.variables
    asked = [] if rows is None else [vocabularies[kind][int(r)] for r in rows[0]]
    if asked != list(meta[kind]):
        raise ConfigError(
            f"{where} {kind} {meta[kind]} (in this order), but the datamodule asks for {asked}."
        )
    wavelengths = torch.tensor([b["wavelength_nm"] for b in meta["bands"]])
    if batch.wavelength_nm.shape[1] != len(wavelengths) or not torch.allclose(
        batch.wavelength_nm[0].cpu().float(), wavelengths
    ):
        names = [f"{b['input']}:{b['name']}" for b in meta["bands"]]
        raise ConfigError(
            f"{where} bands {names}, but the datamodule reads "
            f"{batch.wavelength_nm.shape[1]} bands of other wavelengths "
            f"({batch.wavelength_nm[0].tolist()} nm)."
        )
    expected = output_slots(meta["outputs"], batch.time_mask)
    if not torch.equal(batch.outputs.float().cpu(), expected.cpu()):
        raise ConfigError(f"{where} outputs {meta['outputs']!r}; the datamodule asks for others.")
    prediction = model(batch.image, batch.dates, batch.gsd_m).to(batch.image.device)
    return StsunOutput(logits=prediction) if classification else StsunOutput(values=prediction)
