"""A NaN or inf loss skips its step with a warning; too many stop the run, clearly."""

import logging

import pytest
import torch

from conftest import make_batch
from stsun_lightning.tasks.module import StsunTask

SOURCES = {
    "test": {"task": "semantic_segmentation", "categories": ["water", "tree_cover", "cropland"]}
}


def test_nonfinite_losses_are_skipped_then_stop_the_run(monkeypatch, caplog):
    task = StsunTask("stsun_tiny", sources=SOURCES, max_nonfinite_losses=2)
    monkeypatch.setattr(
        StsunTask, "_loss", staticmethod(lambda output, batch: torch.tensor(float("nan")))
    )
    batch = make_batch(task=0, categories=[0, 1, 2])
    with caplog.at_level(logging.WARNING, logger="stsun_lightning.tasks.module"):
        for _ in range(2):
            loss = task.training_step(batch, 0)
            assert float(loss) == 0.0 and loss.requires_grad
            loss.backward()
            assert all(p.grad is not None and not p.grad.any() for p in task.parameters())
    assert (
        "Non-finite loss (nan) on source 'test'" in caplog.text
        and "(2 of at most 2)" in caplog.text
    )
    with pytest.raises(
        RuntimeError,
        match=r"Stopping: 3 non-finite losses \(limit max_nonfinite_losses=2\).*'test'",
    ):
        task.training_step(batch, 0)
