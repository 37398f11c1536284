"""Export a trained network to ONNX, and run the exported file with onnxruntime.

The graph is captured with ``torch.export`` (the dynamo-based ONNX exporter,
``torch.onnx.export(..., dynamo=True)``), which keeps height and width symbolic. The
TorchScript exporter (``dynamo=False``) cannot serve here: it records Python-level loops
with the sizes of the example (the windowed attention's windows per row), so a graph
traced at one window size is wrong at another, and it fails on the vocabularies' extra
state. What the graph accepts:

- height and width: any multiple of ``size_multiple`` (patch size × attention window,
  in pixels) from ``min_size`` (three windows) on. At a multiple every window of the
  attention has one of a few fixed shapes whose number is symbolic; from three windows
  on no count is 1, which the exporter would otherwise fix. :class:`OnnxModel` pads
  any other window with NaN (no data) at the bottom and right, which the network's
  padding rules make exact, and crops the result.
- batch: fixed at export (``batch_size``): the hypernetwork tokeniser convolves each
  item with its own kernel, one grouped convolution whose group count ONNX's ``Conv``
  takes as an attribute. :class:`OnnxModel` runs any batch in chunks of that size.
- frames: T is fixed at export (``dates``).

The export is written to a temporary file beside the target and moved into place, and
every check (task, categories, bands) runs before anything is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from stsun_lightning.errors import ConfigError, InputFileError, MissingFileError
from stsun_lightning.export.served import ServedBand, ServedStsun, ServingSpec
from stsun_lightning.io import atomic_path

__all__ = [
    "METADATA_KEY",
    "OnnxModel",
    "export_onnx",
    "graph_size",
    "read_metadata",
]

METADATA_KEY = "stsun"
"""Key of the JSON record in the ONNX file's ``metadata_props``."""

EXPORT_FORMAT = 1


def graph_size(size: int, multiple: int, minimum: int) -> int:
    """The smallest size the graph accepts that holds ``size`` pixels."""
    return max(minimum, math.ceil(size / multiple) * multiple)


def export_onnx(
    served: ServedStsun,
    output: str | Path,
    fingerprint: str,
    source: str,
    frames: Mapping[str, Any],
    batch_size: int = 1,
) -> dict[str, Any]:
    """Write ``served`` to ``output`` as ONNX, with its record in ``metadata_props``.

    Args:
        served: the network with what it serves fixed inside.
        output: the ``.onnx`` path (written atomically).
        fingerprint: :func:`~stsun_lightning.predict.fingerprint.model_fingerprint` of
            the exported weights (recorded; written maps name it as their ``MODEL``).
        source: the training source whose statistics and frame rule were fixed.
        frames: the frame rule (``FrameRule.to_dict()``).
        batch_size: B of the graph.

    Returns:
        The metadata record written (see :func:`read_metadata`).
    """
    from torch.export import Dim

    network, spec = served.network, served.spec
    multiple = network.patch_size * network.date_trunk.window
    minimum = 3 * multiple
    metadata = {
        "format": EXPORT_FORMAT,
        "source": source,
        "inputs": _inputs(spec),
        "bands": [
            {
                k: getattr(b, k)
                for k in ("input", "name", "wavelength_nm", "bandwidth_nm", "modality")
            }
            for b in spec.bands
        ],
        "statistics": {
            name: {
                "bands": [b.name for b in bands],
                "mean": [b.mean for b in bands],
                "std": [b.std for b in bands],
            }
            for name, bands in _by_input(spec).items()
        },
        "frames": dict(frames),
        "task": spec.task,
        "categories": list(spec.categories),
        "variables": list(spec.variables),
        "outputs": spec.outputs,
        "dates": spec.dates,
        "batch_size": batch_size,
        "patch_size": network.patch_size,
        "size_multiple": multiple,
        "min_size": minimum,
        "model": fingerprint,
        "graph_inputs": {
            "image": "(B, T, C, H, W) float32 physical values (stored × scale), NaN = no data",
            "dates": "(B, T) float32 days since 1970-01-01, NaN = unknown",
            "gsd_m": "(B,) float32 metres per pixel",
        },
        "graph_output": (
            "logits (B, To, K, H, W)" if spec.categories else "values (B, To, V, H, W)"
        ),
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
    }
    served = served.eval()
    example = _example(spec, batch_size, minimum + multiple, minimum)
    rows, cols = Dim("rows", min=minimum // multiple), Dim("cols", min=minimum // multiple)
    dynamic = {"image": {3: multiple * rows, 4: multiple * cols}, "dates": None, "gsd_m": None}
    output_name = "logits" if spec.categories else "values"
    with torch.no_grad():
        program = torch.onnx.export(
            served, example, dynamo=True, dynamic_shapes=dynamic, verbose=False,
            input_names=["image", "dates", "gsd_m"], output_names=[output_name],
        )  # fmt: skip
    assert program is not None
    model = program.model_proto
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    model.doc_string = (
        f"STSUN {spec.task} over {', '.join(spec.names)}; inputs image/dates/gsd_m, "
        f"see metadata_props[{METADATA_KEY!r}]."
    )
    import onnx

    with atomic_path(output) as tmp:
        onnx.save_model(model, str(tmp))
    return metadata


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The record an exported file carries (what :func:`export_onnx` returned).

    Raises:
        MissingFileError: no file at ``path``.
        InputFileError: not an ONNX file of ``stsun export``.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"onnx: no exported model at {str(path)!r}.")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as error:  # onnx raises DecodeError and friends
        raise InputFileError(f"onnx: {str(path)!r} is not an ONNX file ({error}).") from None
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise InputFileError(
            f"onnx: {str(path)!r} has no {METADATA_KEY!r} metadata: export it with `stsun export`."
        )
    return json.loads(props[METADATA_KEY])


class OnnxModel:
    """An exported file run by onnxruntime on windows of any size and any batch.

    Args:
        path: the ``.onnx`` file.
        threads: onnxruntime's intra-op threads (0: its default).
    """

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        import onnxruntime

        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, image: Tensor, dates: Tensor, gsd_m: Tensor) -> Tensor:
        """Run the graph (see :class:`~stsun_lightning.export.served.ServedStsun`).

        Args:
            image: (B, T, C, H, W) physical values, NaN where there is no data.
            dates: (B, T).
            gsd_m: (B,).

        Returns:
            (B, To, K or V, H, W) float32 on the CPU.
        """
        meta = self.metadata
        b, t, c, height, width = image.shape
        if t != meta["dates"] or c != len(meta["bands"]):
            raise ConfigError(
                f"onnx: {self.path.name} takes {meta['dates']} dates of {len(meta['bands'])} "
                f"bands, got {t} dates of {c} bands."
            )
        multiple, minimum, chunk = meta["size_multiple"], meta["min_size"], meta["batch_size"]
        rows, cols = graph_size(height, multiple, minimum), graph_size(width, multiple, minimum)
        padded = np.full((b, t, c, rows, cols), np.nan, np.float32)
        padded[..., :height, :width] = image.detach().float().cpu().numpy()
        dates_np = dates.detach().float().cpu().numpy()
        gsd_np = gsd_m.detach().float().cpu().numpy()
        results = []
        for start in range(0, b, chunk):
            part = slice(start, start + chunk)
            real = len(range(b)[part])
            fill = np.arange(chunk) % real  # repeat items to fill the graph's batch
            (out,) = self.session.run(
                None,
                {
                    "image": padded[part][fill],
                    "dates": dates_np[part][fill],
                    "gsd_m": gsd_np[part][fill],
                },
            )
            results.append(out[:real, ..., :height, :width])
        return torch.from_numpy(np.ascontiguousarray(np.concatenate(results)))


def _by_input(spec: ServingSpec) -> dict[str, list[ServedBand]]:
    groups: dict[str, list[ServedBand]] = {}
    for band in spec.bands:
        groups.setdefault(band.input, []).append(band)
    return groups


def _inputs(spec: ServingSpec) -> list[dict[str, Any]]:
    return [
        {"name": name, "sensor": bands[0].sensor, "bands": [b.name for b in bands]}
        for name, bands in _by_input(spec).items()
    ]


def _example(spec: ServingSpec, batch: int, height: int, width: int) -> tuple[Tensor, ...]:
    """Example inputs: values near each band's mean, a third of the first rows without data.

    Rows without data at the top exercise the network's general path, which it takes in
    an exported graph anyway.
    """
    generator = torch.Generator().manual_seed(0)
    mean = torch.tensor([b.mean for b in spec.bands])[:, None, None]
    std = torch.tensor([b.std for b in spec.bands])[:, None, None]
    shape = (batch, spec.dates, len(spec.bands), height, width)
    image = mean + std * torch.randn(shape, generator=generator)
    image[..., : height // 3, : width // 3] = torch.nan
    dates = 19_000.0 + 30.0 * torch.arange(spec.dates, dtype=torch.float32)
    return image, dates.expand(batch, -1).contiguous(), torch.full((batch,), 10.0)
