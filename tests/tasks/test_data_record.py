"""The datamodule's record of its reader travels in the checkpoint and comes back to it.

A reader's datamodule (``data_record`` / ``load_data_record``) gets the record before
Lightning asks it for any loader, whether the checkpoint is given to the trainer
(``ckpt_path``, restored after the setup hooks) or loaded into the task first.
"""

import pytest
import torch
from example_data import SOURCES, ExampleDataModule, example_batches, quiet_trainer

from stsun_lightning.tasks.module import StsunTask

RECORD = {
    "inputs": {"s2": {"bands": ["B02", "B03"], "mean": [0.1, 0.2], "std": [0.01, 0.02]}},
    "frames": "union of dates",
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    task = StsunTask("stsun_tiny", sources=SOURCES)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(task, ExampleDataModule(example_batches(2), record=RECORD))
    path = tmp_path_factory.mktemp("record") / "task.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_the_record_is_saved_as_plain_data(checkpoint):
    assert torch.load(checkpoint, weights_only=True)["stsun_data"] == RECORD


@pytest.mark.parametrize(
    ("stage", "loader"), [("predict", "predict_dataloader"), ("validate", "val_dataloader")]
)
def test_the_record_reaches_the_datamodule_before_its_loaders_via_ckpt_path(
    checkpoint, stage, loader
):
    datamodule = ExampleDataModule(example_batches(2))  # a fresh reader: no statistics
    trainer = quiet_trainer()
    getattr(trainer, stage)(
        StsunTask("stsun_tiny", sources=SOURCES), datamodule=datamodule, ckpt_path=checkpoint
    )
    assert datamodule.loaded == RECORD
    assert datamodule.calls.index("load_data_record") < datamodule.calls.index(loader)


@pytest.mark.parametrize(
    ("stage", "loader"), [("predict", "predict_dataloader"), ("validate", "val_dataloader")]
)
def test_a_task_loaded_from_the_checkpoint_gives_the_record_to_its_next_datamodule(
    checkpoint, stage, loader
):
    task = StsunTask.load_from_checkpoint(checkpoint)
    assert task.data_record == RECORD
    datamodule = ExampleDataModule(example_batches(2))
    getattr(quiet_trainer(), stage)(task, datamodule=datamodule)
    assert datamodule.loaded == RECORD
    assert datamodule.calls.index("load_data_record") < datamodule.calls.index(loader)


def test_a_datamodule_with_nothing_to_record_adds_nothing(tmp_path):
    task = StsunTask("stsun_tiny", sources=SOURCES)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(task, ExampleDataModule(example_batches(2), record=None))
    trainer.save_checkpoint(tmp_path / "plain.ckpt")
    assert "stsun_data" not in torch.load(tmp_path / "plain.ckpt", weights_only=True)
    assert StsunTask.load_from_checkpoint(tmp_path / "plain.ckpt").data_record is None
