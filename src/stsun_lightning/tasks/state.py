"""What a ``StsunTask`` checkpoint holds beside the weights, and the checks on loading it.

Beside Lightning's own entries (state dict, optimiser, scheduler, loops, the training
loader's position) a checkpoint carries, under keys of its own:

- ``stsun_checkpoint_format``: :data:`CHECKPOINT_FORMAT`;
- ``loss_balance``: :class:`~stsun_lightning.tasks.balance.LossBalance` state;
- ``nonfinite_steps``: the skipped-step count;
- ``rng_states``: the writing rank's random generators;
- ``stsun_data``: the datamodule's ``data_record()``, when it has one (what its reader did,
  e.g. band statistics), given back to a datamodule's ``load_data_record`` on loading.

All of it is plain data (dicts, lists, strings, numbers, tensors), so a checkpoint loads
with ``torch.load(weights_only=True)``, Lightning's default.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities.combined_loader import CombinedLoader
from torch import Tensor

from stsun_lightning.errors import ConfigError

__all__ = [
    "CHECKPOINT_FORMAT",
    "check_format",
    "check_shapes",
    "restore_loader_states",
    "rng_states",
    "set_rng_states",
]

CHECKPOINT_FORMAT = 2
"""Version of what ``StsunTask`` checkpoints hold beside the state dict.

1: ``loss_scale`` (running means, no longer used); 2: ``loss_balance``, ``nonfinite_steps``
and ``stsun_data``. Format 1 still loads; its loss balance is measured again.
"""


def check_format(checkpoint: Mapping[str, Any], path: str | None = None) -> None:
    """Refuse checkpoints of no STSUN task or of a newer format.

    Args:
        checkpoint: the loaded checkpoint.
        path: its file, named in the message where known.

    Raises:
        ConfigError: naming the format found and the newest one this version reads.
    """
    found = checkpoint.get("stsun_checkpoint_format")
    if found is None or found > CHECKPOINT_FORMAT:
        what = "has no 'stsun_checkpoint_format'" if found is None else f"has format {found}"
        which = f"the checkpoint {path}" if path else "this checkpoint"
        raise ConfigError(
            f"Cannot load {which}: it {what}, and this stsun-lightning reads "
            f"formats up to {CHECKPOINT_FORMAT} written by StsunTask. Load it with the "
            "version that wrote it, or upgrade."
        )


def check_shapes(
    own: Mapping[str, Tensor],
    checkpoint: Mapping[str, Any],
    network: Mapping[str, Any],
    path: str | None = None,
) -> None:
    """Name the parameters whose shapes differ (vocabulary tables may differ in rows).

    Args:
        own: this task's state dict.
        checkpoint: the checkpoint being loaded.
        network: this task's ``model`` (preset) and ``model_overrides``, for the message.
        path: the checkpoint's file, named in the message where known.

    Raises:
        ConfigError: naming the first parameters that differ and both presets.
    """
    differ = []
    for name, value in checkpoint.get("state_dict", {}).items():
        if not isinstance(value, Tensor) or name not in own:
            continue
        mine = own[name]
        table = name.endswith("embedding.weight")
        if (table and value.shape[1:] != mine.shape[1:]) or (
            not table and value.shape != mine.shape
        ):
            differ.append(
                f"{name}: {tuple(value.shape)} in the checkpoint, {tuple(mine.shape)} here"
            )
    if differ:
        hparams = checkpoint.get("hyper_parameters", {})
        trained = (
            f"preset {hparams.get('model', '?')!r}, overrides {hparams.get('model_overrides')}"
        )
        which = f"The network of the checkpoint {path}" if path else "The checkpoint's network"
        raise ConfigError(
            f"{which} ({trained}) has other shapes than this one "
            f"(preset {network.get('model')!r}, overrides {network.get('model_overrides')}): "
            + "; ".join(differ[:3])
            + (f"; and {len(differ) - 3} more" if len(differ) > 3 else "")
            + ". Build the task with the checkpoint's preset and overrides."
        )


def rng_states() -> dict[str, Any]:
    """The global random generators' states (Python, NumPy, torch CPU and CUDA).

    In types that ``torch.load(weights_only=True)`` accepts: NumPy's key array becomes a
    tensor.
    """
    name, keys, position, has_gauss, gauss = np.random.get_state(legacy=True)
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch_cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_states(states: Mapping[str, Any]) -> None:
    """Set the generators saved by :func:`rng_states` (those present)."""
    if "python" in states:
        random.setstate(states["python"])
    if "numpy" in states:
        name, keys, position, has_gauss, gauss = states["numpy"]
        keys = np.asarray(keys.numpy() if isinstance(keys, Tensor) else keys).astype(np.uint32)
        np.random.set_state((name, keys, position, has_gauss, gauss))
    if "torch" in states:
        torch.set_rng_state(states["torch"].cpu())
    if "torch_cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["torch_cuda"].cpu())


def restore_loader_states(train_dataloader: Any, states: list[dict[str, Any]]) -> None:
    """Give each stateful training loader its saved place in the epoch.

    Args:
        train_dataloader: the trainer's training loader(s), as Lightning holds them.
        states: the ``combined_loader`` entry of the checkpoint's fit loop, one per
            stateful loader; left alone when the numbers differ.
    """
    loaders = CombinedLoader(train_dataloader).flattened
    stateful = [d for d in loaders if callable(getattr(d, "load_state_dict", None))]
    if len(stateful) == len(states):
        for loader, state in zip(stateful, states, strict=True):
            loader.load_state_dict(state)
