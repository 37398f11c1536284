"""Shared fixtures: batches built from real sensor metadata."""

from __future__ import annotations

import pytest
import torch

from stsun_lightning.batch import Batch
from stsun_lightning.data.examples import example_batch

CATEGORIES = [
    "water",
    "tree_cover",
    "cropland",
    "building",
    "road",
    "bare_soil",
    "cloud",
    "no_change",
    "change",
]
VARIABLES = ["canopy_height", "ndvi"]


def make_batch(*args, **kwargs) -> Batch:
    kwargs.setdefault("source", "test")
    return example_batch(*args, **kwargs)


@pytest.fixture
def tiny_model():
    from stsun_lightning.models import create_model

    torch.manual_seed(0)
    return create_model("stsun_tiny", categories=CATEGORIES, variables=VARIABLES).eval()


__all__ = ["CATEGORIES", "VARIABLES", "make_batch"]
