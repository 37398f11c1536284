import pytest
import torch

from stsun_lightning.data.sources import SourceInfo
from stsun_lightning.tasks.metrics import SourceMetrics, class_scores


def test_class_scores_by_hand():
    # rows: target, columns: prediction; class 2 occurs nowhere.
    confusion = torch.tensor([[3, 1, 0], [1, 1, 0], [0, 0, 0]])
    scores = class_scores(confusion, ("water", "building", "cloud"))
    assert scores["iou_water"] == pytest.approx(3 / 5)
    assert scores["iou_building"] == pytest.approx(1 / 3)
    assert "iou_cloud" not in scores  # absent: not a failure
    assert scores["miou"] == pytest.approx((3 / 5 + 1 / 3) / 2)
    assert scores["f1_water"] == pytest.approx(2 * 3 / (4 + 4))
    assert scores["accuracy"] == pytest.approx(4 / 6)


def test_source_metrics_ignore_unlabelled_pixels_and_reset():
    metrics = SourceMetrics(SourceInfo("s", "semantic_segmentation", categories=("a", "b")))
    logits = torch.zeros(1, 1, 2, 2, 2)
    logits[0, 0, 1] = 1.0  # predicts b everywhere
    target = torch.tensor([[[[1, 1], [0, -1]]]])
    metrics.update(logits, target)
    scores = metrics.compute()
    assert scores["accuracy"] == pytest.approx(2 / 3)
    assert scores["iou_b"] == pytest.approx(2 / 3)
    metrics.reset()
    assert not metrics.updated


def test_regression_metrics_skip_nan_targets():
    metrics = SourceMetrics(SourceInfo("h", "regression", variables=("canopy_height",)))
    values = torch.tensor([1.0, 2.0, 3.0]).view(1, 1, 1, 1, 3)
    target = torch.tensor([2.0, float("nan"), 5.0]).view(1, 1, 1, 1, 3)
    metrics.update(values, target)
    scores = metrics.compute()
    assert scores["mae"] == pytest.approx(1.5)
    assert scores["rmse"] == pytest.approx(((1 + 4) / 2) ** 0.5)
