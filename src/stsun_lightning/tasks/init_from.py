"""A new run from a checkpoint's weights: ``StsunTask(init_from=PATH)``.

Only the network's weights are taken: not the optimiser, the schedule, the loops, the
loss balance or the data record (the new datamodule computes and records its own
statistics, as any run does). The vocabularies merge (see
:mod:`stsun_lightning.models.vocabulary`): the checkpoint's names keep their rows bit
for bit, this run's other names get new rows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from stsun_lightning.errors import ConfigError, MissingFileError, unreadable_file_error
from stsun_lightning.models import Stsun
from stsun_lightning.models.vocabulary import VocabularyMerge
from stsun_lightning.tasks.state import check_format, check_shapes

__all__ = ["NETWORK_PREFIX", "describe_merges", "load_initial_weights"]

log = logging.getLogger(__name__)

NETWORK_PREFIX = "model."
"""Key prefix of the network's entries in a ``StsunTask`` checkpoint's state dict."""

_TABLES = ("category_embedding", "task_embedding", "variable_embedding")


def load_initial_weights(
    network: Stsun, path: str | Path, hparams: Mapping[str, Any]
) -> dict[str, VocabularyMerge]:
    """Load the network weights of a ``StsunTask`` checkpoint into ``network``.

    Args:
        network: this run's network, with this run's vocabularies.
        path: the checkpoint file.
        hparams: this task's hyperparameters (``model``, ``model_overrides``), for messages.

    Returns:
        Per table (``category_embedding``, ...), what the merge kept and added.

    Raises:
        MissingFileError: no such file.
        InputFileError: a file that is not a readable checkpoint.
        ConfigError: a checkpoint of no STSUN task, of a newer format, or of a network of
            other shapes or other parts; the message names the file and what differs.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"model.init_from: no checkpoint at {path}.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise unreadable_file_error(path, error, what="a checkpoint") from None
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(
            f"model.init_from: {path} holds no Lightning checkpoint (no 'state_dict'); "
            "give a .ckpt written by stsun fit."
        )
    check_format(checkpoint, path=str(path))
    state = {
        key[len(NETWORK_PREFIX) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(NETWORK_PREFIX)
    }
    own = network.state_dict()
    check_shapes(
        {NETWORK_PREFIX + k: v for k, v in own.items()}, checkpoint, hparams, path=str(path)
    )
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        trained = checkpoint.get("hyper_parameters", {})
        raise ConfigError(
            f"model.init_from: the network of {path} (preset {trained.get('model', '?')!r}, "
            f"overrides {trained.get('model_overrides')}) has other parts than this one "
            f"(preset {hparams.get('model')!r}, overrides {hparams.get('model_overrides')}): "
            f"only here: {missing[:3] or 'none'}; only in the checkpoint: "
            f"{unexpected[:3] or 'none'}. Build the task with the checkpoint's preset and "
            "overrides."
        )
    network.load_state_dict(state)
    merges = {}
    for table in _TABLES:
        merge = getattr(network, table).last_merge
        if merge is not None:
            merges[table] = merge
    return merges


def describe_merges(path: str | Path, merges: Mapping[str, VocabularyMerge]) -> str:
    """One line per vocabulary: which names the checkpoint had, which are new."""
    lines = [f"Starting from the weights of {path}:"]
    for merge in merges.values():
        kept = ", ".join(merge.kept) or "none"
        new = ", ".join(merge.new) or "none"
        lines.append(f"  {merge.kind} names kept ({len(merge.kept)}): {kept}; new: {new}.")
    return "\n".join(lines)
