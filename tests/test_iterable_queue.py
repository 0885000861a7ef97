"""Tests for cluster_func.iterable_queue.IterableQueue.

Every multi-process test joins its processes with a timeout and fails (after
killing what is left) if one is still alive, so a hang is a failure, not a
stuck suite.  There are no timing assertions.
"""

import os
import pickle
import queue
import random
import re
import subprocess
import sys
import threading
import time
import multiprocessing as mp

import pytest

from cluster_func import (
    ConsumerQueueClosedException,
    IterableQueue,
    ProducerQueueClosedException,
)
from cluster_func import iterable_queue as iqmod
from cluster_func.iterable_queue import (
    ConsumerQueue,
    Empty,
    Full,
    IterableQueueClosedException,
    ProducerQueue,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = [m for m in ("fork", "spawn", "forkserver")
           if m in mp.get_all_start_methods()]
TIMEOUT = float(os.environ.get("IQ_TEST_TIMEOUT", "30"))  # a hang fails
MANY = 20000            # enough small items to overfill a 64 KiB pipe

# Forkserver children then fork from a server that has already imported
# what this module imports (ignored if the server is already running).
try:
    mp.set_forkserver_preload(["pytest", "cluster_func.iterable_queue",
                               __name__])
except Exception:
    pass


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def finish(procs, timeout=TIMEOUT):
    """Join every process within ``timeout`` seconds; kill the ones left and
    fail if there were any."""
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
        p.join(5)
    assert not alive, "processes still running after %ss: %s" % (
        timeout, [p.name for p in alive])


def collect(out, n, procs, timeout=TIMEOUT):
    """Get ``n`` results from ``out``; on a timeout kill ``procs`` and fail."""
    results = []
    deadline = time.monotonic() + timeout
    try:
        for _ in range(n):
            results.append(out.get(timeout=max(0.01,
                                               deadline - time.monotonic())))
    except queue.Empty:
        for p in procs:
            if p.is_alive():
                p.kill()
        pytest.fail("only %d of %d results within %ss" % (
            len(results), n, timeout))
    return results


def start(ctx, target, *args):
    p = ctx.Process(target=target, args=args)
    p.start()
    return p


# -- process targets (module level so that spawn/forkserver can import them)

def produce(q, producer_id, n, sleep=0.0, end="close"):
    for i in range(n):
        if sleep:
            time.sleep(random.random() * sleep)
        q.put((producer_id, i))
    if end == "close":
        q.close()
    elif end == "raise":
        raise RuntimeError("producer %s fails on purpose" % producer_id)
    # end == "return": leave without calling close()


def produce_then_wait(q, n, ready, forever):
    """Put n items, say so, then wait (to be killed) or leave with
    os._exit (no clean-up at all)."""
    for i in range(n):
        q.put(i)
    ready.set()
    if forever:
        time.sleep(3600)
    os._exit(0)


def produce_in_two_phases(q, first, total, go):
    for i in range(first):
        q.put(i)
    go.wait(TIMEOUT)
    for i in range(first, total):
        q.put(i)
    q.close()


def consume(q, consumer_id, out, sleep=0.0):
    seen = []
    for item in q:
        if sleep:
            time.sleep(random.random() * sleep)
        seen.append(item)
    out.put((consumer_id, seen))


def consume_early(q, consumer_id, out, k, how):
    """Take k items, report them, then stop in the way ``how`` says."""
    seen = [q.get(timeout=TIMEOUT) for _ in range(k)]
    out.put((consumer_id, seen))
    out.close()
    out.join_thread()           # the report must arrive even on os._exit
    if how == "close":
        q.close()
    elif how == "raise":
        raise RuntimeError("consumer stops on purpose")
    elif how == "exit":
        os._exit(3)
    elif how == "kill":
        q.get()                 # blocks (the queue is empty) until killed
    # how == "return": just leave


def consume_big(q, out):
    seen = []
    for producer_id, i, payload in q:
        ok = payload == bytes([i % 251]) * len(payload)
        seen.append((producer_id, i, len(payload), ok))
    out.put(seen)


def produce_big(q, producer_id, sizes):
    for i, size in enumerate(sizes):
        q.put((producer_id, i, bytes([i % 251]) * size))
    q.close()


def seed_producer(queue, producer_id):
    # The README's producer, plus a sequence number so that "exactly once"
    # can be checked.
    for i in range(10):
        time.sleep(random.random() / 1000.0)
        queue.put((producer_id, i))
    queue.close()


def seed_consumer(queue, consumer_id, out):
    seen = []
    for item in queue:
        time.sleep(random.random() / 1000.0)
        seen.append(item)
    out.put(seen)


# ---------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------

def test_import_paths():
    import cluster_func
    assert cluster_func.IterableQueue is iqmod.IterableQueue
    assert cluster_func.ProducerQueueClosedException is \
        iqmod.ProducerQueueClosedException
    assert cluster_func.ConsumerQueueClosedException is \
        iqmod.ConsumerQueueClosedException
    assert iqmod.Empty is queue.Empty
    assert iqmod.Full is queue.Full
    for name in iqmod.__all__:
        assert hasattr(iqmod, name)


def test_endpoints_types_and_wrong_direction():
    iq = IterableQueue()
    p, c = iq.get_producer(), iq.get_consumer()
    iq.close()
    assert isinstance(p, ProducerQueue) and isinstance(c, ConsumerQueue)
    with pytest.raises(NotImplementedError, match="cannot get"):
        p.get()
    with pytest.raises(NotImplementedError, match="cannot get_nowait"):
        p.get_nowait()
    with pytest.raises(NotImplementedError):
        iter(p)
    with pytest.raises(NotImplementedError, match="cannot put"):
        c.put(1)
    with pytest.raises(NotImplementedError, match="cannot put_nowait"):
        c.put_nowait(1)
    p.close()
    c.close()


def test_no_endpoints_after_close():
    iq = IterableQueue()
    assert not iq.closed
    iq.close()
    iq.close()      # idempotent
    assert iq.closed
    with pytest.raises(IterableQueueClosedException):
        iq.get_producer()
    with pytest.raises(IterableQueueClosedException):
        iq.get_consumer()


def test_put_after_close_raises():
    iq = IterableQueue()
    p = iq.get_producer()
    p.put(1)
    p.close()
    p.close()       # idempotent
    assert p.closed
    with pytest.raises(ProducerQueueClosedException):
        p.put(2)
    with pytest.raises(ProducerQueueClosedException):
        p.put_nowait(2)


def test_single_process_round_trip_and_iteration():
    iq = IterableQueue()
    p, c = iq.get_producer(), iq.get_consumer()
    iq.close()
    items = [0, -1, 2 ** 70, 1.5, "text", b"bytes", None, True, (1, "a"),
             {"k": [1, 2]}, {1, 2}, "x" * 100000]
    for item in items:
        p.put(item)
    p.close()
    assert list(c) == items
    assert list(c) == []            # finished for good
    with pytest.raises(ConsumerQueueClosedException):
        c.get()
    with pytest.raises(ConsumerQueueClosedException):
        c.get_nowait()


def test_put_never_blocks_without_maxsize_and_keeps_order():
    # Far more than the OS pipe holds, put before anyone reads, from a
    # single process: like multiprocessing.Queue, this must not block.
    iq = IterableQueue()
    p, c = iq.get_producer(), iq.get_consumer()
    iq.close()
    n = 100000
    for i in range(n):
        p.put(i)
    p.put(b"z" * 300000)
    p.put_nowait("after")
    p.close()
    got = list(c)
    assert got[:n] == list(range(n))
    assert got[n:] == [b"z" * 300000, "after"]


def test_one_thread_two_producers_and_a_big_item():
    # A big item only partly fits in the pipe; its rest waits for room while
    # holding the write lock.  Another producer in the same thread must not
    # wait for that lock: the only reader is this thread.
    iq = IterableQueue()
    p1, p2, c = iq.get_producer(), iq.get_producer(), iq.get_consumer()
    iq.close()
    p1.put(b"a" * 300000)
    for i in range(MANY):
        p2.put(i)
    p1.put("end")
    p1.close()
    p2.close()
    got = list(c)
    assert got[0] == b"a" * 300000
    assert [x for x in got if isinstance(x, int)] == list(range(MANY))
    assert got.index("end") > 0 and len(got) == MANY + 2


def test_empty_then_items_then_finished():
    iq = IterableQueue()
    p, c = iq.get_producer(), iq.get_consumer()
    iq.close()
    # Nothing there yet, but more may come: Empty, never the end.
    with pytest.raises(Empty):
        c.get_nowait()
    with pytest.raises(Empty):
        c.get(block=False)
    with pytest.raises(Empty):
        c.get(timeout=0.05)
    with pytest.raises(Empty):
        c.get(True, 0)
    assert c.empty()
    p.put("a")
    p.put("b")
    assert c.get_nowait() == "a"
    assert c.get(timeout=5) == "b"
    with pytest.raises(Empty):
        c.get(timeout=0.05)
    p.close()
    # Now nothing more can come: the end, never Empty.
    with pytest.raises(ConsumerQueueClosedException):
        c.get_nowait()
    with pytest.raises(ConsumerQueueClosedException):
        c.get(timeout=0.05)


def test_the_end_needs_the_queue_closed():
    iq = IterableQueue()
    p, c = iq.get_producer(), iq.get_consumer()
    for i in range(5):
        p.put(i)
    p.close()
    assert [c.get_nowait() for _ in range(5)] == list(range(5))
    with pytest.raises(Empty):      # not closed: a producer may still come
        c.get_nowait()
    iq.close()
    with pytest.raises(ConsumerQueueClosedException):
        c.get_nowait()


@pytest.mark.parametrize("maxsize", [0, 3])
def test_put_discards_when_no_consumer_is_left(maxsize):
    iq = IterableQueue(maxsize=maxsize)
    p, c = iq.get_producer(), iq.get_consumer()
    iq.close()
    c.close()                       # the only consumer stops: nobody reads

    def put_everything():
        for i in range(MANY):
            p.put(i)                # neither blocks nor raises
        p.close()

    t = threading.Thread(target=put_everything, daemon=True)
    t.start()
    t.join(TIMEOUT)
    assert not t.is_alive(), "put() blocked with no consumer left"
    # The feeder closes the producer for everybody once nothing is left.
    deadline = time.monotonic() + TIMEOUT
    while iq._shared.counts() != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert iq._shared.counts() == (0, 0)


def test_blocking_get_waits_for_items_then_raises_closed():
    iq = IterableQueue()
    p, c = iq.get_producer(), iq.get_consumer()
    iq.close()

    def later():
        time.sleep(0.2)
        p.put("late")
        time.sleep(0.2)
        p.close()

    t = threading.Thread(target=later, daemon=True)
    t.start()
    try:
        assert c.get() == "late"        # blocked until the item came
        with pytest.raises(ConsumerQueueClosedException):
            c.get()                     # blocked until the producer closed
    finally:
        t.join(TIMEOUT)
    assert not t.is_alive()


def test_get_timeout_returns_item_that_arrives_in_time():
    iq = IterableQueue()
    p, c = iq.get_producer(), iq.get_consumer()
    iq.close()
    t = threading.Timer(0.1, p.put, args=("x",))
    t.daemon = True
    t.start()
    try:
        assert c.get(timeout=TIMEOUT) == "x"
    finally:
        t.join(TIMEOUT)
    p.close()
    assert list(c) == []


def test_negative_timeouts_rejected():
    iq = IterableQueue(maxsize=1)
    p, c = iq.get_producer(), iq.get_consumer()
    with pytest.raises(ValueError):
        c.get(timeout=-1)
    p.put(1)
    with pytest.raises(ValueError):
        p.put(2, timeout=-1)


def test_maxsize_full_qsize():
    iq = IterableQueue(maxsize=2)
    assert iq.maxsize == 2
    p, c = iq.get_producer(), iq.get_consumer()
    iq.close()
    assert p.qsize() == c.qsize() == 0
    assert p.empty() and c.empty() and not p.full()
    p.put(1)
    p.put(2)
    assert p.qsize() == c.qsize() == iq.qsize() == 2
    assert p.full() and c.full() and not c.empty()
    with pytest.raises(Full):
        p.put_nowait(3)
    with pytest.raises(Full):
        p.put(3, block=False)
    with pytest.raises(Full):
        p.put(3, timeout=0.05)
    assert c.get() == 1
    assert c.qsize() == 1 and not c.full()
    p.put(3, timeout=1)
    p.close()
    assert list(c) == [2, 3]
    assert c.qsize() == 0


def test_unpicklable_item_raises_and_queue_stays_usable():
    iq = IterableQueue()
    p, c = iq.get_producer(), iq.get_consumer()
    iq.close()
    with pytest.raises(Exception):
        p.put(lambda: None)
    with pytest.raises(Exception):
        p.put(threading.Lock())
    assert p.qsize() == 0
    p.put("ok")
    p.close()
    assert list(c) == ["ok"]


def test_consumer_close_and_context_manager():
    iq = IterableQueue()
    with iq.get_producer() as p:
        p.put(1)
    assert p.closed
    c1, c2 = iq.get_consumer(), iq.get_consumer()
    iq.close()
    c1.close()
    with pytest.raises(ConsumerQueueClosedException):
        c1.get()
    assert list(c1) == []
    assert list(c2) == [1]          # the other consumer gets what is left


def test_endpoints_cannot_be_pickled_outside_process_start():
    iq = IterableQueue()
    with pytest.raises(RuntimeError):
        pickle.dumps(iq.get_producer())


def test_dropped_producer_is_closed():
    # A producer endpoint that its owning process drops (garbage) counts as
    # closed, after its buffered items are written.
    iq = IterableQueue()
    c = iq.get_consumer()
    p = iq.get_producer()
    iq.close()
    for i in range(MANY):
        p.put(i)
    del p
    assert list(c) == list(range(MANY))


def test_consumer_threads_share_the_work():
    ctx = mp.get_context("fork" if "fork" in METHODS else METHODS[0])
    iq = IterableQueue()
    producers = [iq.get_producer() for _ in range(2)]
    consumers = [iq.get_consumer() for _ in range(3)]
    iq.close()
    procs = [start(ctx, produce, q, i, 5000) for i, q in enumerate(producers)]
    results = [[] for _ in consumers]
    threads = [threading.Thread(target=lambda c=c, r=r: r.extend(c),
                                daemon=True)
               for c, r in zip(consumers, results)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    finish(procs)
    assert not any(t.is_alive() for t in threads)
    seen = sorted(x for r in results for x in r)
    assert seen == sorted((i, j) for i in range(2) for j in range(5000))


# ---------------------------------------------------------------------------
# The README's example, many times
# ---------------------------------------------------------------------------

SEED_REPEATS = {"fork": 30, "spawn": 2, "forkserver": 5}


@pytest.mark.parametrize("method", METHODS)
def test_seed_example_delivers_every_item_exactly_once(method):
    ctx = mp.get_context(method)
    expected = sorted((p, i) for p in range(17) for i in range(10))
    for repeat in range(SEED_REPEATS[method]):
        iq = IterableQueue()
        out = ctx.Queue()
        procs = []
        for producer_id in range(17):
            procs.append(start(ctx, seed_producer, iq.get_producer(),
                               producer_id))
        for consumer_id in range(13):
            procs.append(start(ctx, seed_consumer, iq.get_consumer(),
                               consumer_id, out))
        iq.close()
        results = collect(out, 13, procs)
        finish(procs)
        seen = sorted(x for r in results for x in r)
        assert seen == expected, "repeat %d" % repeat
        assert all(p.exitcode == 0 for p in procs)


def test_example_script_runs_as_is():
    proc = subprocess.run(
        [sys.executable, os.path.join("examples", "iterable_queue_example.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=4 * TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    # (Lines printed by different processes may interleave.)
    assert re.search(r"OK: consumers saw 170 items, expected 170, each "
                     r"exactly once: True\s*$", proc.stdout), proc.stdout
    assert len(re.findall(r"consumer \d+ saw item \d+", proc.stdout)) == 170


FORGOT_CLOSE_SCRIPT = r"""
import os, sys
sys.path.insert(0, %(root)r)
import multiprocessing as mp
from cluster_func import IterableQueue

def produce(q, n):
    for i in range(n):
        q.put(i)
    q.close()

def consume(q):
    os.write(1, b"count %%d\n" %% sum(1 for _ in q))

if __name__ == "__main__":
    ctx = mp.get_context(%(method)r)
    iq = IterableQueue()
    for _ in range(3):
        ctx.Process(target=produce, args=(iq.get_producer(), 1000)).start()
    for _ in range(2):
        ctx.Process(target=consume, args=(iq.get_consumer(),)).start()
    # No iq.close() and no join(): the queue is closed when this process
    # exits, before multiprocessing joins the children.
"""


@pytest.mark.parametrize("method", METHODS[:2])
def test_creator_exit_closes_a_forgotten_queue(method, tmp_path):
    # Under spawn this also checks that a parent exiting right after
    # start() keeps the queue's semaphores until the children opened them.
    script = tmp_path / "forgot_close.py"    # a file: spawn re-imports it
    script.write_text(FORGOT_CLOSE_SCRIPT % {"root": ROOT, "method": method})
    proc = subprocess.run([sys.executable, str(script)], cwd=ROOT,
                          capture_output=True, text=True, timeout=4 * TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    counts = [int(n) for n in re.findall(r"count (\d+)", proc.stdout)]
    assert len(counts) == 2 and sum(counts) == 3000, proc.stdout


# ---------------------------------------------------------------------------
# Consumers that stop early
# ---------------------------------------------------------------------------

EARLY_CASES = [(m, how) for m in METHODS
               for how in ("close", "raise", "exit", "kill", "return")
               if m == "fork" or how == "kill"]


@pytest.mark.parametrize("method,how", EARLY_CASES)
def test_consumer_stopping_early_does_not_block_the_others(method, how):
    """A consumer takes some items and stops (closes, raises, exits hard,
    or is killed while blocked in get()); the other consumer still gets
    every remaining item and everybody ends."""
    ctx = mp.get_context(method)
    k, total = 50, MANY
    iq = IterableQueue()
    prod = iq.get_producer()
    early, late = iq.get_consumer(), iq.get_consumer()
    iq.close()
    go = ctx.Event()
    out = ctx.Queue()
    p = start(ctx, produce_in_two_phases, prod, k, total, go)
    a = start(ctx, consume_early, early, "early", out, k, how)
    procs = [p, a]
    (name, early_items), = collect(out, 1, procs)
    if how == "kill":
        time.sleep(0.3)         # let it block in get()
        a.kill()
    finish([a])
    b = start(ctx, consume, late, "late", out)
    procs.append(b)
    go.set()
    (name, late_items), = collect(out, 1, procs)
    finish(procs)
    assert early_items == list(range(k))
    assert sorted(early_items + late_items) == list(range(total))
    assert p.exitcode == 0 and b.exitcode == 0


ALONE_CASES = [(m, how, maxsize) for m in METHODS
               for how in ("close", "raise", "exit", "kill")
               for maxsize in (0, 10)
               if m == "fork" or (how == "kill" and maxsize == 0)]


@pytest.mark.parametrize("method,how,maxsize", ALONE_CASES)
def test_producers_end_when_every_consumer_stopped(method, how, maxsize):
    """The only consumer stops early; the producer then puts far more than
    the pipe (or maxsize) holds: it must not block for ever."""
    ctx = mp.get_context(method)
    iq = IterableQueue(maxsize=maxsize)
    prod = iq.get_producer()
    cons = iq.get_consumer()
    iq.close()
    go = ctx.Event()
    out = ctx.Queue()
    k = 5
    p = start(ctx, produce_in_two_phases, prod, k, MANY, go)
    a = start(ctx, consume_early, cons, "only", out, k, how)
    (name, items), = collect(out, 1, [p, a])
    if how == "kill":
        time.sleep(0.3)
        a.kill()
    elif how in ("close", "raise"):
        finish([a])
    # For "exit" and "kill" the consumer is left unjoined (a zombie) while
    # the producer runs: it must still be seen as dead.
    go.set()
    finish([p])
    finish([a])
    assert items == list(range(k))
    assert p.exitcode == 0


# ---------------------------------------------------------------------------
# Zero consumers, producers that put nothing
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_zero_consumers_ends_cleanly(method):
    ctx = mp.get_context(method)
    iq = IterableQueue()
    producers = [iq.get_producer() for _ in range(3)]
    iq.close()
    procs = [start(ctx, produce, q, i, MANY) for i, q in enumerate(producers)]
    finish(procs)
    assert all(p.exitcode == 0 for p in procs)


def test_zero_consumers_closed_after_producers_finished():
    ctx = mp.get_context(METHODS[0])
    iq = IterableQueue(maxsize=100)
    producers = [iq.get_producer() for _ in range(2)]
    procs = [start(ctx, produce, q, i, 1000) for i, q in enumerate(producers)]
    time.sleep(0.3)             # producers wait: a consumer may still come
    iq.close()                  # ... now none can
    finish(procs)
    assert all(p.exitcode == 0 for p in procs)


@pytest.mark.parametrize("method,end", [(m, e) for m in METHODS
                                        for e in ("close", "return")])
def test_producers_that_put_nothing(method, end):
    # "return": the producers neither put nor close; their endpoints are
    # closed when their processes exit.
    ctx = mp.get_context(method)
    iq = IterableQueue()
    producers = [iq.get_producer() for _ in range(3)]
    consumers = [iq.get_consumer() for _ in range(2)]
    iq.close()
    out = ctx.Queue()
    procs = [start(ctx, produce, q, i, 0, 0.0, end)
             for i, q in enumerate(producers)]
    procs += [start(ctx, consume, q, i, out) for i, q in enumerate(consumers)]
    results = collect(out, 2, procs)
    finish(procs)
    assert [items for _, items in results] == [[], []]


def test_no_producers_at_all():
    iq = IterableQueue()
    c = iq.get_consumer()
    iq.close()
    assert list(c) == []


def test_no_endpoints_at_all():
    iq = IterableQueue()
    iq.close()
    assert iq.qsize() == 0


# ---------------------------------------------------------------------------
# Producers whose process ends without close()
# ---------------------------------------------------------------------------

END_CASES = [(m, end) for m in METHODS for end in ("return", "raise")
             if m == "fork" or end == "return"]


@pytest.mark.parametrize("method,end", END_CASES)
def test_producer_process_ending_without_close_counts_as_closed(method, end):
    ctx = mp.get_context(method)
    iq = IterableQueue()
    producers = [iq.get_producer() for _ in range(2)]
    consumers = [iq.get_consumer() for _ in range(2)]
    iq.close()
    out = ctx.Queue()
    # One producer closes, the other just ends (returns or raises) after
    # putting more than the pipe holds (so some items are still buffered in
    # its process when its function returns).
    procs = [start(ctx, produce, producers[0], 0, 100),
             start(ctx, produce, producers[1], 1, MANY, 0.0, end)]
    procs += [start(ctx, consume, q, i, out) for i, q in enumerate(consumers)]
    results = collect(out, 2, procs)
    finish(procs)
    seen = sorted(x for _, items in results for x in items)
    assert seen == sorted([(0, i) for i in range(100)] +
                          [(1, i) for i in range(MANY)])


@pytest.mark.parametrize("method,forever", [(m, f) for m in METHODS
                                            for f in (True, False)
                                            if m == "fork" or f])
def test_killed_producer_is_noticed(method, forever):
    """A producer killed (or leaving through os._exit) after its items were
    put: consumers notice that its process is gone and end, with every item
    it put."""
    ctx = mp.get_context(method)
    iq = IterableQueue()
    prod = iq.get_producer()
    cons = iq.get_consumer()
    iq.close()
    ready = ctx.Event()
    out = ctx.Queue()
    p = start(ctx, produce_then_wait, prod, 100, ready, forever)
    c = start(ctx, consume, cons, 0, out)
    assert ready.wait(TIMEOUT)
    if forever:
        p.kill()
    (cid, items), = collect(out, 1, [p, c])
    finish([p, c])
    assert items == list(range(100))


# ---------------------------------------------------------------------------
# Big items: framing across partial pipe writes from several producers
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS[:1])
def test_big_and_small_items_from_several_producers(method):
    ctx = mp.get_context(method)
    rng = random.Random(1)
    sizes = [[rng.choice([1, 100, 4000, 4092, 4093, 5000, 70000, 300000])
              for _ in range(40)] for _ in range(3)]
    iq = IterableQueue()
    producers = [iq.get_producer() for _ in range(3)]
    consumers = [iq.get_consumer() for _ in range(2)]
    iq.close()
    out = ctx.Queue()
    procs = [start(ctx, produce_big, q, i, sizes[i])
             for i, q in enumerate(producers)]
    procs += [start(ctx, consume_big, q, out) for q in consumers]
    results = collect(out, 2, procs)
    finish(procs)
    seen = sorted(x for r in results for x in r)
    expected = sorted((pid, i, size, True) for pid in range(3)
                      for i, size in enumerate(sizes[pid]))
    assert seen == expected
