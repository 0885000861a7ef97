"""The producer endpoint and the fast half of the put path: a message of at
most ``PIPE_BUF`` bytes goes straight into the pipe when nothing of this
process's is waiting and the write lock comes quickly; everything else goes
through :mod:`._put`."""

import os
import time
from queue import Full
from typing import Any, NoReturn, Optional

from . import _process
from ._endpoint import _Endpoint
from ._put import _put_large, _PutState
from ._shared import (
    _FAST_LOCK_TIMEOUT,
    _PIPE_BUF,
    _PRODUCER,
    _PRODUCER_SLICE,
    _nobody_reads,
    _pack_header,
)
from .exceptions import ProducerQueueClosedException


class ProducerQueue(_Endpoint):
    """A producer endpoint: ``put`` items, then ``close()``.

    Obtain one from :meth:`IterableQueue.get_producer` and give it to one
    process (for instance as a :class:`multiprocessing.Process` argument).
    """

    _kind = _PRODUCER

    def _new_local(self) -> _PutState:
        return _PutState(self._shared, self._slot)

    def put(self, item: Any, block: bool = True,
            timeout: Optional[float] = None) -> None:
        """Put ``item`` on the queue.

        Like :meth:`multiprocessing.Queue.put`: with ``maxsize`` > 0, ``put``
        waits while the queue holds ``maxsize`` items, and raises
        :class:`queue.Full` at once with ``block=False``, or after
        ``timeout`` seconds.  With ``maxsize=0`` it never waits.

        The item is written straight into the underlying OS pipe when there
        is room; otherwise it waits in this process and a background thread
        writes it as soon as consumers make room.  Items still waiting are
        written before this process exits normally (the exit waits for
        that), and before the endpoint counts as closed.  If the queue is
        closed and no consumer is left (none was made, or all closed or
        died), items are discarded silently: nobody could receive them.

        Raises :class:`ProducerQueueClosedException` after :meth:`close`.
        """
        if self._closed or self._gen != _process._fork_generation:
            self._open_here(ProducerQueueClosedException,
                            "put() called on a closed ProducerQueue")
        shared = self._shared
        if not shared.sem.acquire(False):
            if not self._wait_for_slot(block, timeout):
                return
        local = self._local
        assert local is not None    # made when this process claimed it
        try:
            data = local.serialize(item)
        except BaseException:
            shared.sem.release()
            raise
        # Write straight into the pipe when nothing of ours is waiting (to
        # keep our items in order) and the write lock comes quickly.  The
        # lock is held for long only while a big message waits for room;
        # then hand the item to the feeder thread rather than wait (the
        # reader that would make room may be this very thread).
        size = len(data)
        if size + 4 <= _PIPE_BUF:
            msg = _pack_header(size) + data
            if not local.pending:
                wlock = shared.wlock
                if wlock.acquire(True, _FAST_LOCK_TIMEOUT):
                    try:
                        os.write(shared.wfd, msg)   # all or nothing
                        return
                    except BlockingIOError:
                        pass
                    finally:
                        wlock.release()
            local.enqueue(msg)
            return
        _put_large(shared, local, data, size)

    def put_nowait(self, item: Any) -> None:
        """Same as ``put(item, block=False)``."""
        return self.put(item, False)

    def _wait_for_slot(self, block: bool, timeout: Optional[float]) -> bool:
        """Wait for room under ``maxsize``: True once a slot is taken, False
        if nobody reads any more (the item is then dropped); raise Full."""
        sem = self._shared.sem
        if not block:
            if _nobody_reads(self._shared):
                return False
            raise Full
        deadline = None
        if timeout is not None:
            if timeout < 0:
                raise ValueError("'timeout' must be a non-negative number")
            deadline = time.monotonic() + timeout
        while True:
            if _nobody_reads(self._shared):
                return False
            wait = _PRODUCER_SLICE
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Full
                wait = min(wait, remaining)
            if sem.acquire(True, wait):
                return True

    def close(self) -> None:
        """Say that this producer will put nothing more (idempotent).

        Items that are still waiting in this process to be written are
        written first, by the background thread; the endpoint counts as
        closed once they are all in the pipe.  ``close`` itself does not
        wait."""
        if self._closed and self._shared.slot_closed(self._slot):
            return
        self._closed = True
        local = self._local
        if (local is not None and self._claimed_pid == os.getpid()
                and local.close_when_flushed()):
            return
        self._shared.close_slot(self._slot)

    def get(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError(
            "a ProducerQueue cannot get(): get items from a consumer "
            "endpoint made by IterableQueue.get_consumer()")

    def get_nowait(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError(
            "a ProducerQueue cannot get_nowait(): get items from a consumer "
            "endpoint made by IterableQueue.get_consumer()")

    def __iter__(self) -> NoReturn:
        raise NotImplementedError(
            "a ProducerQueue cannot be iterated: iterate over a consumer "
            "endpoint made by IterableQueue.get_consumer()")
