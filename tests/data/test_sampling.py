import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from stsun_lightning.data.samplers.epochs import EpochConcatDataset, EpochDataset, EpochIndex
from stsun_lightning.data.samplers.sources import SourceBatchSampler, source_probabilities


def _source(key, offsets):
    return int(np.searchsorted(offsets, key.index, side="right") - 1)


def _indices(batches):
    return [[key.index for key in batch] for batch in batches]


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
    first = _indices(a)
    a.set_epoch(1)
    second = _indices(a)
    b = SourceBatchSampler([40, 24], batch_size=4, num_batches=6, seed=3)
    b.set_epoch(1)
    assert first != second and _indices(b) == second


def test_every_index_carries_the_epoch_it_is_drawn_for():
    sampler = SourceBatchSampler([40, 24], batch_size=4, num_batches=6, seed=3)
    sampler.sampler.set_epoch(5)  # as Lightning sets it, in the main process
    assert {key.epoch for batch in sampler for key in batch} == {5}
    sampler.resume(2, batches_done=4)  # a resumed run draws the epoch it stopped in
    resumed = list(sampler)
    assert len(resumed) == 2 and {key.epoch for batch in resumed for key in batch} == {2}
    evaluation = SourceBatchSampler([10, 7], batch_size=4, shuffle=False)
    evaluation.set_epoch(3)
    assert all(isinstance(key, EpochIndex) and key.epoch == 3 for b in evaluation for key in b)


def test_evaluation_order_visits_every_item_once():
    sampler = SourceBatchSampler([10, 7], batch_size=4, shuffle=False)
    items = [i for batch in _indices(sampler) for i in batch]
    assert items == list(range(17))
    assert len(sampler) == 5


class _Drawn(EpochDataset[tuple[int, int]]):
    """Item i of epoch e is (e, i)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def item(self, epoch: int, index: int) -> tuple[int, int]:
        return epoch, index


def test_the_concatenation_gives_each_dataset_its_own_key():
    plain = TensorDataset(torch.arange(100, 103))
    joined = EpochConcatDataset([_Drawn(4), plain, _Drawn(2)])
    assert joined[EpochIndex(7, 0)] == (7, 0)
    assert joined[EpochIndex(7, 3)] == (7, 3)
    assert joined[EpochIndex(7, 5)] == (torch.tensor(101),)  # a plain dataset: its index
    assert joined[EpochIndex(9, 8)] == (9, 1)  # local index, the key's epoch
    assert joined[2] == (0, 2)  # a plain index is epoch 0
    with pytest.raises(IndexError, match="out of range"):
        joined[EpochIndex(0, 9)]
    with pytest.raises(IndexError, match="out of range"):
        _Drawn(4)[EpochIndex(0, 4)]


def test_source_weights_scale_the_shares_after_the_temperature():
    assert source_probabilities([100, 100], 2.0, [3.0, 1.0]) == pytest.approx([0.75, 0.25])
    by_temperature = source_probabilities([400, 100], 2.0)  # 20 : 10
    assert source_probabilities([400, 100], 2.0, [1.0, 2.0]) == pytest.approx([0.5, 0.5])
    assert by_temperature == pytest.approx([2 / 3, 1 / 3])
    for bad in ([1.0], [1.0, 0.0], [1.0, float("nan")]):
        with pytest.raises(ValueError, match="Source weights must be 2 finite numbers > 0"):
            source_probabilities([100, 100], 2.0, bad)


def test_a_weighted_source_gets_its_share_of_the_training_batches():
    sampler = SourceBatchSampler(
        [50, 50], batch_size=2, num_batches=2000, seed=0, weights=[1.0, 3.0]
    )
    sources = [_source(batch[0], sampler.offsets) for batch in sampler]
    assert abs(sources.count(1) / len(sources) - 0.75) < 0.03
