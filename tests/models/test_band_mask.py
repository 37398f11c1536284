"""The per-frame band mask: a band masked at a frame changes nothing, as if absent there."""

import dataclasses

import pytest
import torch

from conftest import CATEGORIES, make_batch
from stsun_lightning.batch import Batch, OutputKind
from stsun_lightning.errors import BatchValidationError
from stsun_lightning.models import create_model
from stsun_lightning.models.decoder import PixelDecoder
from stsun_lightning.models.spectral import SpectralTokenizer

ATOL = 1e-4
TOKENIZERS = ["hypernetwork", "attention"]
SLOTS = [
    (OutputKind.STATE, 0, 0),
    (OutputKind.STATE, 1, 1),
    (OutputKind.STATE, 2, 2),
    (OutputKind.CHANGE, 0, 2),
    (OutputKind.AGGREGATE, -1, -1),
]


def _model(tokenizer: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("stsun_tiny", categories=CATEGORIES, tokenizer=tokenizer).eval()


def _logits(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    with torch.no_grad():
        return model(batch.validate()).logits


def _remove_band(batch: Batch, band: int) -> Batch:
    return batch.select_bands([i for i in range(batch.image.shape[2]) if i != band])


def _set(batch: Batch, frame: int, band: int, value: float, observed: bool) -> Batch:
    image, band_mask = batch.image.clone(), batch.band_mask.clone()
    image[:, frame, band] = value
    band_mask[:, frame, band] = observed
    return dataclasses.replace(batch, image=image, band_mask=band_mask)


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
def test_a_band_masked_at_one_frame_ignores_its_values_there(tokenizer):
    model = _model(tokenizer)
    batch = make_batch(t=3, c=5, h=32, w=40, outputs=SLOTS)
    outputs = [_logits(model, _set(batch, 1, 2, v, False)) for v in (float("nan"), 0.0, 1e6)]
    torch.testing.assert_close(outputs[1], outputs[0], atol=0, rtol=0)
    torch.testing.assert_close(outputs[2], outputs[0], atol=0, rtol=0)
    assert torch.isfinite(outputs[0]).all()
    # The mask is what makes them equal: fed as values, 0 and 1e6 give other outputs,
    # and masking the real value changes the output too.
    fed_zero = _logits(model, _set(batch, 1, 2, 0.0, True))
    fed_large = _logits(model, _set(batch, 1, 2, 1e6, True))
    assert (fed_large - fed_zero).abs().max() > 1e-2
    assert (outputs[1] - _logits(model, batch)).abs().max() > 1e-3


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
def test_at_one_frame_a_masked_band_equals_the_band_removed(tokenizer):
    model = _model(tokenizer)
    batch = make_batch(t=1, c=6, h=40, w=32)
    masked = _set(batch, 0, 3, float("nan"), False)
    torch.testing.assert_close(
        _logits(model, masked), _logits(model, _remove_band(batch, 3)), atol=ATOL, rtol=0
    )


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
def test_a_band_masked_at_every_frame_equals_the_band_removed(tokenizer):
    model = _model(tokenizer)
    batch = make_batch(t=3, c=5, h=32, w=32, outputs=SLOTS)
    masked = batch
    for frame in range(3):
        masked = _set(masked, frame, 1, 1e6, False)
    torch.testing.assert_close(
        _logits(model, masked), _logits(model, _remove_band(batch, 1)), atol=ATOL, rtol=0
    )


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
def test_the_tokens_of_a_frame_are_those_of_its_observed_bands_alone(tokenizer):
    """Two sensors on different days: frame 0 has bands 0-2, frame 1 bands 3-4."""
    torch.manual_seed(0)
    tokenizer_module = SpectralTokenizer(32, 8, 16, tokenizer, num_heads=2).eval()
    batch = make_batch(t=2, c=5, h=32, w=32)
    band_mask = torch.zeros(2, 2, 5, dtype=torch.bool)
    band_mask[:, 0, :3] = True
    band_mask[:, 1, 3:] = True
    image = torch.where(band_mask[..., None, None], batch.image, 0.0)
    embedding = torch.randn(2, 5, 16)
    task = torch.randn(2, 32)
    with torch.no_grad():
        tokens = tokenizer_module(image, embedding, band_mask, task)
        for frame, bands in ((0, [0, 1, 2]), (1, [3, 4])):
            alone = tokenizer_module(
                image[:, frame : frame + 1, bands],
                embedding[:, bands],
                band_mask[:, frame : frame + 1, bands],
                task,
            )
            torch.testing.assert_close(tokens[:, frame : frame + 1], alone, atol=1e-5, rtol=0)


def test_the_stem_of_a_frame_mixes_its_observed_bands_alone():
    torch.manual_seed(0)
    decoder = PixelDecoder(32, 8, 16, 8, 4)
    image = torch.randn(2, 2, 5, 16, 16)
    band_mask = torch.ones(2, 2, 5, dtype=torch.bool)
    band_mask[:, 1, :2] = False
    image = torch.where(band_mask[..., None, None], image, 0.0)
    embedding = torch.randn(2, 5, 16)
    with torch.no_grad():
        mixed = decoder.stem(image, embedding, band_mask)
        alone = decoder.stem(image[:, 1:, 2:], embedding[:, 2:], band_mask[:, 1:, 2:])
    torch.testing.assert_close(mixed[:, 1:], alone, atol=1e-6, rtol=0)


def test_a_real_frame_without_a_real_band_counts_as_not_real():
    model = _model("hypernetwork")
    slots = [(OutputKind.STATE, 2, 2), (OutputKind.CHANGE, 0, 2), (OutputKind.AGGREGATE, -1, -1)]
    batch = make_batch(t=3, c=4, h=32, w=32, outputs=slots)
    no_band = dataclasses.replace(batch, band_mask=batch.band_mask.clone())
    no_band.band_mask[:, 1] = False
    not_real = dataclasses.replace(batch, time_mask=batch.time_mask.clone())
    not_real.time_mask[:, 1] = False
    torch.testing.assert_close(_logits(model, no_band), _logits(model, not_real), atol=ATOL, rtol=0)
    assert (_logits(model, no_band) - _logits(model, batch)).abs().max() > 1e-3
    # An item needs a real band at some real frame.
    no_band.band_mask[:, [0, 2]] = False
    with pytest.raises(BatchValidationError, match="no real band at any real frame"):
        no_band.validate()
