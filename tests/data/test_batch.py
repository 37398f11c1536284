import dataclasses

import numpy as np
import pytest
import torch

from conftest import make_batch
from stsun_lightning.batch import collate_batches
from stsun_lightning.data.datasets.items import window_batch
from stsun_lightning.data.sensors import get_sensor
from stsun_lightning.errors import BatchValidationError


def test_a_valid_batch_passes_and_reports_its_sizes():
    batch = make_batch(
        b=3, t=2, c=5, h=16, w=24, outputs=[(0, 0, 0), (1, 0, 1)], label_size=(8, 12)
    )
    assert batch.batch_size == 3 and batch.num_outputs == 2
    assert batch.label_size() == (8, 12)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "wavelength_nm",
            torch.zeros(2, 4),
            r"'wavelength_nm' has shape \(2, 4\), expected \(2, 5\)",
        ),
        ("modality", torch.zeros(2, 5), r"'modality' has dtype torch.float32, expected long"),
        (
            "modality",
            torch.full((2, 5), 9),
            r"'modality' has an unknown id; expected one of 0=optical",
        ),
        ("band_mask", torch.ones(2, 2, 5), r"'band_mask' has dtype torch.float32, expected bool"),
        (
            "band_mask",
            torch.ones(2, 5, dtype=torch.bool),
            r"'band_mask' has shape \(2, 5\), expected \(2, 2, 5\)",
        ),
        ("dates", torch.zeros(2, 3), r"'dates' has shape \(2, 3\), expected \(2, 2\)"),
        (
            "valid_mask",
            torch.ones(2, 16, 15, dtype=torch.bool),
            r"'valid_mask' has shape \(2, 16, 15\), expected \(2, 16, 16\)",
        ),
        ("gsd_m", torch.tensor([10.0, 0.0]), r"'gsd_m' must be positive"),
        (
            "band_mask",
            torch.zeros(2, 2, 5, dtype=torch.bool),
            r"'band_mask' has an item with no real band at any real frame",
        ),
        (
            "time_mask",
            torch.zeros(2, 2, dtype=torch.bool),
            r"'time_mask' has an item with no real frame",
        ),
        ("outputs", torch.tensor([[[0.0, 2, 2]]] * 2), r"'outputs' refers to a frame outside 0..1"),
        ("outputs", torch.tensor([[[5.0, 0, 0]]] * 2), r"'outputs' has an unknown slot kind"),
        ("target", torch.zeros(2, 1, 16, 16), r"'target' has dtype torch.float32, expected long"),
        (
            "category_mask",
            torch.ones(2, 4, dtype=torch.bool),
            r"'category_mask' has shape \(2, 4\), expected \(2, 3\)",
        ),
        ("source", ["a"], r"'source' has 1 names, expected 2"),
        (
            "image",
            torch.zeros(2, 5, 16, 16),
            r"'image' has shape \(2, 5, 16, 16\), expected \(B, T, C, H, W\)",
        ),
    ],
)
def test_validate_names_the_field_and_the_expected_shape(field, value, message):
    batch = make_batch(b=2, t=2, c=5, h=16, w=16)
    with pytest.raises(BatchValidationError, match=message):
        dataclasses.replace(batch, **{field: value}).validate()


def test_a_batch_that_requests_nothing_is_an_error():
    batch = make_batch(b=2, categories=None, variables=[0])
    with pytest.raises(BatchValidationError, match="requests nothing"):
        dataclasses.replace(batch, variables=None, target=None).validate()


def test_collate_concatenates_and_refuses_mixed_shapes():
    a, b = make_batch(b=1, t=2, seed=1), make_batch(b=2, t=2, seed=2)
    both = collate_batches([a, b]).validate()
    assert both.batch_size == 3 and both.source == ["test"] * 3
    torch.testing.assert_close(both.image[1:], b.image)
    with pytest.raises(BatchValidationError, match="field 'image' has different shapes"):
        collate_batches([a, make_batch(b=1, t=3)])


def test_to_moves_every_tensor_and_keeps_the_rest():
    batch = make_batch(b=1).to("cpu")
    assert batch.image.device.type == "cpu" and batch.source == ["test"]


def test_a_window_batch_carries_its_per_frame_band_mask():
    metadata = [get_sensor("sentinel2_l2a").metadata(["B02", "B03"])]
    metadata.append(get_sensor("sentinel1").metadata(["VV"]))
    observed = np.array([[True, True, False], [False, False, True]])  # S2 day, then S1 day
    args = dict(
        metadata=metadata,
        gsd_m=10.0,
        dates=[19000.0, 19003.0],
        image=np.zeros((2, 3, 8, 8), dtype=np.float32),
        valid=np.ones((8, 8), dtype=bool),
        task_row=0,
        outputs="state",
        rows=[0, 1],
        classification=True,
        source="s",
    )
    batch = window_batch(**args, band_mask=observed).validate()
    assert batch.band_mask.shape == (1, 2, 3)
    assert batch.band_mask[0].tolist() == observed.tolist()
    assert window_batch(**args).validate().band_mask.all()
