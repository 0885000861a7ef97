"""The adaptive BatchSizer as a unit: behaviour only (no clocks are read here)."""

import pytest

from cluster_func.local import batching
from cluster_func.local.batching import BatchSizer

T = batching.TARGET_BATCH_SECONDS


def feed(sizer, per_call, rounds):
    """Run ``rounds`` batches whose calls each cost ``per_call`` seconds; return the sizes chosen."""
    sizes = []
    for _ in range(rounds):
        n = sizer.next_size()
        sizes.append(n)
        sizer.observe(n, n * per_call)
    return sizes


def test_starts_with_one_call():
    assert BatchSizer().next_size() == 1


def test_stays_at_one_until_it_has_measured_something():
    s = BatchSizer()
    assert [s.next_size() for _ in range(5)] == [1, 1, 1, 1, 1]  # prefetching before any result


def test_grows_at_most_four_times_per_batch():
    sizes = feed(BatchSizer(), 1e-9, 12)
    assert sizes[0] == 1
    for a, b in zip(sizes, sizes[1:]):
        assert b <= 4 * a
    assert sizes[:5] == [1, 4, 16, 64, 256]


def test_caps_at_max_batch():
    sizes = feed(BatchSizer(), 1e-12, 30)
    assert max(sizes) == batching.MAX_BATCH
    assert sizes[-1] == batching.MAX_BATCH
    small = feed(BatchSizer(max_batch=10), 1e-12, 10)
    assert max(small) == 10


def test_settles_where_a_batch_takes_about_the_target_time():
    per_call = T / 50
    sizes = feed(BatchSizer(), per_call, 20)
    assert sizes[-1] == pytest.approx(50, rel=0.05)


def test_slow_calls_get_batches_of_one():
    assert feed(BatchSizer(), 10 * T, 10) == [1] * 10


def test_shrinks_at_once_when_calls_get_dearer():
    s = BatchSizer()
    feed(s, 1e-7, 15)
    big = s.next_size()
    assert big >= 1000
    s.observe(big, big * T)  # one batch in which every call cost a whole batch's worth
    assert s.next_size() == 1
    s2 = BatchSizer()
    feed(s2, T / 1000, 15)
    s2.observe(10, 10 * T / 10)
    assert s2.next_size() == 10  # follows the dearer cost in one step


def test_grows_back_gradually_when_calls_get_cheaper():
    s = BatchSizer()
    feed(s, T, 5)
    assert s.next_size() == 1
    sizes = feed(s, 1e-9, 8)
    assert sizes[0] <= 4
    for a, b in zip(sizes, sizes[1:]):
        assert b <= 4 * a


def test_ignores_empty_observations():
    s = BatchSizer()
    s.observe(0, 1.0)
    assert s.per_call is None and s.next_size() == 1


def test_zero_duration_does_not_divide_by_zero():
    s = BatchSizer()
    s.observe(5, 0.0)
    assert 1 <= s.next_size() <= 4


def test_split_after_only_for_slow_calls():
    s = BatchSizer()
    assert s.split_after == 0  # nothing measured yet
    s.observe(1000, 1000 * batching.CLOCK_CHECK_MIN_CALL / 10)
    assert s.split_after == 0  # cheap calls: the worker never checks the clock
    s.observe(10, 10 * batching.CLOCK_CHECK_MIN_CALL * 10)
    assert s.split_after == pytest.approx(T * batching.SPLIT_FACTOR)
    assert s.split_after > 0


def test_split_after_turns_off_again_when_calls_get_cheap():
    s = BatchSizer()
    s.observe(1, 1.0)
    assert s.split_after > 0
    feed(s, 1e-9, 30)
    assert s.split_after == 0


def test_a_batch_handed_back_part_way_is_re_dealt_in_batches_sized_for_the_new_cost():
    """A worker that hands back the rest of a batch (its calls got dear) must not get the whole
    rest again: it is re-dealt in small batches so that every worker gets a share."""
    from cluster_func.core.bins import Work
    from cluster_func.local.reporter import Reporter
    from cluster_func.local.batching import Batch
    from cluster_func.local.pool import Worker
    from cluster_func.engine import Settings
    from cluster_func.local.runner import Runner

    r = Runner(Settings(None, 2, "fork"), Work(iter(()), 0, 1), Reporter(progress=False))
    r.dealer.sizer.observe(40, 40 * 0.0001)  # cheap calls so far: 0.1 ms each
    w = Worker(0)
    b = Batch(next(r.dealer.ids), range(100, 140), list(range(100, 140)))
    r.batches[b.id] = b
    w.outstanding.append(b)
    r._on_done(w, b.id, 1, 0.02, None, None, None)  # the first call took 20 ms, then the worker gave the rest back
    assert r.outcome.done == 1
    sizes = [len(p.elements) for p in r.dealer.pending]
    assert sum(sizes) == 39 and max(sizes) == 1, sizes
    assert [p.positions[0] for p in r.dealer.pending] == list(range(101, 140))  # in order


def test_a_batch_of_a_range_travels_as_the_range_itself():
    import pickle

    from cluster_func.core.bins import RangeWork

    work = RangeWork(range(10, 1000, 5))
    positions, elements, error = work.take(4)
    assert (positions, elements, error) == (range(0, 4), range(10, 30, 5), None)
    data = batching.pickled(batching.Batch(0, positions, elements), None)
    assert pickle.loads(data) == range(10, 30, 5) and len(data) < 60
    work.take(10_000)
    assert work.take(3) == (range(198, 198), range(1000, 1000, 5), None) and work.produced() == 198
