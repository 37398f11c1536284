"""Coarsening: a batch as a coarser sensor sees it (``coarsen_batch``), and the factor draw."""

import dataclasses

import pytest
import torch

from conftest import make_batch
from stsun_lightning.data.transforms.coarsen import coarsen_batch, coarsening_factors, draw_factor
from stsun_lightning.errors import ConfigError


def test_image_is_the_block_mean_and_gsd_scales():
    batch = make_batch(b=2, t=2, c=3, h=6, w=6)
    coarse = coarsen_batch(batch, 3)
    assert coarse.image.shape == (2, 2, 3, 2, 2)
    assert coarse.valid_mask.shape == (2, 2, 2) and coarse.valid_mask.all()
    expected = batch.image[..., :3, 3:].mean((-2, -1))
    torch.testing.assert_close(coarse.image[..., 0, 1], expected)
    torch.testing.assert_close(coarse.gsd_m, batch.gsd_m * 3)
    # Bands, dates and their masks are the batch's own.
    assert coarse.wavelength_nm is batch.wavelength_nm and coarse.dates is batch.dates
    assert torch.equal(coarse.band_mask, batch.band_mask)


def test_invalid_pixels_never_enter_a_mean():
    batch = make_batch(b=1, c=2, h=4, w=4)
    valid = batch.valid_mask.clone()
    valid[0, 0, 0] = False  # one pixel of the first block
    valid[0, 2:, 2:] = False  # a whole block
    image = batch.image.clone()
    image[0, 0, :, 0, 0] = torch.nan
    image[0, 0, :, 2:, 2:] = 1e6
    coarse = coarsen_batch(dataclasses.replace(batch, valid_mask=valid, image=image), 2)
    torch.testing.assert_close(
        coarse.image[0, 0, :, 0, 0], image[0, 0, :, :2, :2].flatten(1)[:, 1:].mean(1)
    )
    assert coarse.valid_mask[0].tolist() == [[True, True], [True, False]]
    assert torch.isfinite(coarse.image).all() and coarse.image.abs().max() < 1e3


def test_classes_take_the_majority_of_labelled_pixels():
    batch = make_batch(b=1, h=4, w=4)
    target = torch.tensor([[2, 2, 0, 1], [1, -1, -1, -1], [-1, -1, 0, 0], [-1, -1, 1, 1]]).reshape(
        1, 1, 4, 4
    )
    coarse = coarsen_batch(dataclasses.replace(batch, target=target), 2)
    # 2 beats 1; 0 and 1 tie (the lower wins); nothing labelled; 0 and 1 tie again.
    assert coarse.target.tolist() == [[[[2, 0], [-1, 0]]]]
    assert coarse.target.dtype == torch.long


def test_values_take_the_mean_of_finite_pixels():
    batch = make_batch(b=1, h=4, w=4, categories=None, variables=(0,))
    target = torch.arange(16.0).reshape(1, 1, 1, 4, 4)
    target[..., 0, 0] = torch.nan
    target[..., 2:, :2] = torch.nan
    coarse = coarsen_batch(dataclasses.replace(batch, target=target), 2)
    values = coarse.target[0, 0, 0]
    assert values[0, 0] == pytest.approx((1 + 4 + 5) / 3)
    assert values[0, 1] == pytest.approx((2 + 3 + 6 + 7) / 4)
    assert torch.isnan(values[1, 0])


def test_sides_the_factor_does_not_divide_are_cropped():
    batch = make_batch(b=1, h=8, w=7)
    coarse = coarsen_batch(batch, 3)
    assert coarse.image.shape[-2:] == (2, 2) and coarse.target.shape[-2:] == (2, 2)
    torch.testing.assert_close(coarse.image[..., 1, 1], batch.image[..., 3:6, 3:6].mean((-2, -1)))


def test_a_coarsened_batch_runs_through_the_network(tiny_model):
    batch = make_batch(b=2, c=4, h=32, w=32)
    coarse = coarsen_batch(batch, 3).validate()
    logits = tiny_model(coarse).logits
    assert logits.shape[-2:] == (10, 10)


def test_factors_are_drawn_in_their_share_and_repeat_with_a_seed():
    generator = torch.Generator().manual_seed(0)
    drawn = [draw_factor(0.5, (2, 3), generator) for _ in range(400)]
    counts = {f: drawn.count(f) for f in set(drawn)}
    assert set(counts) == {1, 2, 3}
    assert 150 < counts[1] < 250 and 60 < counts[2] < 140 and 60 < counts[3] < 140
    again = [draw_factor(0.5, (2, 3), torch.Generator().manual_seed(5)) for _ in "ab"]
    assert again[0] == again[1]
    assert draw_factor(0.0, (2, 3)) == 1 and draw_factor(1.0, (3,)) == 3
    assert coarsen_batch(make_batch(b=1, h=4, w=4), 1).image.shape[-1] == 4


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda b: coarsen_batch(b, 0), "at least 1, got 0"),
        (lambda b: coarsen_batch(b, 9), "leaves no pixel of a 4 × 4 batch"),
        (lambda b: draw_factor(1.5), r"in \[0, 1\], got 1.5"),
        (lambda b: draw_factor(0.5, (1, 2)), r"at least 2, got \[1, 2\]"),
        (lambda b: draw_factor(-0.1), r"in \[0, 1\], got -0.1"),
        (lambda b: draw_factor(0.5, ()), r"at least 2, got \[\]"),
    ],
)
def test_bad_arguments_say_what_was_expected(call, message):
    with pytest.raises(ValueError, match=message):
        call(make_batch(b=1, h=4, w=4))


def test_the_options_are_checked_naming_them():
    assert coarsening_factors(0.5, None, "data") == (2, 3)
    assert coarsening_factors(0.5, [3], "data") == (3,)
    with pytest.raises(ConfigError, match=r"data.coarsen must be in \[0, 1\], got 2.0"):
        coarsening_factors(2.0, None, "data")
    with pytest.raises(ConfigError, match=r"data.coarsen_factors must be integers of at least 2"):
        coarsening_factors(0.5, [1], "data")
    with pytest.raises(ConfigError, match=r"got \[\]"):
        coarsening_factors(0.5, [], "data")
