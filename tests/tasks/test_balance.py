"""The loss balance: frozen after warm-up, blind to unlabelled batches, the same on all ranks."""

import io

import pytest
import torch
from example_data import SOURCES

from conftest import make_batch
from stsun_lightning.tasks.balance import LossBalance
from stsun_lightning.tasks.losses import IGNORE_INDEX, batch_loss
from stsun_lightning.tasks.module import StsunTask


def measure(balance: LossBalance, task: str, loss: float | None) -> None:
    balance.add(balance.report(task, loss, torch.device("cpu")))


def test_a_learnt_task_keeps_its_weight():
    balance = LossBalance(["regression", "semantic_segmentation"], warmup_batches=3)
    for loss in (2.0, 3.0, 1.0):
        measure(balance, "semantic_segmentation", loss)
    assert balance.normaliser("semantic_segmentation") == pytest.approx(2.0)
    assert balance.measuring() == ("regression",)
    # The loss falls 20x: a running mean would follow it down and multiply the task by
    # ~20; the frozen normaliser weighs the learnt task as it weighed it at the start.
    for _ in range(50):
        measure(balance, "semantic_segmentation", 0.1)
    assert balance.normaliser("semantic_segmentation") == pytest.approx(2.0)
    weight = balance(torch.tensor(0.1), "semantic_segmentation") / 0.1
    assert float(weight) == pytest.approx(0.5)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_a_batch_without_labelled_pixels_is_not_measured():
    # As with LoveDA's test files: a batch whose every pixel is unlabelled (loss 0).
    task = StsunTask("stsun_tiny", sources=SOURCES, loss_balance="initial_mean")
    empty = make_batch(task=0, categories=[0, 1, 2], source="landcover")
    empty.target.fill_(IGNORE_INDEX)
    assert float(task.training_step(empty, 0).detach()) == 0.0
    assert task.balance.batches == {}
    labelled = make_batch(task=0, categories=[0, 1, 2], seed=1, source="landcover")
    balanced = task.training_step(labelled, 1)
    # Divided by its own loss, the only measurement (not by a mean seeded with 0).
    assert float(balanced.detach()) == pytest.approx(1.0)
    assert task.balance.batches == {"semantic_segmentation": 1.0}


def test_ranks_that_add_the_same_sums_agree():
    tasks = ["regression", "semantic_segmentation"]
    ranks = [LossBalance(tasks, warmup_batches=2) for _ in range(2)]
    seen = [("semantic_segmentation", 1.0), ("regression", 4.0)]  # rank 0, rank 1
    for _ in range(2):
        reports = [
            r.report(task, loss, torch.device("cpu"))
            for r, (task, loss) in zip(ranks, seen, strict=True)
        ]
        total = torch.stack(reports).sum(0)  # what the all-reduce gives every rank
        for rank in ranks:
            rank.add(total)
    for rank in ranks:
        assert rank.normaliser("semantic_segmentation") == pytest.approx(1.0)
        assert rank.normaliser("regression") == pytest.approx(4.0)
        assert rank.measuring() == ()


def test_no_balance_divides_by_one_and_measures_nothing():
    balance = LossBalance(["regression"], mode="none")
    assert (
        balance.measuring() == ()
        and balance.report("regression", 5.0, torch.device("cpu")).numel() == 0
    )
    assert float(balance(torch.tensor(5.0), "regression")) == 5.0


def test_the_balance_round_trips_through_a_checkpoint():
    task = StsunTask("stsun_tiny", sources=SOURCES, loss_balance="initial_mean", balance_batches=4)
    measure(task.balance, "regression", 3.0)
    checkpoint = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}
    task.on_save_checkpoint(checkpoint)
    loaded = torch.load(_saved(checkpoint), weights_only=True)
    other = StsunTask("stsun_tiny", sources=SOURCES, loss_balance="initial_mean", balance_batches=4)
    other.on_load_checkpoint(loaded)
    assert other.balance.normaliser("regression") == pytest.approx(3.0)
    assert other.balance.batches == {"regression": 1.0}


def _saved(checkpoint: dict) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"loss_balance": "running_mean"}, "loss_balance must be one of initial_mean, none"),
        ({"balance_batches": 0}, "balance_batches must be at least 1, got 0"),
    ],
)
def test_bad_balance_arguments_are_named(arguments, message):
    with pytest.raises(ValueError, match=message):
        StsunTask("stsun_tiny", sources=SOURCES, **arguments)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_the_default_trains_on_the_raw_loss():
    # No position jitter: the two passes must see one network.
    task = StsunTask("stsun_tiny", sources=SOURCES, model_overrides={"position_jitter_m": 0.0})
    batch = make_batch(task=5, categories=None, variables=[0], source="height")
    raw = batch_loss(task(batch), batch).value
    torch.testing.assert_close(task.training_step(batch, 0).detach(), raw.detach())
    assert task.balance.measuring() == ()
