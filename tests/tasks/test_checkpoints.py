"""Checkpoints of another format or another network get a clear error before loading."""

import pytest

from stsun_lightning.tasks.module import CHECKPOINT_FORMAT, StsunTask

SOURCES = {"landcover": {"task": "semantic_segmentation", "categories": ["water", "building"]}}


def checkpoint_of(task: StsunTask, **extra) -> dict:
    checkpoint = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}
    task.on_save_checkpoint(checkpoint)
    checkpoint.update(extra)
    return checkpoint


def test_a_checkpoint_carries_its_format_and_loads_format_1():
    task = StsunTask("stsun_tiny", sources=SOURCES)
    checkpoint = checkpoint_of(task)
    assert checkpoint["stsun_checkpoint_format"] == CHECKPOINT_FORMAT == 2
    # Format 1 kept running means under "loss_scale": loaded, and measured again.
    older = checkpoint_of(task, stsun_checkpoint_format=1, loss_scale={"x": 0.5})
    for key in ("loss_balance", "nonfinite_steps"):
        del older[key]
    other = StsunTask("stsun_tiny", sources=SOURCES)
    other.on_load_checkpoint(older)
    assert other.balance.batches == {} and other.nonfinite.skipped == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stsun_checkpoint_format": CHECKPOINT_FORMAT + 1}, f"has format {CHECKPOINT_FORMAT + 1}"),
        ({"stsun_checkpoint_format": None}, "has no 'stsun_checkpoint_format'"),
    ],
)
def test_a_checkpoint_of_another_format_is_refused(change, message):
    task = StsunTask("stsun_tiny", sources=SOURCES)
    checkpoint = checkpoint_of(task, **change)
    with pytest.raises(ValueError, match=message):
        StsunTask("stsun_tiny", sources=SOURCES).on_load_checkpoint(checkpoint)


def test_a_network_of_other_shapes_is_named_with_both_presets():
    wide = StsunTask("stsun_tiny", model_overrides={"dim": 96}, sources=SOURCES)
    with pytest.raises(
        ValueError, match=r"overrides \{'dim': 96\}\).*\(7, 96\) in the checkpoint, \(7, 64\) here"
    ):
        StsunTask("stsun_tiny", sources=SOURCES).on_load_checkpoint(checkpoint_of(wide))


def test_more_vocabulary_rows_are_not_a_shape_error():
    more = StsunTask(
        "stsun_tiny",
        sources={**SOURCES, "other": {"task": "semantic_segmentation", "categories": ["glacier"]}},
    )
    StsunTask("stsun_tiny", sources=SOURCES).on_load_checkpoint(checkpoint_of(more))
