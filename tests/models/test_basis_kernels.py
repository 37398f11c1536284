"""Basis kernels (``basis_kernels``): band kernels learnt per spectral region."""

import dataclasses

import pytest
import torch

from conftest import CATEGORIES, make_batch
from stsun_lightning.models import create_model
from stsun_lightning.models.spectral import BandEncoder

ATOL = 1e-4
RGBN_NM = torch.tensor([[640.0, 550.0, 470.0, 850.0]])


def _model(basis_kernels: bool, **overrides):
    torch.manual_seed(0)
    return create_model(
        "stsun_tiny", categories=CATEGORIES, basis_kernels=basis_kernels, **overrides
    ).eval()


def _with_random_basis(model):
    # The basis maps start at zero: give them weights, so the tests see them work.
    torch.nn.init.normal_(model.tokenizer.basis_kernel.weight, std=0.1)
    torch.nn.init.normal_(model.decoder.basis_mix.weight, std=0.3)
    return model


def test_a_fresh_network_with_basis_kernels_is_the_network_without():
    batch = make_batch(t=2, c=5, outputs=[(0, 0, 0), (1, 0, 1)])
    basis, plain = _model(True), _model(False)
    plain.load_state_dict({k: v for k, v in basis.state_dict().items() if "basis_" not in k})
    with torch.no_grad():
        torch.testing.assert_close(basis(batch).logits, plain(batch).logits, atol=ATOL, rtol=0)


def test_basis_kernels_learn_from_the_first_step_and_tell_nearby_bands_apart():
    model = _model(True).train()
    batch = make_batch(t=1, c=4, h=32, w=32, outputs=[(0, 0, 0)])
    model(batch).logits.square().mean().backward()
    assert model.tokenizer.basis_kernel.weight.grad.abs().sum() > 0
    assert model.decoder.basis_mix.weight.grad.abs().sum() > 0
    # Red, green, blue and near infrared excite different basis functions: a map of the
    # responses gives them kernels far less alike than the embeddings' (99 % at start).
    response = model.band_encoder.response(RGBN_NM, torch.zeros_like(RGBN_NM))[0]
    cosine = torch.nn.functional.normalize(response, dim=-1)
    similarity = cosine @ cosine.T
    assert similarity[~torch.eye(4, dtype=torch.bool)].max() < 0.7


def test_band_responses_are_smooth_and_zero_beyond_the_basis():
    encoder = BandEncoder(32)
    wavelength = torch.tensor([[482.0, 492.0, 560.0, 5.55e7, float("nan")]])
    bandwidth = torch.tensor([[60.0, 66.0, 36.0, 0.0, 0.0]])
    response = encoder.response(wavelength, bandwidth)[0]
    assert response.shape == (5, encoder.response_dim)
    blues = (response[0] - response[1]).norm()
    blue_green = (response[1] - response[2]).norm()
    assert blues < 0.25 * blue_green  # Landsat-8 and Sentinel-2 blue
    assert response[3:].abs().max() == 0  # C-band radar, and an unknown wavelength


def test_a_band_masked_at_a_frame_is_as_if_absent_there():
    model = _with_random_basis(_model(True))
    batch = make_batch(t=1, c=5, h=32, w=32, outputs=[(0, 0, 0)])
    mask = batch.band_mask.clone()
    mask[:, :, 2] = False
    masked = dataclasses.replace(batch, band_mask=mask)
    keep = [0, 1, 3, 4]
    dropped = dataclasses.replace(
        batch,
        image=batch.image[:, :, keep],
        wavelength_nm=batch.wavelength_nm[:, keep],
        bandwidth_nm=batch.bandwidth_nm[:, keep],
        modality=batch.modality[:, keep],
        band_mask=batch.band_mask[:, :, keep],
    )
    with torch.no_grad():
        torch.testing.assert_close(model(masked).logits, model(dropped).logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"wavelength_encoding": "fourier"}, "basis_kernels needs wavelength_encoding='response'"),
        ({"tokenizer": "attention"}, "basis_kernels needs tokenizer='hypernetwork'"),
    ],
)
def test_basis_kernels_name_what_they_need(options, match):
    with pytest.raises(ValueError, match=match):
        create_model("stsun_tiny", basis_kernels=True, **options)
