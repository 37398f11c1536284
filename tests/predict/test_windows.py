import itertools

import numpy as np
import pytest

from stsun_lightning.data.datasets.windows import window_starts
from stsun_lightning.predict.windows import RowBandAccumulator, blend_weights


@pytest.mark.parametrize(
    ("length", "window", "stride"),
    [(1000, 256, 192), (256, 256, 192), (100, 256, 192), (513, 128, 100)],
)
def test_windows_cover_the_raster_and_end_at_its_edge(length, window, stride):
    starts = window_starts(length, window, stride)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + window] = True
    assert covered.all()
    assert starts[0] == 0
    assert starts[-1] == max(length - window, 0)
    assert all(b - a <= stride for a, b in itertools.pairwise(starts))


def test_an_overlap_as_large_as_the_window_is_refused():
    with pytest.raises(ValueError, match="stride must be > 0"):
        window_starts(100, 32, 0)


def test_blend_weights_are_positive_symmetric_and_flat_in_the_centre():
    w = blend_weights(64, 16)
    assert (w > 0).all()
    np.testing.assert_allclose(w, w[::-1, ::-1])
    assert w[32, 32] == 1.0 and w[0, 0] < 0.01


@pytest.mark.parametrize(("height", "width"), [(300, 170), (64, 64), (40, 90)])
def test_accumulator_reassembles_a_raster_exactly_from_overlapping_windows(height, width):
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(3, height, width)).astype(np.float32)
    window, overlap = 64, 16
    acc = RowBandAccumulator(3, height, width, window, overlap)
    out = np.full_like(truth, np.nan)
    for row, cols in acc.bands():
        for col in cols:
            patch = np.zeros((3, window, window), np.float32)
            part = truth[:, row : row + window, col : col + window]
            patch[:, : part.shape[1], : part.shape[2]] = part
            valid = np.zeros((window, window), bool)
            valid[: part.shape[1], : part.shape[2]] = True
            acc.add(col, patch, valid)
        top, n = acc.final_rows()
        for col0 in range(0, width, 50):  # in column chunks, as the writer reads them
            blended, weight = acc.blended(col0, min(col0 + 50, width))
            assert (weight > 0).all() and blended.shape[1] == n
            out[:, top : top + n, col0 : col0 + blended.shape[2]] = blended
        acc.advance()
    np.testing.assert_allclose(out, truth, rtol=1e-5, atol=1e-5)


def test_accumulator_holds_one_band_of_rows_not_the_raster():
    acc = RowBandAccumulator(4, 100_000, 512, 256, 64)
    assert acc.sums.shape == (4, 256, 512)
