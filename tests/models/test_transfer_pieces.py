"""The pieces that let the network transfer: smooth band encoding, band-set kernels, smooth decoder."""

import dataclasses

import pytest
import torch

from conftest import CATEGORIES, make_batch
from stsun_lightning.batch import Modality
from stsun_lightning.data.sensors import get_sensor
from stsun_lightning.models import create_model
from stsun_lightning.models.decoder import masked_upsample
from stsun_lightning.models.spectral import BandEncoder, SpectralTokenizer

ATOL = 1e-4


def _metadata(*bands):
    wavelength = torch.tensor([[b.wavelength_nm for b in bands]])
    bandwidth = torch.tensor([[b.bandwidth_nm for b in bands]])
    modality = torch.tensor([[int(b.modality) for b in bands]])
    return wavelength, bandwidth, modality


def _distances(vectors):
    """(1, 5, F) of L8 blue, S2 blue, S2 green, S2 B05, S2 B06 -> the three distances."""
    v = vectors[0]
    return (v[0] - v[1]).norm(), (v[1] - v[2]).norm(), (v[3] - v[4]).norm()


def _bands():
    s2, l8 = get_sensor("sentinel2_l2a"), get_sensor("landsat8_oli_tirs")
    return [l8.band("B2"), s2.band("B02"), s2.band("B03"), s2.band("B05"), s2.band("B06")]


def test_the_response_features_are_smooth_in_wavelength_by_construction():
    # No learned parameter: this holds whatever training does to the MLP after it.
    wavelength, bandwidth, _ = _metadata(*_bands())
    blues, blue_green, red_edge = _distances(BandEncoder(32).features(wavelength, bandwidth))
    assert blues < 0.25 * blue_green
    assert red_edge > 2.5 * blues


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_at_init_landsat_and_sentinel2_blue_are_near_and_red_edge_bands_apart(seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        blues, blue_green, red_edge = _distances(BandEncoder(64)(*_metadata(*_bands())))
    assert blues < 0.25 * blue_green
    assert red_edge > 1.5 * blues


def test_the_fourier_baseline_is_as_sharp_as_measured():
    wavelength, bandwidth, _ = _metadata(*_bands())
    encoder = BandEncoder(32, encoding="fourier")
    blues, blue_green, _ = _distances(encoder.features(wavelength, bandwidth))
    assert blues > 0.5 * blue_green


def test_a_thermal_band_is_embedded_as_thermal_not_optical():
    b10 = get_sensor("landsat8_oli_tirs").band("B10")
    assert b10.modality is Modality.THERMAL
    encoder = BandEncoder(32)
    wavelength, bandwidth, modality = _metadata(b10)
    with torch.no_grad():
        thermal = encoder(wavelength, bandwidth, modality)
        as_optical = encoder(wavelength, bandwidth, torch.zeros_like(modality))
    assert (thermal - as_optical).abs().max() > 0.1


def _tokenizer(mode):
    torch.manual_seed(0)
    return SpectralTokenizer(32, 8, 16, mode, band_context=True).eval()


@pytest.mark.parametrize("mode", ["hypernetwork", "attention"])
def test_band_set_kernels_are_invariant_to_the_order_of_bands(mode):
    tokenizer = _tokenizer(mode)
    image, embedding = torch.randn(2, 3, 6, 16, 16), torch.randn(2, 6, 16)
    mask = torch.rand(2, 3, 6) > 0.3
    mask[..., 0] = True
    image = image * mask[..., None, None]
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    task = torch.randn(2, 32)
    with torch.no_grad():
        ref = tokenizer(image, embedding, mask, task)
        got = tokenizer(image[:, :, perm], embedding[:, perm], mask[:, :, perm], task)
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("mode", ["hypernetwork", "attention"])
def test_a_band_masked_at_a_frame_contributes_nothing_to_band_set_kernels(mode):
    tokenizer = _tokenizer(mode)
    image, embedding, task = torch.randn(1, 2, 5, 16, 16), torch.randn(1, 5, 16), torch.randn(1, 32)
    mask = torch.ones(1, 2, 5, dtype=torch.bool)
    mask[0, 1, 2] = False  # band 2 masked at frame 1 only
    image = image * mask[..., None, None]
    with torch.no_grad():
        got = tokenizer(image, embedding, mask, task)
        keep = torch.tensor([0, 1, 3, 4])
        alone = tokenizer(image[:, 1:, keep], embedding[:, keep], mask[:, 1:, keep], task)
        # The band set matters: frame 0, with band 2, differs from frame 1 without it.
        without_context = SpectralTokenizer(32, 8, 16, mode)
    torch.testing.assert_close(got[:, 1:], alone, atol=ATOL, rtol=0)
    assert without_context.context is None and tokenizer.context is not None


def test_the_kernel_of_a_band_depends_on_the_other_bands():
    tokenizer = _tokenizer("hypernetwork")
    embedding = torch.randn(1, 3, 16)
    mask = torch.ones(1, 1, 3, dtype=torch.bool)
    fewer = mask.clone()
    fewer[..., 2] = False
    with torch.no_grad():
        with_all = tokenizer.context(embedding, mask)[0, 0, 0]
        with_fewer = tokenizer.context(embedding, fewer)[0, 0, 0]
    assert (with_all - with_fewer).abs().max() > 1e-3


def test_masked_upsampling_of_a_ramp_has_no_step_at_token_borders():
    p = 8
    ramp = torch.arange(6.0)[None, None, :, None].expand(1, 1, 6, 5)  # rises by 1 per token
    up = masked_upsample(ramp, torch.ones(1, 6, 5, dtype=torch.bool), p)[0, 0, :, 0]
    steps = up.diff()[p // 2 : -p // 2]  # between the first and the last token centre
    torch.testing.assert_close(steps, torch.full_like(steps, 1.0 / p))


def test_masked_upsampling_ignores_padding_tokens():
    features, valid = torch.randn(2, 3, 4, 5), torch.ones(2, 4, 5, dtype=torch.bool)
    padded = torch.cat([features, torch.full((2, 3, 2, 5), 1e3)], 2)
    padded_valid = torch.cat([valid, torch.zeros(2, 2, 5, dtype=torch.bool)], 1)
    ref = masked_upsample(features, valid, 8)
    got = masked_upsample(padded, padded_valid, 8)[:, :, :32]
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)


def _model(**overrides):
    torch.manual_seed(0)
    return create_model(
        "stsun_tiny", categories=CATEGORIES, upsampling="bilinear", **overrides
    ).eval()


def test_the_bilinear_decoder_keeps_padding_exact():
    model = _model()
    batch = make_batch(t=2, c=4, h=48, w=50, outputs=[(0, 1, 1), (1, 0, 1)])
    big = (61, 77)
    image = torch.full((2, 2, 4, *big), float("nan"))
    image[..., :48, :50] = batch.image
    valid = torch.zeros(2, *big, dtype=torch.bool)
    valid[:, :48, :50] = True
    padded = dataclasses.replace(batch, image=image, valid_mask=valid, target=None).validate()
    with torch.no_grad():
        ref, got = model(batch).logits, model(padded).logits
    torch.testing.assert_close(got[..., :48, :50], ref, atol=ATOL, rtol=0)
    assert torch.isfinite(got).all()


def test_the_bilinear_decoder_is_smooth_across_token_borders_where_unpatch_steps():
    # Token features that rise steadily across the grid: the per-pixel features of the
    # bilinear decoder (without the stem) rise steadily too.
    torch.manual_seed(0)
    decoder = create_model("stsun_tiny", upsampling="bilinear").decoder
    slots = torch.zeros(1, 1, 4, 4, 64)
    slots[..., 0] = torch.arange(4.0)[:, None]
    slots[..., 1] = -torch.arange(4.0)[:, None]
    with torch.no_grad():
        tokens = decoder.unpatch(decoder.norm(slots)).view(1, 4, 4, -1).permute(0, 3, 1, 2)
        up = masked_upsample(tokens, torch.ones(1, 4, 4, dtype=torch.bool), 8)
    steps = up[0, :, :, 0].diff(dim=1)[:, 4:-4].abs()  # rows between the outer token centres
    inside, border = steps[:, [1, 2, 3, 4, 5, 6]].amax(), steps[:, 3::8].amax()
    assert border <= 1.05 * inside
