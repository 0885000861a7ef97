"""The worker's messages to the runner: typed on both ends, plain tuples on the wire, and the
runner's reads of a result pipe (local/worker.py, local/pool.py)."""

import multiprocessing
import os
import pickle
import select
import threading

import pytest

from cluster_func.local.pool import Pool
from cluster_func.local.worker import Done, Fail, Fatal, Ready, message, wire


def test_each_message_travels_as_the_plain_tuple_of_its_fields_and_comes_back_typed():
    sent = [Ready("ready", 12), Fatal("fatal", "ImportError: x"), Fail("fail", 3, 1, "ValueError", "m", "tb"),
            Done("done", 3, 7, 0.25, "c0ffee0a", None, b"records")]
    for msg in sent:
        raw = pickle.loads(pickle.dumps(wire(msg)))
        assert type(raw) is tuple and raw[0] == msg.kind
        got = message(raw)
        assert type(got) is type(msg) and got == msg
    assert message(("done", 3, 7, 0.25, "c", None, None)).n_done == 7


def _pool_reading(conn):
    pool = Pool(None, 1)
    w = pool.workers[0]
    w.result_r = conn
    os.set_blocking(conn.fileno(), False)
    return pool, w


def test_one_read_takes_every_whole_message_the_pipe_holds():
    r, s = multiprocessing.Pipe(duplex=False)
    pool, w = _pool_reading(r)
    s.send(wire(Ready("ready", 5)))
    s.send(wire(Fail("fail", 1, 0, "E", "m", "tb")))
    assert pool.receive(w) == [Ready("ready", 5), Fail("fail", 1, 0, "E", "m", "tb")]
    assert pool.receive(w) == []  # nothing more: no wait
    s.close()
    with pytest.raises(EOFError):
        pool.receive(w)


def _receive_while_sending(r, pool, w, send, *args):
    """Run ``send(*args)`` in a thread while the pool receives from ``r`` until a message is
    whole; (the messages, how many reads it took)."""
    writer = threading.Thread(target=send, args=args)
    writer.start()
    got, reads = [], 0
    while not got:
        select.select([r.fileno()], [], [], 10)
        got = pool.receive(w)
        reads += 1
    writer.join()
    return got, reads


def test_a_message_larger_than_the_pipe_comes_whole_over_several_reads():
    r, s = multiprocessing.Pipe(duplex=False)
    pool, w = _pool_reading(r)
    big = Done("done", 2, 3, 0.5, "c", None, os.urandom(300_000))
    got, reads = _receive_while_sending(r, pool, w, s.send, wire(big))  # (the send blocks until the pipe is read)
    assert got == [big] and reads > 1 and not w.inbox
    s.send(wire(Ready("ready", 1)))
    s.close()
    assert pool.receive(w, until_empty=True) == [Ready("ready", 1)]


def _send_done_with_values(s, done, values):
    from cluster_func.local.worker import _send_done

    _send_done(s.send, s.send_bytes, done._replace(records=values), True)


@pytest.mark.parametrize("size", [10, 300_000])
def test_values_sent_after_their_done_come_with_it_whole(size):
    # The values travel as a message of their own right after their "done" (not pickled into it):
    # the runner hands on the "done" only once they are here, with them and their CRC-32.
    import zlib

    r, s = multiprocessing.Pipe(duplex=False)
    pool, w = _pool_reading(r)
    values = os.urandom(size)
    got, reads = _receive_while_sending(r, pool, w, _send_done_with_values, s,
                                        Done("done", 4, 2, 0.1, "c", None, None), values)
    assert len(got) == 1 and got[0][:6] == ("done", 4, 2, 0.1, "c", None)
    assert bytes(got[0].records) == values and got[0].values_crc == zlib.crc32(values)
    assert (reads > 1 or size < 65536) and not w.inbox and w.awaiting is None and w.partial is None
    s.send(wire(Ready("ready", 1)))
    s.close()
    assert pool.receive(w, until_empty=True) == [Ready("ready", 1)]


def test_a_worker_gone_between_a_done_and_its_values_leaves_neither():
    # (its batch is then settled from the shared counters, as for any worker that dies)
    r, s = multiprocessing.Pipe(duplex=False)
    pool, w = _pool_reading(r)
    s.send(wire(Done("done", 4, 2, 0.1, "c", None, 200_000, 123)))
    os.write(s.fileno(), (200_000).to_bytes(4, "big") + os.urandom(1000))  # 1,000 of the 200,000 bytes
    s.close()
    assert pool.receive(w, until_empty=True) == []
    assert w.awaiting is not None and w.partial is not None and len(w.partial[0]) == 200_000
