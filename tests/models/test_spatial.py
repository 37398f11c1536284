"""Where tokens are: band-limited ground positions, grid anchoring, shifted windows."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from conftest import CATEGORIES, make_batch
from stsun_lightning.batch import Batch
from stsun_lightning.models import PRESETS, create_model
from stsun_lightning.models.spatial import (
    encode_ground_positions,
    ground_position_encoding,
    nyquist_taper,
    window_segments,
    windowed_attention,
)

ATOL = 1e-4


def _model(name: str = "stsun_tiny", **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, categories=CATEGORIES, **overrides).eval()


def _logits(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    with torch.no_grad():
        return model(batch.validate()).logits


@pytest.mark.parametrize("gsd", [0.3, 10.0, 30.0, 250.0])
def test_no_encoded_frequency_is_above_the_token_grid_nyquist(gsd):
    patch, dim = 8, 64
    code = ground_position_encoding(12, 12, patch, torch.tensor([gsd]), dim)  # (1, 144, 64)
    n = dim // 4
    wavelengths = torch.logspace(1, 5, n)
    spacing = patch * gsd
    amplitude = code[0].abs().amax(0).view(2, 2, n).amax((0, 1))  # per wavelength
    aliased = wavelengths <= 2 * spacing
    assert (amplitude[aliased] == 0).all()
    resolved = wavelengths >= 4 * spacing
    assert (amplitude[resolved] > 0.5).all()
    assert nyquist_taper(wavelengths, torch.tensor([spacing])).shape == (1, n)


def test_the_same_place_at_10_20_and_30_m_gets_the_same_code_on_the_channels_all_resolve():
    ground = torch.linspace(0.0, 7_680.0, 97)[None]  # metres along one axis
    codes = {
        gsd: encode_ground_positions(ground, torch.tensor([8 * gsd]), 16)[0]
        for gsd in (10.0, 20.0, 30.0)
    }
    wavelengths = torch.logspace(1, 5, 16)
    shared = (wavelengths >= 4 * 8 * 30.0).repeat(2)  # sin and cos of the coarsest's channels
    assert shared.sum() >= 16  # more than half of the code
    for gsd in (20.0, 30.0):
        torch.testing.assert_close(codes[gsd][:, shared], codes[10.0][:, shared])
    # On real grids: 10 m and 30 m token centres coincide every third 10 m token.
    fine = ground_position_encoding(1, 9, 8, torch.tensor([10.0]), 64)[0, :, 32:]
    coarse = ground_position_encoding(1, 3, 8, torch.tensor([30.0]), 64)[0, :, 32:]
    torch.testing.assert_close(coarse[:, shared], fine[1::3][:, shared])


@pytest.mark.parametrize("size", [64, 256])
def test_a_small_gsd_change_moves_the_logits_little(size):
    model = _model()
    batch = make_batch(t=1, c=4, h=size, w=size)
    ref = _logits(model, batch)
    got = _logits(model, dataclasses.replace(batch, gsd_m=batch.gsd_m * 1.001))
    assert (got - ref).abs().max() < 0.01 * (ref.max() - ref.min())


def _pad(batch: Batch, top: int, left: int, bottom: int, right: int) -> Batch:
    b, t, c, h, w = batch.image.shape
    image = torch.full((b, t, c, top + h + bottom, left + w + right), float("nan"))
    image[..., top : top + h, left : left + w] = batch.image
    valid = torch.zeros(b, top + h + bottom, left + w + right, dtype=torch.bool)
    valid[:, top : top + h, left : left + w] = True
    return dataclasses.replace(batch, image=image, valid_mask=valid, target=None)


@pytest.mark.parametrize("window", [8, 2])
def test_padding_the_top_and_left_by_whole_patches_changes_nothing(window):
    model = _model(window=window)
    batch = make_batch(t=2, c=4, h=48, w=56, outputs=[(0, 1, 1), (1, 0, 1)])
    ref = _logits(model, batch)
    got = _logits(model, _pad(batch, top=8, left=16, bottom=5, right=11))
    torch.testing.assert_close(got[..., 8:56, 16:72], ref, atol=ATOL, rtol=0)
    # Padding that is not a whole patch moves pixels between tokens: outputs change.
    shifted = _logits(model, _pad(batch, top=3, left=0, bottom=0, right=0))
    assert (shifted[..., 3:, :] - ref).abs().max() > 1e-2


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_windows_shift_in_every_second_block_of_every_preset(name):
    model = create_model(name, dim=16, num_heads=2)  # narrow: only the block layout matters
    preset = PRESETS[name]
    blocks = [*model.date_trunk.blocks, *model.slot_trunk.blocks]
    assert len(blocks) == preset["depth"] >= 2
    half = preset["window"] // 2
    assert [block.shift for block in blocks] == [half * (i % 2) for i in range(len(blocks))]


def _changes_by_window(model, size: int, window_px: int) -> torch.Tensor:
    """Max logit change in each window after changing the top-left window's corner."""
    batch = make_batch(b=1, t=1, c=4, h=size, w=size)
    image = batch.image.clone()
    image[..., : window_px // 2, : window_px // 2] += 100.0  # inside the top-left window
    change = (_logits(model, dataclasses.replace(batch, image=image)) - _logits(model, batch)).abs()
    n = size // window_px
    return change[0, 0].amax(0).view(n, window_px, n, window_px).amax((1, 3))  # (n, n)


@pytest.mark.parametrize(("name", "size"), [("stsun_tiny", 128), ("stsun_small", 256)])
def test_a_change_in_one_window_reaches_every_other_window(name, size):
    model = _model(name)
    window_px = PRESETS[name]["window"] * PRESETS[name]["patch_size"]
    assert size // window_px == 2  # a 2 × 2 grid of windows
    changes = _changes_by_window(model, size, window_px)
    # Without shifts the three other windows would be bitwise unchanged (exactly 0); at
    # initialisation the attention is near uniform, so what crosses is small but real.
    assert (changes > 1e-6).all(), changes


def test_attention_is_windowed_at_every_size_so_far_tokens_do_not_interact():
    """Tiny's two blocks see 1.5 windows at most: a 256² patch is treated like a 512² scene."""
    model = _model()
    window_px = PRESETS["stsun_tiny"]["window"] * PRESETS["stsun_tiny"]["patch_size"]
    changes = _changes_by_window(model, 256, window_px)  # 4 × 4 windows
    assert (changes[:2, :2] > 1e-6).all()
    # Global attention (what 256² got before) would reach every window.
    assert changes[2:].max() == 0 and changes[:, 2:].max() == 0


@pytest.mark.parametrize(("grid", "shift"), [((7, 13), 0), ((7, 13), 2), ((8, 8), 2), ((3, 2), 3)])
@pytest.mark.parametrize("some_invalid", [False, True])
def test_windowed_attention_is_attention_within_each_window_of_the_shifted_grid(
    grid, shift, some_invalid
):
    """Against one global attention masked to 'same window and real key'."""
    h, w = grid
    window, dim = 4, 8
    gen = torch.Generator().manual_seed(0)
    qkv = torch.randn(3, h * w, 3 * dim, generator=gen)
    valid = torch.rand(3, h * w, generator=gen) > 0.3 if some_invalid else None

    def attend(x, mask):  # one head: (M, L, 3 dim), mask (M, 1, 1, L)
        q, k, v = (t[:, None] for t in x.chunk(3, -1))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)[:, 0]

    got = windowed_attention(qkv, grid, window, shift, attend, valid)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    group = (((rows + shift) // window) * 1000 + (cols + shift) // window).flatten()
    same = group[:, None] == group[None, :]  # (L, L)
    keys = same[None] if valid is None else same[None] & valid[:, None, :]
    # A window without a real key attends to all of its own keys (its output is discarded).
    keys = keys | (same[None] & ~keys.any(-1, keepdim=True))
    q, k, v = qkv.chunk(3, -1)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=keys)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert window_segments(h, window, shift)[0][0] == 0
    assert sum(count * length for _, count, length in window_segments(w, window, shift)) == w


def test_a_position_offset_shifts_the_code_as_moving_the_grid_does():
    gsd = torch.tensor([10.0])
    # An offset of two token spacings (2 * 8 * 10 m) on both axes is the grid two tokens on.
    shifted = ground_position_encoding(3, 3, 8, gsd, 64, torch.tensor([[160.0, 160.0]]))
    larger = ground_position_encoding(5, 5, 8, gsd, 64).view(1, 5, 5, 64)[:, 2:, 2:]
    torch.testing.assert_close(shifted.view(1, 3, 3, 64), larger)
    zero = ground_position_encoding(3, 4, 8, gsd, 64, torch.zeros(1, 2))
    torch.testing.assert_close(zero, ground_position_encoding(3, 4, 8, gsd, 64))


def test_position_jitter_acts_in_training_only():
    batch = make_batch(b=2, t=1, c=3, h=32, w=32)
    model = _model()  # jitter on by default
    assert model.position_jitter_m == 5_000.0
    plain = _model(position_jitter_m=0.0)
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(_logits(model, batch), _logits(plain, batch))  # eval: no offset
    model.train()
    torch.manual_seed(1)
    first = model(batch.validate()).logits
    torch.manual_seed(2)
    assert not torch.allclose(first, model(batch.validate()).logits)
    with pytest.raises(ValueError, match="position_jitter_m"):
        _model(position_jitter_m=-1.0)


def test_seeded_position_jitter_repeats_whatever_else_draws_random_numbers():
    batch = make_batch(b=2, t=1, c=3, h=32, w=32)
    model = _model().train()
    model.seed_position_jitter(7)
    first = model(batch.validate()).logits
    torch.rand(5)  # another draw from torch's global generator changes nothing
    model.seed_position_jitter(7)
    torch.testing.assert_close(model(batch.validate()).logits, first)
    model.seed_position_jitter(8)
    assert not torch.allclose(model(batch.validate()).logits, first)
