"""A fingerprint of the weights that predict, recorded in every output file.

A rerun compares it with the one in the file, so a map made by other weights is redone.
It is a hash of the module's state dict (names, dtypes, shapes and bytes of every tensor,
and the extra state, such as the vocabularies' names), not of the checkpoint file: it
names exactly the weights that made the map, whether they came from a checkpoint
(``--ckpt_path``) or were passed in memory, and is not changed by what a checkpoint
holds besides them (optimiser state, epoch, callbacks). One pass over the weights costs
about what reading them from disk does (see ``docs/architecture.md``).
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["model_fingerprint"]


def model_fingerprint(module: torch.nn.Module) -> str:
    """``blake2b:<32 hex digits>`` of ``module.state_dict()``, the same on every device and rank.

    A module that predicts with weights held elsewhere (an exported file) names them in
    its ``weights_fingerprint`` attribute, which is returned instead.
    """
    declared = getattr(module, "weights_fingerprint", None)
    if isinstance(declared, str):
        return declared
    digest = hashlib.blake2b(digest_size=16)
    for name, value in sorted(module.state_dict().items()):
        digest.update(name.encode())
        if isinstance(value, torch.Tensor):
            tensor = value.detach().to("cpu").contiguous()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            # Viewed as bytes, so that any dtype (bfloat16 too) hashes without a cast.
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    return f"blake2b:{digest.hexdigest()}"
