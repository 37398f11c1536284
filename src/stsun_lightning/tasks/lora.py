"""Low-rank adaptation (LoRA) of the trunk's linear layers, through ``peft``.

A fine-tune run with ``lora: {rank: 8, alpha: 16}`` wraps every ``nn.Linear`` of the two
trunks (dates and slots) in a ``peft`` LoRA layer: the layer's own weight stays frozen
and a low-rank update ``alpha / rank × B A`` (A: (rank, Din), B: (Dout, rank), B = 0 at
the start) is learnt. The adapters live only while the run trains:

- every checkpoint the run writes holds plain weights (``W + alpha / rank × B A``) under
  the ordinary keys, so it predicts, validates and exports without ``peft`` installed;
  the unmerged adapter state goes beside it under ``stsun_lora`` (for ``--ckpt_path
  last``, which restores the adapters and their optimiser state exactly);
- at the end of fit the adapters are merged into the layers, which become plain
  ``nn.Linear`` again (:func:`merge_lora`).

``peft`` is the optional extra ``lora`` (``pip install 'stsun-lightning[lora]'``).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from stsun_lightning.errors import ConfigError

__all__ = [
    "LORA_STATE_KEY",
    "LoraOptions",
    "add_lora",
    "lora_layers",
    "lora_state_to_plain",
    "merge_lora",
    "plain_state_to_lora",
]

LORA_STATE_KEY = "stsun_lora"
"""Checkpoint key of the unmerged adapter state (see the module docstring)."""

_ADAPTED = ("date_trunk", "slot_trunk")
_ADAPTER = "default"


@dataclass(frozen=True)
class LoraOptions:
    """What ``model.lora`` says.

    Attributes:
        rank: rank r of the update.
        alpha: the update is scaled by alpha / r.
    """

    rank: int = 8
    alpha: float = 16.0

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> LoraOptions:
        """Read ``{rank, alpha}``; anything else, or a value out of range, is an error.

        Raises:
            ConfigError: naming the key and what it should be.
        """
        unknown = sorted(set(options) - {"rank", "alpha"})
        if unknown:
            raise ConfigError(
                f"model.lora has unknown keys {unknown}; it takes 'rank' (an integer >= 1) and "
                "'alpha' (a number > 0), e.g. {rank: 8, alpha: 16}."
            )
        rank, alpha = options.get("rank", cls.rank), options.get("alpha", cls.alpha)
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
            raise ConfigError(f"model.lora.rank must be an integer >= 1, got {rank!r}.")
        if not isinstance(alpha, int | float) or isinstance(alpha, bool) or alpha <= 0:
            raise ConfigError(f"model.lora.alpha must be a number > 0, got {alpha!r}.")
        return cls(rank, float(alpha))


def _targets(network: nn.Module) -> list[str]:
    """Names of the trunks' ``nn.Linear`` layers."""
    return [
        name
        for name, module in network.named_modules()
        if isinstance(module, nn.Linear) and name.split(".")[0] in _ADAPTED
    ]


def add_lora(network: nn.Module, options: LoraOptions) -> list[str]:
    """Wrap the trunks' linear layers in LoRA layers, in place.

    The wrapped layers' own weights are frozen and the adapters trainable; every other
    parameter keeps its ``requires_grad`` (``peft`` would freeze them all).

    Args:
        network: the network (a :class:`~stsun_lightning.models.Stsun`).
        options: rank and alpha.

    Returns:
        The names of the wrapped layers.

    Raises:
        ConfigError: ``peft`` is not installed.
    """
    try:
        import peft
    except ImportError as error:
        raise ConfigError(
            "model.lora needs the 'peft' library: pip install 'stsun-lightning[lora]'."
        ) from error
    targets = _targets(network)
    trainable = {name: p.requires_grad for name, p in network.named_parameters()}
    config = peft.LoraConfig(
        r=options.rank,
        lora_alpha=options.alpha,
        lora_dropout=0.0,  # deterministic: the folded modulation reads the layer as affine
        target_modules=targets,
        bias="none",
    )
    peft.inject_adapter_in_model(config, network, adapter_name=_ADAPTER)
    for name, parameter in network.named_parameters():
        if ".lora_" in name:
            parameter.requires_grad_(True)
        elif ".base_layer." in name:
            parameter.requires_grad_(False)
        else:
            parameter.requires_grad_(trainable[name])
    return targets


def lora_layers(network: nn.Module) -> dict[str, nn.Module]:
    """The LoRA layers of ``network`` by name (empty without ``peft`` or adapters)."""
    if "peft" not in sys.modules:  # no adapter without peft imported; importing it takes seconds
        return {}
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return {}
    return {n: m for n, m in network.named_modules() if isinstance(m, LoraLayer)}


@torch.no_grad()
def merge_lora(network: nn.Module) -> list[str]:
    """Merge every adapter into its layer and put the plain ``nn.Linear`` back.

    Returns:
        The names of the layers merged.
    """
    layers = lora_layers(network)
    for name, layer in layers.items():
        layer.merge(adapter_names=[_ADAPTER])
        parent_name, _, child = name.rpartition(".")
        parent = network.get_submodule(parent_name) if parent_name else network
        setattr(parent, child, layer.get_base_layer())
    return list(layers)


@torch.no_grad()
def lora_state_to_plain(
    state_dict: MutableMapping[str, Any], network: nn.Module, prefix: str
) -> dict[str, Tensor]:
    """Replace the adapters' entries of a state dict by the merged plain weights, in place.

    Args:
        state_dict: the state dict of a module holding ``network`` under ``prefix``.
        network: the network with its LoRA layers.
        prefix: ``network``'s key prefix in ``state_dict`` (``"model."`` in a task).

    Returns:
        The entries taken out (the wrapped layers' own weights and the adapters), to
        restore with :func:`plain_state_to_lora`.
    """
    taken: dict[str, Tensor] = {}
    for name, layer in lora_layers(network).items():
        key = f"{prefix}{name}."
        for entry in [k for k in state_dict if k.startswith(key)]:
            taken[entry] = state_dict.pop(entry)
        base = layer.get_base_layer()
        weight = base.weight.detach()
        if not layer.merged:
            weight = weight + layer.get_delta_weight(_ADAPTER).to(weight)
        state_dict[key + "weight"] = weight
        if base.bias is not None:
            state_dict[key + "bias"] = base.bias.detach()
    return taken


def plain_state_to_lora(
    state_dict: MutableMapping[str, Any],
    network: nn.Module,
    prefix: str,
    adapters: Mapping[str, Tensor] | None,
) -> None:
    """The inverse of :func:`lora_state_to_plain`, in place, for ``network``'s LoRA layers.

    With the entries :func:`lora_state_to_plain` took out, the adapters come back as
    they were. Without them (a plain checkpoint), the plain weights become the wrapped
    layers' own and the adapters keep their current (initial) values.

    Args:
        state_dict: a state dict with plain weights under the ordinary keys.
        network: the network with its LoRA layers.
        prefix: ``network``'s key prefix in ``state_dict``.
        adapters: the checkpoint's ``stsun_lora`` entry, or None.
    """
    for name, layer in lora_layers(network).items():
        key = f"{prefix}{name}."
        saved = {k: v for k, v in (adapters or {}).items() if k.startswith(key)}
        weight, bias = state_dict.pop(key + "weight", None), state_dict.pop(key + "bias", None)
        if saved:
            state_dict.update(saved)
            continue
        if weight is not None:
            state_dict[key + "base_layer.weight"] = weight
        if bias is not None:
            state_dict[key + "base_layer.bias"] = bias
        for entry, value in layer.state_dict(prefix=key).items():
            state_dict.setdefault(entry, value)
