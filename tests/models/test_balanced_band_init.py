"""Balanced band initialisation (``balanced_band_init``): bands start apart."""

import pytest
import torch
import torch.nn.functional as F

from conftest import CATEGORIES, make_batch
from stsun_lightning.models import create_model

RGBN_NM = torch.tensor([[640.0, 550.0, 470.0, 850.0]])
OPTICAL = torch.zeros(1, 4, dtype=torch.long)
ALL_OBSERVED = torch.ones(1, 1, 4, dtype=torch.bool)


def _model(balanced: bool, **overrides):
    torch.manual_seed(0)
    return create_model(
        "stsun_tiny", categories=CATEGORIES, balanced_band_init=balanced, **overrides
    ).eval()


def _distinct(rows: torch.Tensor) -> float:
    """Mean |row - mean row| / |row|: 0 when every band's row is the same."""
    return float(((rows - rows.mean(0)).norm(dim=1) / rows.norm(dim=1)).mean())


@torch.no_grad()
def _red_green_blue_nir(model):
    """Embeddings, kernels (after the band-set context) and stem weights of R, G, B, NIR."""
    embedding = model.band_encoder(RGBN_NM, torch.zeros_like(RGBN_NM), OPTICAL)
    conditioned = model.tokenizer.context(embedding, ALL_OBSERVED)[0, 0]
    kernels = model.tokenizer.kernel(conditioned)
    return embedding[0], kernels, model.decoder.band_mix(embedding[0])


def test_balanced_bands_start_apart_where_default_ones_start_alike():
    default, balanced = _red_green_blue_nir(_model(False)), _red_green_blue_nir(_model(True))
    off_diagonal = ~torch.eye(4, dtype=torch.bool)
    for (embedding, kernels, stem), alike in ((default, True), (balanced, False)):
        unit = F.normalize(embedding, dim=-1)
        cosine = (unit @ unit.T)[off_diagonal]
        if alike:  # the shared modality row and biases dominate
            assert cosine.min() > 0.99 and _distinct(kernels) < 0.02
        else:
            assert cosine.max() < 0.9
            assert _distinct(kernels) > 0.2 and _distinct(stem) > 0.2


def test_the_balanced_band_set_context_starts_as_the_identity():
    model = _model(True)
    embedding = torch.randn(2, 4, model.band_encoder.mlp[-1].out_features)
    mask = torch.tensor([[[True, True, False, True]], [[True, True, True, True]]])
    with torch.no_grad():
        conditioned = model.tokenizer.context(embedding, mask)
    torch.testing.assert_close(conditioned, embedding[:, None])


@pytest.mark.parametrize("options", [{}, {"tokenizer": "attention"}, {"band_context": False}])
def test_a_balanced_network_trains_and_its_band_maps_learn(options):
    model = _model(True, **options).train()
    batch = make_batch(t=2, c=4, h=32, w=32, outputs=[(0, 0, 0), (1, 0, 1)])
    out = model(batch).logits
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert model.band_encoder.modality.weight.grad.abs().sum() > 0
    assert model.decoder.band_mix.weight.grad.abs().sum() > 0
    context = model.tokenizer.context
    if context is not None:  # zero outputs still learn: their inputs are not zero
        assert context.mlp[0].fc2.weight.grad.abs().sum() > 0


def test_balanced_init_changes_only_the_band_maps():
    default, balanced = _model(False).state_dict(), _model(True).state_dict()
    changed = {
        name
        for name, value in default.items()
        if isinstance(value, torch.Tensor) and not torch.equal(value, balanced[name])
    }
    assert changed == {
        "band_encoder.mlp.0.bias",
        "band_encoder.mlp.2.bias",
        "band_encoder.modality.weight",
        "tokenizer.kernel.weight",
        "tokenizer.context.attention.0.proj.weight",
        "tokenizer.context.attention.0.proj.bias",
        "tokenizer.context.mlp.0.fc2.weight",
        "tokenizer.context.mlp.0.fc2.bias",
        "decoder.band_mix.weight",
    }
