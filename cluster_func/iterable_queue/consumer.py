"""The consumer endpoint: taking one message at a time under the read lock,
and waiting for data, or for the end, without any lock."""

import os
import select
import time
from pickle import loads as _loads
from queue import Empty
from typing import Any, NoReturn, Optional

from . import _process
from ._endpoint import _Endpoint
from ._shared import (
    _CONSUMER,
    _CONSUMER_SLICE,
    _NOWAIT_LOCK_TIMEOUT,
    _POLLIN,
    _PRODUCER,
    _unpack_header,
)
from .exceptions import ConsumerQueueClosedException


class ConsumerQueue(_Endpoint):
    """A consumer endpoint: iterate over it, or ``get`` items.

    Obtain one from :meth:`IterableQueue.get_consumer` and give it to one
    process.  Iteration stops once the queue is finished.
    """

    _kind = _CONSUMER

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Remove and return an item.

        * An item is there: return it.
        * The queue is finished (the ``IterableQueue`` is closed, every
          producer endpoint is closed, and every item has been taken), or
          this endpoint has been closed: raise
          :class:`ConsumerQueueClosedException`.
        * Otherwise more may come: with ``block=True`` and no ``timeout``,
          wait for one of the two cases above; with ``block=False`` raise
          :class:`queue.Empty` at once, with a ``timeout`` raise
          :class:`queue.Empty` after ``timeout`` seconds.

        A blocking ``get()`` never raises :class:`queue.Empty`.
        """
        if self._closed or self._gen != _process._fork_generation:
            self._open_here(ConsumerQueueClosedException,
                            "get() called on a closed ConsumerQueue")
        shared = self._shared
        rlock = shared.rlock
        deadline = None
        lock_timeout = _NOWAIT_LOCK_TIMEOUT     # used unless block forever
        if block and timeout is not None:
            if timeout < 0:
                raise ValueError("'timeout' must be a non-negative number")
            deadline = time.monotonic() + timeout
        while True:
            if deadline is not None:
                lock_timeout = max(deadline - time.monotonic(), 0.0)
            if block and deadline is None:
                rlock.acquire()
            elif not rlock.acquire(True, lock_timeout):
                raise Empty
            try:
                data = self._read_locked()
            finally:
                rlock.release()
            if data is not None:
                shared.sem.release()
                return _loads(data)
            # Nothing right now.  Are we finished?  (FINISHING is set only
            # after the last item was written, so read it before looking at
            # the pipe again.)
            if shared.finishing:
                return self._last_look(block and deadline is None,
                                       lock_timeout)
            if not block:
                raise Empty
            self._wait(deadline)

    def _last_look(self, wait_for_lock: bool, lock_timeout: float) -> Any:
        """get's end, once no new item can come: take one more message if
        one is still there, or else finish (raise)."""
        shared = self._shared
        rlock = shared.rlock
        if wait_for_lock:
            rlock.acquire()
        elif not rlock.acquire(True, lock_timeout):
            raise Empty
        try:
            data = self._read_locked()
        finally:
            rlock.release()
        if data is not None:
            shared.sem.release()
            return _loads(data)
        self._finish()

    def get_nowait(self) -> Any:
        """Same as ``get(block=False)``."""
        return self.get(False)

    def __iter__(self) -> "ConsumerQueue":
        return self

    def __next__(self) -> Any:
        try:
            return self.get()
        except ConsumerQueueClosedException:
            raise StopIteration

    next = __next__

    def _finish(self) -> NoReturn:
        self._closed = True
        self._shared.close_slot(self._slot)
        raise ConsumerQueueClosedException(
            "the queue is finished: it is closed, every producer is closed "
            "and every item has been taken")

    def _wait(self, deadline: Optional[float]) -> None:
        """Wait (without any lock) until data or the end may be there."""
        shared = self._shared
        poller = self._get_poller(((shared.rfd, _POLLIN),
                                   (shared.done_rfd, _POLLIN)))
        timeout = _CONSUMER_SLICE
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Empty
            timeout = min(timeout, remaining)
        if poller.poll(timeout * 1000.0):
            return
        # Idle: look for producers that died without closing.
        if shared.registry_closed and not shared.finishing:
            shared.reap(_PRODUCER)

    def _read_locked(self) -> Optional[bytes]:
        """Take one message from the pipe, or return None if there is none.
        The caller holds the read lock."""
        fd = self._shared.rfd
        try:
            head = os.read(fd, 4)
        except BlockingIOError:
            return None
        if len(head) < 4:
            if not head:
                raise EOFError("the IterableQueue's pipe was closed")
            head += self._read_exact(4 - len(head))
        size = _unpack_header(head)[0]
        try:
            body = os.read(fd, size)
        except BlockingIOError:
            body = b""
        if len(body) < size:
            body += self._read_exact(size - len(body))
        return body

    def _read_exact(self, n: int) -> bytes:
        # The rest of a message that a writer is still writing.
        fd = self._shared.rfd
        p = select.poll()
        p.register(fd, _POLLIN)
        chunks = []
        while n > 0:
            try:
                chunk = os.read(fd, n)
            except BlockingIOError:
                p.poll(_CONSUMER_SLICE * 1000.0)
                continue
            if not chunk:
                raise EOFError("the IterableQueue's pipe was closed")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def put(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError(
            "a ConsumerQueue cannot put(): put items on a producer "
            "endpoint made by IterableQueue.get_producer()")

    def put_nowait(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError(
            "a ConsumerQueue cannot put_nowait(): put items on a producer "
            "endpoint made by IterableQueue.get_producer()")
