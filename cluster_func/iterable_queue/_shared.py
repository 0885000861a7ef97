"""The state every process shares: the data pipe, the "done" pipe, the locks,
the item semaphore and the table of endpoints, with the constants of their
layout and of the waits around them."""

import multiprocessing
import os
import select
import struct
from multiprocessing.context import BaseContext
from multiprocessing.sharedctypes import RawArray
from typing import Any, Optional, Tuple

from ._process import _own_starttime, _process_alive
from .exceptions import IterableQueueClosedException, IterableQueueException

_PRODUCER = 1
_CONSUMER = 2

# Header of the shared table (int64 cells).
_H_REG_CLOSED = 0     # IterableQueue.close() was called
_H_NSLOTS = 3         # endpoint slots in use
_H_FINISHING = 4      # registry closed and no producer open: no new items
_H_ABANDONED = 5      # registry closed and no consumer open: nobody reads
_H_SIZE = 8

# One slot per endpoint: kind, closed flag, owner pid, owner start time.
_S_KIND = 0
_S_CLOSED = 1
_S_PID = 2
_S_START = 3
_S_SIZE = 4

_PIPE_BUF = getattr(select, "PIPE_BUF", 512)
_HEADER = struct.Struct("!i")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack

# How long blocked producers / idle consumers sleep between looks at
# whether the other side is still alive.
_PRODUCER_SLICE = 0.1
_CONSUMER_SLICE = 0.2
# How long get(block=False) waits for another consumer that is in the
# middle of taking a message.
_NOWAIT_LOCK_TIMEOUT = 0.1
# How long put() waits for the write lock before handing the item to its
# feeder thread instead.
_FAST_LOCK_TIMEOUT = 0.05
_EXIT_PRIORITY = 50

_POLLIN = select.POLLIN if hasattr(select, "poll") else 1
_POLLOUT = select.POLLOUT if hasattr(select, "poll") else 4


def _lock_context() -> BaseContext:
    # Semaphores made through a "fork" context are unlinked at once and so
    # cannot be passed to spawn/forkserver children.  Named semaphores made
    # through a non-fork context work with every start method.
    methods = multiprocessing.get_all_start_methods()
    for name in ("spawn", "forkserver"):
        if name in methods:
            return multiprocessing.get_context(name)
    return multiprocessing.get_context()


class _Shared(object):
    """Everything the registry and the endpoints share between processes."""

    def __init__(self, maxsize: int, max_endpoints: int) -> None:
        ctx = _lock_context()
        from multiprocessing.synchronize import SEM_VALUE_MAX  # type: ignore[attr-defined]  # not in typeshed
        self.maxsize = int(maxsize)
        self.semmax = self.maxsize if self.maxsize > 0 else SEM_VALUE_MAX
        self.capacity = int(max_endpoints)
        self.lock = ctx.RLock()      # guards the table (recursive: see below)
        self.rlock = ctx.Lock()      # one reader takes one message at a time
        self.wlock = ctx.Lock()      # one writer writes one message at a time
        self.sem = ctx.BoundedSemaphore(self.semmax)   # counts items
        self.table: Any = RawArray("q", _H_SIZE + _S_SIZE * self.capacity)
        self.data_r, self.data_w = multiprocessing.Pipe(duplex=False)
        self.done_r, self.done_w = multiprocessing.Pipe(duplex=False)
        os.set_blocking(self.data_r.fileno(), False)
        os.set_blocking(self.data_w.fileno(), False)
        os.set_blocking(self.done_w.fileno(), False)
        self._local_init()

    def __getstate__(self) -> Tuple[Any, ...]:
        return (self.maxsize, self.semmax, self.capacity, self.lock,
                self.rlock, self.wlock, self.sem, self.table, self.data_r,
                self.data_w, self.done_r, self.done_w)

    def __setstate__(self, state: Tuple[Any, ...]) -> None:
        (self.maxsize, self.semmax, self.capacity, self.lock, self.rlock,
         self.wlock, self.sem, self.table, self.data_r, self.data_w,
         self.done_r, self.done_w) = state
        self._local_init()

    def _local_init(self) -> None:
        self.rfd = self.data_r.fileno()
        self.wfd = self.data_w.fileno()
        self.done_rfd = self.done_r.fileno()
        self.done_wfd = self.done_w.fileno()

    # -- table operations ---------------------------------------------------
    #
    # self.lock is a recursive lock, and the numbers of open producers and
    # consumers are counted from the slots rather than kept in counters, so
    # that an endpoint closed by a garbage-collection finalizer that happens
    # to run while this thread holds the lock can neither deadlock nor
    # corrupt anything.

    def new_slot(self, kind: int) -> int:
        t = self.table
        with self.lock:
            if t[_H_REG_CLOSED]:
                raise IterableQueueClosedException(
                    "this IterableQueue is closed: no new producer or "
                    "consumer endpoints can be made")
            i: int = t[_H_NSLOTS]
            if i >= self.capacity:
                raise IterableQueueException(
                    "too many endpoints for this IterableQueue "
                    "(max_endpoints=%d)" % self.capacity)
            base = _H_SIZE + _S_SIZE * i
            t[base + _S_CLOSED] = 0
            t[base + _S_PID] = 0
            t[base + _S_START] = 0
            t[base + _S_KIND] = kind
            t[_H_NSLOTS] = i + 1
        return i

    def claim(self, i: int) -> bool:
        """Record the current process as the owner of slot ``i``.
        Return False if the endpoint is already closed."""
        t = self.table
        base = _H_SIZE + _S_SIZE * i
        pid = os.getpid()
        start = _own_starttime()
        with self.lock:
            if t[base + _S_CLOSED]:
                return False
            t[base + _S_PID] = pid
            t[base + _S_START] = start
        return True

    def slot_closed(self, i: int) -> bool:
        return bool(self.table[_H_SIZE + _S_SIZE * i + _S_CLOSED])

    def close_slot(self, i: int, only_if_owner: Optional[int] = None) -> None:
        """Close endpoint slot ``i`` (idempotent across processes)."""
        t = self.table
        base = _H_SIZE + _S_SIZE * i
        with self.lock:
            if t[base + _S_CLOSED]:
                return
            if only_if_owner is not None and t[base + _S_PID] != only_if_owner:
                return
            t[base + _S_CLOSED] = 1
            self._update_locked()

    def close_registry(self) -> None:
        with self.lock:
            self.table[_H_REG_CLOSED] = 1
            self._update_locked()

    def counts(self) -> Tuple[int, int]:
        """(open producer endpoints, open consumer endpoints)."""
        t = self.table
        producers = consumers = 0
        for i in range(t[_H_NSLOTS]):
            base = _H_SIZE + _S_SIZE * i
            if not t[base + _S_CLOSED]:
                if t[base + _S_KIND] == _PRODUCER:
                    producers += 1
                else:
                    consumers += 1
        return producers, consumers

    def _update_locked(self) -> None:
        t = self.table
        if not t[_H_REG_CLOSED]:
            return
        if t[_H_FINISHING] and t[_H_ABANDONED]:
            return
        producers, consumers = self.counts()
        if producers == 0 and not t[_H_FINISHING]:
            t[_H_FINISHING] = 1
            # Wake every waiting consumer; this byte is never read.
            try:
                os.write(self.done_wfd, b"x")
            except OSError:
                pass
        if consumers == 0 and not t[_H_ABANDONED]:
            t[_H_ABANDONED] = 1

    def reap(self, kind: int) -> None:
        """Close the open endpoints of ``kind`` whose owner process died
        without closing them.  Only meaningful once the registry is closed.
        """
        t = self.table
        me = os.getpid()
        for i in range(t[_H_NSLOTS]):
            base = _H_SIZE + _S_SIZE * i
            if t[base + _S_KIND] != kind or t[base + _S_CLOSED]:
                continue
            pid = t[base + _S_PID]
            if pid == 0 or pid == me:
                continue    # not owned yet, or ours: alive
            start = t[base + _S_START]
            if _process_alive(pid, start):
                continue
            with self.lock:
                if (not t[base + _S_CLOSED] and t[base + _S_PID] == pid
                        and t[base + _S_START] == start):
                    t[base + _S_CLOSED] = 1
                    self._update_locked()

    # -- cheap reads (no lock: aligned int64 cells) ---------------------------

    @property
    def registry_closed(self) -> bool:
        return bool(self.table[_H_REG_CLOSED])

    @property
    def finishing(self) -> bool:
        return bool(self.table[_H_FINISHING])

    @property
    def abandoned(self) -> bool:
        return bool(self.table[_H_ABANDONED])

    # -- queue-wide read-only information ------------------------------------

    def qsize(self) -> int:
        return self.semmax - self.sem.get_value()

    def full(self) -> bool:
        return self.sem.get_value() == 0

    def empty(self) -> bool:
        p = select.poll()
        p.register(self.rfd, _POLLIN)
        return not p.poll(0)


def _nobody_reads(shared: _Shared) -> bool:
    """True if the queue is closed and no consumer is left (none was made,
    or all closed or died): then nothing put can ever be received."""
    if shared.abandoned:
        return True
    if shared.registry_closed:
        shared.reap(_CONSUMER)
        return shared.abandoned
    return False
