"""``stsun export``: a checkpoint and what to serve, to an ONNX file.

``stsun export --ckpt_path model.ckpt --output model.onnx [--source NAME] [--task TASK]
[--categories a,b] [--outputs state] [--dates 1] [--bands s2=B02,B03,...]``, or the same
keys in a YAML file given with ``--config``. What is not given comes from the checkpoint:
the source (the only one the checkpoint's data record has), its task and class names, its
inputs and their bands with the statistics training normalised with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stsun_lightning.data.record import choose_source, parse_record
from stsun_lightning.data.sensors import get_sensor
from stsun_lightning.data.sources import parse_sources
from stsun_lightning.errors import ConfigError, unknown_name_error
from stsun_lightning.export.onnx import export_onnx
from stsun_lightning.export.served import ServedBand, ServedStsun, ServingSpec

__all__ = ["export_model", "served_from_checkpoint"]


def served_from_checkpoint(
    ckpt_path: str | Path,
    source: str | None = None,
    task: str | None = None,
    categories: Sequence[str] | None = None,
    variables: Sequence[str] | None = None,
    outputs: str = "state",
    dates: int = 1,
    bands: Mapping[str, Sequence[str]] | None = None,
) -> tuple[ServedStsun, dict[str, Any]]:
    """The network of a checkpoint with what it serves fixed inside.

    Args:
        ckpt_path: a checkpoint of ``stsun fit`` (with its data record).
        source: the checkpoint's source whose inputs, statistics and frame rule to fix
            (default: the only one).
        task: task to serve (default: the source's).
        categories: categories to serve, any subset of the model's in any order
            (default: the source's, unless ``variables`` are given).
        variables: regression variables to serve instead.
        outputs: "state", "change", "aggregate" or "per_date".
        dates: T, the frames each input image holds.
        bands: per input, the bands to serve (default: every band the record has).

    Returns:
        The served module and ``{"fingerprint", "source", "frames"}`` for the metadata.

    Raises:
        ConfigError: no data record, an unknown source, input, band, task or category
            (naming what the checkpoint has).
    """
    from stsun_lightning.predict.fingerprint import model_fingerprint
    from stsun_lightning.tasks.module import StsunTask

    task_module = StsunTask.load_from_checkpoint(str(ckpt_path), map_location="cpu").eval()
    records = parse_record(task_module.data_record)
    if not records:
        raise ConfigError(
            f"ckpt_path: {str(ckpt_path)!r} carries no data record (band statistics): "
            "export needs a checkpoint written by `stsun fit` with this version."
        )
    if source is None:
        if len(records) != 1:
            raise ConfigError(
                f"source: the checkpoint has several sources {sorted(records)}: name one."
            )
        source = next(iter(records))
    source = choose_source(records, {}, source)
    record = records[source]
    trained = {s.name: s for s in parse_sources(task_module.hparams.sources or {})}.get(source)
    if dates < 1:
        raise ConfigError(f"dates must be at least 1, got {dates}.")
    if categories is None and variables is None:
        if trained is None:
            raise ConfigError(f"Name the categories or variables to serve for source {source!r}.")
        categories, variables = trained.categories, trained.variables
    served_bands = []
    chosen = dict(bands or {})
    for name in chosen:
        if name not in record.inputs:
            raise unknown_name_error("input", name, record.inputs, where=f"source {source!r}")
    for name, entry in record.inputs.items():
        statistics = entry.statistics
        if name in chosen:
            statistics = statistics.select(chosen[name], f"Input {name!r} of source {source!r}")
        sensor = get_sensor(entry.sensor, where=f"input {name!r}")
        metadata = sensor.metadata(statistics.bands)
        for i, band in enumerate(statistics.bands):
            served_bands.append(
                ServedBand(
                    name,
                    entry.sensor,
                    band,
                    float(metadata["wavelength_nm"][i]),
                    float(metadata["bandwidth_nm"][i]),
                    int(metadata["modality"][i]),
                    float(statistics.mean[i]),
                    float(statistics.std[i]),
                )
            )
    spec = ServingSpec(
        tuple(served_bands),
        task or (trained.task if trained else "semantic_segmentation"),
        tuple(categories or ()),
        tuple(variables or ()),
        outputs,
        dates,
    )
    served = ServedStsun(task_module.model, spec)
    facts = {
        "fingerprint": model_fingerprint(task_module),
        "source": source,
        "frames": record.frames.to_dict(),
    }
    return served, facts


def export_model(
    ckpt_path: str,
    output: str = "model.onnx",
    source: str | None = None,
    task: str | None = None,
    categories: list[str] | None = None,
    variables: list[str] | None = None,
    outputs: str = "state",
    dates: int = 1,
    bands: dict[str, list[str]] | None = None,
    batch_size: int = 1,
) -> dict[str, Any]:
    """Export a checkpoint to ONNX (``stsun export``).

    Args:
        ckpt_path: checkpoint of ``stsun fit``.
        output: the ``.onnx`` file to write (atomically; nothing is written on an error).
        source: the checkpoint's source to serve (default: the only one).
        task: task to serve (default: the source's).
        categories: categories to serve (default: the source's).
        variables: regression variables to serve instead of categories.
        outputs: "state", "change", "aggregate" or "per_date".
        dates: frames per image (T).
        bands: per input, the bands to serve (default: all the checkpoint has).
        batch_size: batch size of the graph (onnxruntime callers chunk any batch).

    Returns:
        The metadata written into the file.
    """
    served, facts = served_from_checkpoint(
        ckpt_path, source, task, categories, variables, outputs, dates, bands
    )
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
    return export_onnx(
        served, output, facts["fingerprint"], facts["source"], facts["frames"], batch_size
    )


def export_main(args: Sequence[str]) -> None:
    """Parse ``stsun export``'s arguments and export."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(
        prog="stsun export", description=export_model.__doc__, exit_on_error=False
    )
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_function_arguments(export_model)
    try:
        config = parser.parse_args(list(args))
    except Exception as error:  # jsonargparse's ArgumentError
        raise ConfigError(f"stsun export: {error}") from None
    config.pop("config", None)
    metadata = export_model(**{k: v for k, v in config.as_dict().items() if k != "__path__"})
    print(
        f"Exported {metadata['task']} over {', '.join(metadata['categories'] or metadata['variables'])} "
        f"to {config.output} (inputs image (B={metadata['batch_size']}, T={metadata['dates']}, "
        f"C={len(metadata['bands'])}, H, W), dates, gsd_m; H and W multiples of "
        f"{metadata['size_multiple']} from {metadata['min_size']})."
    )
