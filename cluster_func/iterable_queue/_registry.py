"""The registry, :class:`IterableQueue`: it makes the endpoints and says,
by being closed, that no more will come."""

import os
from multiprocessing import util as _mp_util
from typing import Tuple

from ._shared import _CONSUMER, _EXIT_PRIORITY, _PRODUCER, _Shared
from .consumer import ConsumerQueue
from .producer import ProducerQueue


def _exit_close_registry(shared: _Shared, pid: int) -> None:
    if os.getpid() != pid:
        return
    try:
        shared.close_registry()
    except Exception:
        pass


class IterableQueue(object):
    """A directed queue with producer and consumer endpoints.

    ``IterableQueue(maxsize=0)``: ``maxsize`` > 0 bounds the number of items
    in the queue (``put`` blocks, or raises :class:`queue.Full`, when it is
    reached); 0 means no item limit, although ``put`` still waits while the
    OS pipe buffer (64 KiB on Linux) is full, until consumers take items.

    Make endpoints with :meth:`get_producer` and :meth:`get_consumer`, give
    each to one process, then call :meth:`close` to say that no more
    endpoints will be made.  Consumers' iteration ends once the queue is
    closed, every producer endpoint is closed, and every item is taken.

    ``max_endpoints`` is the size of the shared table of endpoints.
    """

    def __init__(self, maxsize: int = 0, max_endpoints: int = 1024) -> None:
        if max_endpoints < 1:
            raise ValueError("max_endpoints must be at least 1")
        self._shared = _Shared(maxsize, max_endpoints)
        self._creator = os.getpid()
        # If the creating process drops this object, or exits, without
        # calling close(), close the queue for it (at exit, this happens
        # before multiprocessing joins the children).
        _mp_util.Finalize(self, _exit_close_registry,
                          args=(self._shared, self._creator),
                          exitpriority=_EXIT_PRIORITY + 10)

    @property
    def maxsize(self) -> int:
        return self._shared.maxsize

    def get_producer(self) -> ProducerQueue:
        """Return a new :class:`ProducerQueue` endpoint."""
        return ProducerQueue(self._shared, self._shared.new_slot(_PRODUCER))

    def get_consumer(self) -> ConsumerQueue:
        """Return a new :class:`ConsumerQueue` endpoint."""
        return ConsumerQueue(self._shared, self._shared.new_slot(_CONSUMER))

    def close(self) -> None:
        """Say that no more endpoints will be made (idempotent)."""
        self._shared.close_registry()

    @property
    def closed(self) -> bool:
        return self._shared.registry_closed

    def qsize(self) -> int:
        """Approximate number of items in the queue."""
        return self._shared.qsize()

    def empty(self) -> bool:
        return self._shared.empty()

    def full(self) -> bool:
        return self._shared.full()

    def __getstate__(self) -> Tuple[_Shared, int]:
        return (self._shared, self._creator)

    def __setstate__(self, state: Tuple[_Shared, int]) -> None:
        self._shared, self._creator = state

    def __repr__(self) -> str:
        producers, consumers = self._shared.counts()
        return "<IterableQueue %s, %d producers and %d consumers open>" % (
            "closed" if self.closed else "open", producers, consumers)
