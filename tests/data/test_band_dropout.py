"""Band dropout: random band subsets while training (``StsunTask(band_dropout=...)``)."""

import dataclasses

import pytest
import torch

from conftest import make_batch
from stsun_lightning.batch import Batch
from stsun_lightning.data.transforms.band_dropout import drop_random_bands
from stsun_lightning.tasks.module import StsunTask


def padded_batch(b: int = 400) -> Batch:
    """A batch of 6 bands whose last band is padding for every item, the 5th for odd items."""
    batch = make_batch(b=b, c=6, h=8, w=8)
    band_mask = batch.band_mask.clone()  # (B, T = 1, C)
    band_mask[..., 5] = False
    band_mask[1::2, :, 4] = False
    return dataclasses.replace(batch, band_mask=band_mask)


def test_no_dropout_returns_the_batch_itself():
    batch = make_batch()
    assert drop_random_bands(batch, 0.0) is batch


def test_kept_bands_are_a_subset_of_the_real_ones_with_every_count_drawn():
    batch = padded_batch()
    generator = torch.Generator().manual_seed(0)
    thinned = drop_random_bands(batch, 1.0, min_bands=2, generator=generator)
    assert not (thinned.band_mask & ~batch.band_mask).any(), "a padded band was switched on"
    kept = thinned.band_mask[:, 0].sum(1)
    real = batch.band_mask[:, 0].sum(1)
    assert (kept >= 2).all() and (kept <= real).all()
    # Every count from min_bands to the real count is drawn, for both band counts.
    assert set(kept[0::2].tolist()) == {2, 3, 4, 5}
    assert set(kept[1::2].tolist()) == {2, 3, 4}
    # Pixels and metadata are untouched: only the mask changes.
    assert thinned.image is batch.image and thinned.wavelength_nm is batch.wavelength_nm
    # Which bands go is random too, not always the last ones.
    assert thinned.band_mask[:, 0, 0].float().mean() < 0.95


def test_a_share_of_items_keeps_all_its_bands_and_a_seed_repeats_the_draw():
    batch = padded_batch()
    first = drop_random_bands(batch, 0.5, generator=torch.Generator().manual_seed(3))
    again = drop_random_bands(batch, 0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first.band_mask, again.band_mask)
    untouched = (first.band_mask == batch.band_mask).flatten(1).all(1).float().mean()
    assert 0.4 < untouched < 0.75  # half not chosen, plus chosen items that kept everything


def test_a_hidden_band_is_hidden_at_every_frame_and_a_band_missing_at_a_frame_stays_missing():
    batch = make_batch(b=200, t=3, c=5, h=8, w=8)
    band_mask = batch.band_mask.clone()
    band_mask[:, 1, :2] = False  # bands 0 and 1 not acquired at frame 1 (another sensor's day)
    batch = dataclasses.replace(batch, band_mask=band_mask).validate()
    thinned = drop_random_bands(batch, 1.0, generator=torch.Generator().manual_seed(1))
    assert not (thinned.band_mask & ~band_mask).any()
    hidden = band_mask & ~thinned.band_mask  # (B, T, C)
    # A band hidden at one frame where it was observed is hidden at every frame it was observed.
    per_band = thinned.band_mask.any(1)  # (B, C)
    assert torch.equal(thinned.band_mask, band_mask & per_band[:, None, :])
    assert hidden.any()


def test_an_item_with_fewer_real_bands_than_the_minimum_keeps_them_all():
    batch = make_batch(b=3, c=2)
    thinned = drop_random_bands(batch, 1.0, min_bands=5, generator=torch.Generator())
    assert torch.equal(thinned.band_mask, batch.band_mask)


@pytest.mark.parametrize(
    ("probability", "min_bands", "message"),
    [(1.5, 1, "probability must be in \\[0, 1\\], got 1.5"), (0.5, 0, "at least 1, got 0")],
)
def test_bad_arguments_are_named(probability, min_bands, message):
    with pytest.raises(ValueError, match=message):
        drop_random_bands(make_batch(), probability, min_bands)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_the_task_thins_the_bands_of_training_batches_only():
    sources = {"s": {"task": "semantic_segmentation", "categories": ["water", "cropland"]}}
    torch.manual_seed(0)
    task = StsunTask("stsun_tiny", sources=sources, band_dropout=1.0, min_bands=1)
    seen: list[torch.Tensor] = []
    task.model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].band_mask))
    batch = make_batch(b=64, c=6, categories=[0, 1], source="s")
    task.training_step(batch, 0)
    assert seen[-1].sum(-1).lt(6).any(), "no band was hidden in training"
    with torch.no_grad():
        task.validation_step(batch, 0)
    assert seen[-1].all(), "bands were hidden in validation"
    with pytest.raises(ValueError, match="band_dropout must be in \\[0, 1\\]"):
        StsunTask("stsun_tiny", sources=sources, band_dropout=2.0)
