"""A step with a non-finite loss moves nothing; too many stop the run with a clear message.

Trained through Lightning's own loop, since that is where a skip could leak: AdamW's
momentum and weight decay, its step count, the learning-rate schedule. The two-rank case
(one rank sees the NaN) is in tests/test_distributed.py.
"""

import logging

import lightning as L
import pytest
import torch
from example_data import SOURCES, ExampleDataModule, example_batches, overflowing, quiet_trainer

from stsun_lightning.tasks.module import StsunTask
from stsun_lightning.tasks.nonfinite import NonFiniteLossError
from stsun_lightning.tasks.schedule import warmup_cosine


class StateBeforeEachStep(L.Callback):
    """Copies of the parameters, AdamW's state and the learning rate before every step."""

    def __init__(self) -> None:
        self.states: list[dict] = []

    def _snapshot(self, trainer: L.Trainer, task: L.LightningModule) -> None:
        optimizer = trainer.optimizers[0]
        self.states.append(
            {
                "params": {n: p.detach().clone() for n, p in task.named_parameters()},
                "optimizer": {
                    (i, k): v.clone()
                    for i, state in enumerate(optimizer.state.values())
                    for k, v in state.items()
                },
                "lr": [g["lr"] for g in optimizer.param_groups],
            }
        )

    def on_train_batch_start(self, trainer, task, batch, batch_idx):
        self._snapshot(trainer, task)

    def on_train_end(self, trainer, task):
        self._snapshot(trainer, task)


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_nonfinite_step_moves_no_parameter_optimiser_state_or_schedule(caplog):
    torch.manual_seed(0)
    task = StsunTask("stsun_tiny", sources=SOURCES, warmup_steps=2, weight_decay=0.05)
    batches = example_batches(5)
    overflowing(batches[2])
    recorder = StateBeforeEachStep()
    trainer = quiet_trainer(max_steps=5, limit_val_batches=0, callbacks=[recorder])
    with caplog.at_level(logging.WARNING, logger="stsun_lightning.tasks.nonfinite"):
        trainer.fit(task, ExampleDataModule(batches))

    before, after = recorder.states[2], recorder.states[3]
    assert same(before["params"], after["params"]), "a parameter moved in the skipped step"
    assert same(before["optimizer"], after["optimizer"]), "AdamW's state moved"
    assert before["lr"] == after["lr"], "the schedule advanced"
    # The steps around it do move all three (so the comparison above can fail).
    for i in (1, 3):
        assert not same(recorder.states[i]["params"], recorder.states[i + 1]["params"])
        assert not same(recorder.states[i]["optimizer"], recorder.states[i + 1]["optimizer"])
        assert recorder.states[i]["lr"] != recorder.states[i + 1]["lr"]
    assert task.nonfinite.skipped == 1
    assert "Non-finite loss on source 'landcover' (loss nan) at step 2" in caplog.text
    assert "(1 of at most 10)" in caplog.text


def test_the_schedule_resumes_where_the_skip_held_it():
    torch.manual_seed(0)
    task = StsunTask("stsun_tiny", sources=SOURCES, warmup_steps=1)
    batches = example_batches(4)
    overflowing(batches[2])
    recorder = StateBeforeEachStep()
    quiet_trainer(max_steps=4, limit_val_batches=0, callbacks=[recorder]).fit(
        task, ExampleDataModule(batches)
    )
    factor = warmup_cosine(total_steps=4, warmup_steps=1, floor=task.hparams.min_lr_ratio)
    rates = [s["lr"][0] / task.hparams.learning_rate for s in recorder.states]
    # Before steps 0-3 and at the end: step 2 was skipped, so the schedule is one behind.
    assert rates == pytest.approx([factor(0), factor(1), factor(2), factor(2), factor(3)])


def test_too_many_nonfinite_steps_stop_the_run_naming_the_source():
    task = StsunTask("stsun_tiny", sources=SOURCES, max_nonfinite_losses=1)
    batches = example_batches(4)
    overflowing(batches[0])
    batches[3].target.fill_(-3.4e38)  # an undeclared float nodata: the L1 overflows to inf
    with pytest.raises(
        NonFiniteLossError,
        match=r"Stopping at step 3: 2 steps had a non-finite loss \(limit "
        r"max_nonfinite_losses=1\); the last on source 'height' \(loss inf\)",
    ):
        quiet_trainer(max_steps=4, limit_val_batches=0).fit(task, ExampleDataModule(batches))


def test_the_skip_count_travels_in_the_checkpoint():
    task = StsunTask("stsun_tiny", sources=SOURCES)
    task.nonfinite.skipped = 3
    checkpoint = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}
    task.on_save_checkpoint(checkpoint)
    other = StsunTask("stsun_tiny", sources=SOURCES)
    other.on_load_checkpoint(checkpoint)
    assert other.nonfinite.skipped == 3


def test_a_nonfinite_micro_batch_skips_its_whole_accumulated_step():
    torch.manual_seed(0)
    task = StsunTask("stsun_tiny", sources=SOURCES)
    batches = example_batches(4)
    overflowing(batches[1])  # the second micro-batch of step 0
    recorder = StateBeforeEachStep()
    trainer = quiet_trainer(
        max_steps=2, accumulate_grad_batches=2, limit_val_batches=0, callbacks=[recorder]
    )
    trainer.fit(task, ExampleDataModule(batches))
    # States before each micro-batch (0, 1: step 0; 2, 3: step 1) and at the end.
    start, after_step_0, end = recorder.states[0], recorder.states[2], recorder.states[4]
    assert same(start["params"], after_step_0["params"]) and start["lr"] == after_step_0["lr"]
    assert not same(after_step_0["params"], end["params"])
    assert task.nonfinite.skipped == 1 and trainer.global_step == 2
