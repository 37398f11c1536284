"""Per-source scores: classes, values and semantic change, against numbers worked by hand."""

import math

import pytest
import torch

from stsun_lightning.data.sources import SourceInfo
from stsun_lightning.tasks.metrics import ClassMetrics, SourceMetrics, separated_kappa


def test_class_scores_by_hand():
    # Confusion (rows: target, columns: prediction) [[3, 1, 0], [1, 1, 0], [0, 0, 0]];
    # class 2 occurs nowhere.
    target = torch.tensor([0, 0, 0, 0, 1, 1])
    prediction = torch.tensor([0, 0, 0, 1, 0, 1])
    metrics = ClassMetrics(("water", "building", "cloud"))
    metrics.update(prediction, target)
    scores = metrics.compute()
    assert scores["iou_water"] == pytest.approx(3 / 5)
    assert scores["iou_building"] == pytest.approx(1 / 3)
    assert "iou_cloud" not in scores and "f1_cloud" not in scores  # absent: not a failure
    assert scores["miou"] == pytest.approx((3 / 5 + 1 / 3) / 2)
    assert scores["f1_water"] == pytest.approx(2 * 3 / (4 + 4))
    assert scores["f1"] == pytest.approx((2 * 3 / 8 + 2 * 1 / 4) / 2)
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
    assert scores["iou_a"] == 0.0  # in the target, never predicted: a failure
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


SECOND_LIKE = SourceInfo(
    "second",
    "semantic_change_detection",
    categories=("water", "building", "no_change", "change"),
    slot_categories=(("water", "building"), ("water", "building"), ("no_change", "change")),
)


def one_hot_logits(positions: list[list[int]], k: int = 4) -> torch.Tensor:
    """(1, To, K, 1, W) logits whose argmax is ``positions[slot][pixel]``."""
    classes = torch.tensor(positions)
    return torch.nn.functional.one_hot(classes, k).float().permute(0, 2, 1)[None, :, :, None]


def test_semantic_change_scores_land_cover_change_and_sek_apart():
    water, building, same, changed = range(4)
    # Four pixels; pixel 2 is unlabelled. Date A, date B, change.
    target = torch.tensor(
        [[water, building, -1, water], [building, building, -1, water], [changed, same, -1, same]]
    )[None, :, None]
    logits = one_hot_logits(
        [
            [water, water, building, water],
            [building, building, water, building],
            [changed, changed, same, same],
        ]
    )
    # The date slots never predict a change class, even where its logit is the largest.
    logits[0, 0, changed] += 5.0
    metrics = SourceMetrics(SECOND_LIKE)
    metrics.update(logits, target)
    scores = metrics.compute()
    # Land cover over the date slots only: water and building each 2 of 4 (TP / union).
    assert scores["miou"] == pytest.approx(0.5)
    assert scores["iou_water"] == pytest.approx(0.5) and scores["f1_water"] == pytest.approx(2 / 3)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert "iou_change" not in scores and "iou_no_change" not in scores
    # Change: one true change found, one false alarm.
    assert scores["f1_change"] == pytest.approx(2 / 3)
    # SeK by hand: kappa 1/3 without the true no-change pixels, changed IoU 2/4.
    assert scores["sek"] == pytest.approx((1 / 3) * math.exp(0.5 - 1), rel=1e-6)


def test_separated_kappa_of_a_perfect_and_of_an_empty_map():
    perfect = torch.tensor([[5, 0, 0], [0, 3, 0], [0, 0, 2]])
    assert float(separated_kappa(perfect)) == pytest.approx(1.0)
    only_unchanged = torch.tensor([[7, 0], [0, 0]])
    assert float(separated_kappa(only_unchanged)) == 0.0


def test_a_semantic_change_source_needs_one_change_slot():
    source = SourceInfo(
        "bad",
        "semantic_change_detection",
        categories=("water", "building"),
        slot_categories=(("water", "building"), ("water", "building")),
    )
    with pytest.raises(ValueError, match=r"'bad' needs exactly one output slot.*'change'"):
        SourceMetrics(source)
