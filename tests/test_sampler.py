"""EpochSampler (m2clip_fast/data/sampler.py): each rank's share of an epoch — disjoint, complete, the same
length on every rank for training, exact for evaluation, deterministic in (seed, epoch), resumable."""
from types import SimpleNamespace

from m2clip_fast.data import EpochSampler


def _shares(size, world, **kw):
    return [list(EpochSampler(size, SimpleNamespace(rank=r, world_size=world), **kw)) for r in range(world)]


def test_training_shares_are_disjoint_padded_and_cover_the_epoch():
    shares = _shares(10, 3, shuffle=True, seed=1)
    assert [len(s) for s in shares] == [4, 4, 4]  # padded to a multiple of the ranks
    flat = [i for s in shares for i in s]
    assert set(flat) == set(range(10)) and len(flat) == 12  # two indices repeat, as padding


def test_evaluation_shares_are_exact():
    shares = _shares(10, 3, shuffle=False, pad=False)
    assert sorted(i for s in shares for i in s) == list(range(10))


def test_order_depends_only_on_seed_and_epoch_and_resumes_mid_epoch():
    rank = SimpleNamespace(rank=0, world_size=1)
    a, b = EpochSampler(20, rank, shuffle=True, seed=3), EpochSampler(20, rank, shuffle=True, seed=3)
    assert list(a) == list(b) and list(a) != list(range(20))
    a.set_epoch(1)
    epoch1 = list(a)
    assert epoch1 != list(b) and sorted(epoch1) == list(range(20))
    a.set_epoch(1, start=7)
    assert list(a) == epoch1[7:] and len(a) == 13
