"""The optional early convolutions (``conv_stem``) keep the network's invariances."""

import dataclasses

import pytest
import torch

from conftest import CATEGORIES, make_batch
from stsun_lightning.models import create_model
from stsun_lightning.models.pyramid import ConvPyramid

ATOL = 1e-4


def _model(**overrides):
    torch.manual_seed(0)
    model = create_model("stsun_tiny", categories=CATEGORIES, conv_stem=8, **overrides).eval()
    # The projection to the tokens starts at zero (the network begins as it is without
    # the pyramid): give it weights, so the tests see the token path too.
    torch.nn.init.normal_(model.conv_stem.to_tokens.weight, std=0.3)
    for block in model.decoder.dense:  # dense refinement starts as the identity, too
        torch.nn.init.normal_(block.out.weight, std=0.3)
    return model


def _pad(batch, top, left, bottom, right):
    b, t, c, h, w = batch.image.shape
    image = torch.full((b, t, c, top + h + bottom, left + w + right), float("nan"))
    image[..., top : top + h, left : left + w] = batch.image
    valid = torch.zeros(b, top + h + bottom, left + w + right, dtype=torch.bool)
    valid[:, top : top + h, left : left + w] = True
    return dataclasses.replace(batch, image=image, valid_mask=valid, target=None).validate()


@pytest.mark.parametrize(
    "decoder",
    [
        {"upsampling": "unpatch"},
        {"upsampling": "bilinear"},
        {"upsampling": "bilinear", "dense_refine": 2},
    ],
)
@pytest.mark.parametrize(
    ("hw", "padding"),
    [
        # Any padding at the bottom and right.
        ((50, 70), (0, 0, 27, 23)),
        # Whole patches at the top and left (and any at the bottom and right).
        ((48, 56), (8, 16, 5, 11)),
    ],
)
def test_padding_changes_nothing(decoder, hw, padding):
    model = _model(**decoder)
    (h, w), (top, left) = hw, padding[:2]
    batch = make_batch(t=2, c=4, h=h, w=w, outputs=[(0, 1, 1), (1, 0, 1)])
    with torch.no_grad():
        ref = model(batch).logits
        got = model(_pad(batch, *padding)).logits
    torch.testing.assert_close(got[..., top : top + h, left : left + w], ref, atol=ATOL, rtol=0)
    assert torch.isfinite(got).all()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"dense_refine": 1}, "needs upsampling='bilinear'"),
        ({"dense_refine": -1, "upsampling": "bilinear"}, "dense_refine must be >= 0"),
    ],
)
def test_dense_refine_errors_name_the_option(options, match):
    with pytest.raises(ValueError, match=match):
        create_model("stsun_tiny", categories=CATEGORIES, **options)


def test_the_pyramid_only_adds_and_every_weight_of_it_learns():
    torch.manual_seed(0)
    stem = create_model("stsun_tiny", categories=CATEGORIES, conv_stem=8).eval()
    plain = create_model("stsun_tiny", categories=CATEGORIES).eval()
    shared = {k: v for k, v in stem.state_dict().items() if k in plain.state_dict()}
    plain.load_state_dict(shared)
    batch = make_batch(t=3, c=5, outputs=[(0, 0, 0), (1, 0, 2)])
    with torch.no_grad():
        torch.nn.init.zeros_(stem.decoder.fine.weight)
        torch.nn.init.zeros_(stem.decoder.fine.bias)
        # Fresh, the token projection is zero: with the decoder's share at zero too,
        # the network is the one without the pyramid.
        torch.testing.assert_close(stem(batch).logits, plain(batch).logits, atol=ATOL, rtol=0)
    torch.manual_seed(0)
    stem = create_model("stsun_tiny", categories=CATEGORIES, conv_stem=8).train()
    stem(batch).logits.square().mean().backward()
    # One step moves the zero projection; after it every weight of the pyramid learns.
    assert stem.conv_stem.to_tokens.weight.grad.abs().sum() > 0
    with torch.no_grad():
        torch.nn.init.normal_(stem.conv_stem.to_tokens.weight, std=0.1)
    stem.zero_grad()
    stem(batch).logits.square().mean().backward()
    missing = [
        name
        for name, p in stem.named_parameters()
        if name.startswith(("conv_stem.", "decoder.fine."))
        and (p.grad is None or p.grad.abs().sum() == 0)
    ]
    assert missing == []


@pytest.mark.parametrize("patch_size", [1, 6, 12])
def test_a_patch_size_that_is_not_a_power_of_two_is_refused(patch_size):
    with pytest.raises(ValueError, match=f"power of two >= 2, got {patch_size}"):
        ConvPyramid(8, 64, patch_size, 8)


def test_a_negative_width_is_refused():
    with pytest.raises(ValueError, match="conv_stem must be >= 0"):
        create_model("stsun_tiny", conv_stem=-1)
