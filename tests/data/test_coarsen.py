"""Coarsening: a training batch as a coarser sensor sees it (``StsunTask(coarsen=...)``)."""

import dataclasses

import pytest
import torch

from conftest import make_batch
from stsun_lightning.data.transforms.coarsen import coarsen_batch, coarsen_randomly, draw_factor
from stsun_lightning.tasks.module import StsunTask


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


def test_random_coarsening_draws_its_share_and_factors_and_repeats_with_a_seed():
    batch = make_batch(b=1, h=12, w=12)
    generator = torch.Generator().manual_seed(0)
    sides = [coarsen_randomly(batch, 0.5, (2, 3), generator).image.shape[-1] for _ in range(400)]
    counts = {side: sides.count(side) for side in set(sides)}
    assert set(counts) == {12, 6, 4}
    assert 150 < counts[12] < 250 and 60 < counts[6] < 140 and 60 < counts[4] < 140
    first = [coarsen_randomly(batch, 0.5, (2, 3), torch.Generator().manual_seed(5)) for _ in "ab"]
    assert first[0].image.shape == first[1].image.shape
    assert coarsen_randomly(batch, 0.0) is batch


def test_a_drawn_factor_is_the_one_random_coarsening_applies():
    batch = make_batch(b=1, h=12, w=12)
    factors = [draw_factor(0.5, (2, 3), torch.Generator().manual_seed(s)) for s in range(40)]
    sides = [
        coarsen_randomly(batch, 0.5, (2, 3), torch.Generator().manual_seed(s)).image.shape[-1]
        for s in range(40)
    ]
    assert set(factors) == {1, 2, 3}
    assert sides == [12 // f for f in factors]
    assert draw_factor(0.0, (2, 3)) == 1 and draw_factor(1.0, (3,)) == 3


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda b: coarsen_batch(b, 0), "at least 1, got 0"),
        (lambda b: coarsen_batch(b, 9), "leaves no pixel of a 4 × 4 batch"),
        (lambda b: coarsen_randomly(b, 1.5), r"in \[0, 1\], got 1.5"),
        (lambda b: coarsen_randomly(b, 0.5, (1, 2)), r"at least 2, got \[1, 2\]"),
        (lambda b: draw_factor(-0.1), r"in \[0, 1\], got -0.1"),
        (lambda b: draw_factor(0.5, ()), r"at least 2, got \[\]"),
    ],
)
def test_bad_arguments_say_what_was_expected(call, message):
    with pytest.raises(ValueError, match=message):
        call(make_batch(b=1, h=4, w=4))


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_the_task_coarsens_training_batches_only():
    sources = {"s": {"task": "semantic_segmentation", "categories": ["water", "cropland"]}}
    torch.manual_seed(0)
    task = StsunTask("stsun_tiny", sources=sources, coarsen=1.0, coarsen_factors=[2])
    seen: list[tuple[int, float]] = []
    task.model.register_forward_pre_hook(
        lambda _m, args: seen.append((args[0].image.shape[-1], float(args[0].gsd_m[0])))
    )
    batch = make_batch(b=4, c=4, h=32, w=32, categories=[0, 1], source="s")
    task.training_step(batch, 0)
    assert seen[-1] == (16, float(batch.gsd_m[0]) * 2)
    with torch.no_grad():
        task.validation_step(batch, 0)
    assert seen[-1] == (32, float(batch.gsd_m[0])), "a validation batch was coarsened"


def test_the_task_checks_its_coarsening_options():
    with pytest.raises(Exception, match=r"coarsen must be in \[0, 1\], got 2.0"):
        StsunTask(coarsen=2.0)
    with pytest.raises(Exception, match=r"coarsen_factors must be integers of at least 2"):
        StsunTask(coarsen=0.5, coarsen_factors=[1])
