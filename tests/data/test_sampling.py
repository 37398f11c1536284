import numpy as np
import pytest

from stsun_lightning.data.samplers.sources import SourceBatchSampler, source_probabilities


def _source(index, offsets):
    return int(np.searchsorted(offsets, index, side="right") - 1)


def test_temperature_flattens_source_probabilities():
    sizes = [1000, 10]
    by_size = source_probabilities(sizes, 1.0)
    flat = source_probabilities(sizes, 100.0)
    assert by_size[0] == pytest.approx(1000 / 1010)
    assert abs(flat[0] - 0.5) < 0.05
    with pytest.raises(ValueError, match="temperature must be > 0"):
        source_probabilities(sizes, 0)


def test_every_batch_comes_from_one_source_and_sources_mix():
    sampler = SourceBatchSampler(
        [50, 30, 20], batch_size=4, num_batches=60, temperature=2.0, seed=1
    )
    seen = set()
    for batch in sampler:
        sources = {_source(i, sampler.offsets) for i in batch}
        assert len(sources) == 1 and len(batch) == 4
        seen |= sources
    assert seen == {0, 1, 2}


def test_ddp_ranks_see_disjoint_batches_that_together_make_the_epoch():
    kwargs = dict(sizes=[40, 24], batch_size=4, num_batches=10, seed=3)
    full = list(SourceBatchSampler(**kwargs, rank=0, world_size=1))
    ranks = [list(SourceBatchSampler(**kwargs, rank=r, world_size=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 5
    assert sorted(ranks[0] + ranks[1]) == sorted(full)
    assert not {tuple(b) for b in ranks[0]} & {tuple(b) for b in ranks[1]}


def test_epochs_differ_but_are_reproducible():
    a = SourceBatchSampler([40, 24], batch_size=4, num_batches=6, seed=3)
    first = list(a)
    a.set_epoch(1)
    second = list(a)
    b = SourceBatchSampler([40, 24], batch_size=4, num_batches=6, seed=3)
    b.set_epoch(1)
    assert first != second and list(b) == second


def test_evaluation_order_visits_every_item_once():
    sampler = SourceBatchSampler([10, 7], batch_size=4, shuffle=False)
    items = [i for batch in sampler for i in batch]
    assert items == list(range(17))
    assert len(sampler) == 5
