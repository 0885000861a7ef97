"""A directed multiprocessing queue that consumers can iterate over.

An :class:`IterableQueue` hands out *producer endpoints* (which can only
``put``) and *consumer endpoints* (which can only ``get``).  Because it knows
how many producers are still open, it can tell "empty for now" apart from
"empty and nothing more will ever come", so consumers can simply write::

    for item in consumer_queue:
        ...

and the loop ends by itself once every producer has closed, the
``IterableQueue`` itself has been closed, and every item has been taken.

Design (no manager process)
---------------------------
* Items travel through one OS pipe, framed as ``4-byte length + pickle``.
  A ``put`` writes its item into the pipe itself (there is no feeder
  thread), so when ``put`` returns the item is in the pipe, and nothing can
  be left behind in a process's memory when that process exits.
* Both ends of the pipe are non-blocking.  Readers hold the shared read
  lock only while taking one message that is already there; writers hold
  the shared write lock only while writing one message (a message of at
  most ``PIPE_BUF`` bytes is written atomically or not at all).  Waiting
  for data or for room is done with ``poll`` *without* holding a lock, so a
  process that is killed while waiting never blocks the others.
* A small table in shared memory counts open producers and consumers and
  records, for every endpoint, which process owns it.  When the queue has
  been closed and the last producer closes, one byte is written into a
  second "done" pipe that is never read: it stays readable for ever and
  wakes every waiting consumer at once.
* An endpoint belongs to the process that it was handed to as a
  :class:`multiprocessing.Process` argument, or otherwise to the process
  that first calls ``put``/``get`` on it.  When that process exits normally
  (even through an exception) the endpoint is closed for it.  When it dies
  without cleaning up (killed, ``os._exit``) the other processes notice on
  Linux through ``/proc`` and close the endpoint for it.

POSIX only (non-blocking pipes and ``select.poll``).
"""

import io
import os
import pickle
import select
import struct
import sys
import threading
import time
from queue import Empty, Full

import multiprocessing
from multiprocessing import util as _mp_util
from multiprocessing.reduction import ForkingPickler
from multiprocessing.sharedctypes import RawArray

__all__ = [
    "IterableQueue",
    "ProducerQueue",
    "ConsumerQueue",
    "IterableQueueException",
    "IterableQueueClosedException",
    "ProducerQueueClosedException",
    "ConsumerQueueClosedException",
    "Done",
    "Empty",
    "Full",
]


# ---------------------------------------------------------------------------
# Exceptions
# ---------------------------------------------------------------------------

class IterableQueueException(Exception):
    """Base class of the exceptions raised by :class:`IterableQueue`."""


class IterableQueueClosedException(IterableQueueException):
    """Raised by ``get_producer()``/``get_consumer()`` after ``close()``."""


class ProducerQueueClosedException(IterableQueueException):
    """Raised by ``put()`` on a producer endpoint that has been closed."""


class ConsumerQueueClosedException(IterableQueueException):
    """Raised by ``get()`` when no item is left and none will ever come.

    That is: the :class:`IterableQueue` is closed, every producer endpoint
    is closed, and every item has been taken (or this consumer endpoint has
    itself been closed).
    """


#: Name used by the original ``iterable_queue`` package for the same event.
Done = ConsumerQueueClosedException


# ---------------------------------------------------------------------------
# Constants and helpers
# ---------------------------------------------------------------------------

_PRODUCER = 1
_CONSUMER = 2
_KIND_NAME = {_PRODUCER: "producer", _CONSUMER: "consumer"}

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
_EXIT_PRIORITY = 50

_SIMPLE_TYPES = frozenset((int, float, str, bytes, bool, type(None), complex))
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_dumps = pickle.dumps
_loads = pickle.loads

_POLLIN = select.POLLIN if hasattr(select, "poll") else 1
_POLLOUT = select.POLLOUT if hasattr(select, "poll") else 4

# Bumped in the child after every fork, so that an endpoint can tell cheaply
# that it is being used in a new process.
_fork_generation = 0


def _bump_fork_generation():
    global _fork_generation
    _fork_generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_bump_fork_generation)

_HAVE_PROC = os.path.exists("/proc/self/stat")


def _proc_stat(pid):
    """Return (state, starttime) of ``pid`` from /proc, or None if gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return (b"?", 0)
    try:
        rest = data[data.rindex(b")") + 2:].split()
        return rest[0], int(rest[19])
    except (ValueError, IndexError):
        return (b"?", 0)


_own_start = {}


def _own_starttime():
    pid = os.getpid()
    st = _own_start.get(pid)
    if st is None:
        st = 0
        if _HAVE_PROC:
            info = _proc_stat(pid)
            if info is not None:
                st = info[1]
        _own_start.clear()
        _own_start[pid] = st
    return st


def _process_alive(pid, starttime):
    """Best-effort test whether process ``pid`` (started at ``starttime``)
    is still running.  On Linux zombies and reused pids count as dead;
    elsewhere only ``os.kill(pid, 0)`` is available."""
    if pid == os.getpid():
        return True
    if _HAVE_PROC:
        info = _proc_stat(pid)
        if info is None:
            return False
        state, start = info
        if state in (b"Z", b"X", b"x"):
            return False
        if starttime and start and start != starttime:
            return False
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _handed_to_current_process(obj):
    """True if ``obj`` is one of the arguments of the current
    multiprocessing.Process (directly, or one level inside a list, tuple,
    set or dict argument)."""
    proc = multiprocessing.current_process()
    args = getattr(proc, "_args", None) or ()
    kwargs = getattr(proc, "_kwargs", None) or {}
    try:
        values = list(args) + list(kwargs.values())
    except TypeError:
        return False
    for value in values:
        if value is obj:
            return True
        if isinstance(value, (list, tuple, set, frozenset)):
            if any(v is obj for v in value):
                return True
        elif isinstance(value, dict):
            if any(v is obj for v in value.values()):
                return True
    return False


def _lock_context():
    # Semaphores made through a "fork" context are unlinked at once and so
    # cannot be passed to spawn/forkserver children.  Named semaphores made
    # through a non-fork context work with every start method.
    methods = multiprocessing.get_all_start_methods()
    for name in ("spawn", "forkserver"):
        if name in methods:
            return multiprocessing.get_context(name)
    return multiprocessing.get_context()


# ---------------------------------------------------------------------------
# Shared state
# ---------------------------------------------------------------------------

class _Shared(object):
    """Everything the registry and the endpoints share between processes."""

    def __init__(self, maxsize, max_endpoints):
        ctx = _lock_context()
        from multiprocessing.synchronize import SEM_VALUE_MAX
        self.maxsize = int(maxsize)
        self.semmax = self.maxsize if self.maxsize > 0 else SEM_VALUE_MAX
        self.capacity = int(max_endpoints)
        self.lock = ctx.RLock()      # guards the table (recursive: see below)
        self.rlock = ctx.Lock()      # one reader takes one message at a time
        self.wlock = ctx.Lock()      # one writer writes one message at a time
        self.sem = ctx.BoundedSemaphore(self.semmax)   # counts items
        self.table = RawArray("q", _H_SIZE + _S_SIZE * self.capacity)
        self.data_r, self.data_w = multiprocessing.Pipe(duplex=False)
        self.done_r, self.done_w = multiprocessing.Pipe(duplex=False)
        os.set_blocking(self.data_r.fileno(), False)
        os.set_blocking(self.data_w.fileno(), False)
        os.set_blocking(self.done_w.fileno(), False)
        self._local_init()

    def __getstate__(self):
        return (self.maxsize, self.semmax, self.capacity, self.lock,
                self.rlock, self.wlock, self.sem, self.table, self.data_r,
                self.data_w, self.done_r, self.done_w)

    def __setstate__(self, state):
        (self.maxsize, self.semmax, self.capacity, self.lock, self.rlock,
         self.wlock, self.sem, self.table, self.data_r, self.data_w,
         self.done_r, self.done_w) = state
        self._local_init()

    def _local_init(self):
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

    def new_slot(self, kind):
        t = self.table
        with self.lock:
            if t[_H_REG_CLOSED]:
                raise IterableQueueClosedException(
                    "this IterableQueue is closed: no new producer or "
                    "consumer endpoints can be made")
            i = t[_H_NSLOTS]
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

    def claim(self, i):
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

    def slot_closed(self, i):
        return bool(self.table[_H_SIZE + _S_SIZE * i + _S_CLOSED])

    def close_slot(self, i, only_if_owner=None):
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

    def close_registry(self):
        with self.lock:
            self.table[_H_REG_CLOSED] = 1
            self._update_locked()

    def counts(self):
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

    def _update_locked(self):
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

    def reap(self, kind):
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
    def registry_closed(self):
        return bool(self.table[_H_REG_CLOSED])

    @property
    def finishing(self):
        return bool(self.table[_H_FINISHING])

    @property
    def abandoned(self):
        return bool(self.table[_H_ABANDONED])

    # -- queue-wide read-only information ------------------------------------

    def qsize(self):
        return self.semmax - self.sem.get_value()

    def full(self):
        return self.sem.get_value() == 0

    def empty(self):
        p = select.poll()
        p.register(self.rfd, _POLLIN)
        return not p.poll(0)


def _exit_close(shared, slot, pid):
    """Finalizer run when the owning process drops the endpoint or exits
    normally."""
    if os.getpid() != pid:
        return
    try:
        shared.close_slot(slot, only_if_owner=pid)
    except Exception:   # never let cleanup break interpreter exit
        pass


def _exit_close_registry(shared, pid):
    if os.getpid() != pid:
        return
    try:
        shared.close_registry()
    except Exception:
        pass


# ---------------------------------------------------------------------------
# Endpoints
# ---------------------------------------------------------------------------

class _Endpoint(object):
    _kind = 0

    def __init__(self, shared, slot):
        self._shared = shared
        self._slot = slot
        self._unpickled_in = None
        self._setup()

    def _setup(self):
        self._closed = False
        self._gen = -1            # not claimed in this process yet
        self._claimed_pid = None
        self._poller = None
        self._poller_pid = None
        _mp_util.register_after_fork(self, _Endpoint._after_fork_hook)

    def __getstate__(self):
        return (self._shared, self._slot)

    def __setstate__(self, state):
        self._shared, self._slot = state
        self._unpickled_in = os.getpid()
        self._setup()

    @staticmethod
    def _after_fork_hook(self):
        # Runs in every child started by multiprocessing, after the child's
        # finalizer registry has been cleared.  Take ownership of the
        # endpoints that were handed to this child.
        try:
            if (self._unpickled_in == os.getpid()
                    or _handed_to_current_process(self)):
                self._claim()
        except Exception:
            pass

    def _claim(self):
        """Make the current process the owner of this endpoint."""
        self._gen = _fork_generation
        if self._closed:
            return
        pid = os.getpid()
        if self._claimed_pid == pid:
            return
        if not self._shared.claim(self._slot):
            self._closed = True
            return
        self._claimed_pid = pid
        # Close the endpoint when this process drops it or exits normally.
        _mp_util.Finalize(self, _exit_close,
                          args=(self._shared, self._slot, pid),
                          exitpriority=_EXIT_PRIORITY)

    def _get_poller(self, fds):
        pid = os.getpid()
        if self._poller is None or self._poller_pid != pid:
            p = select.poll()
            for fd, ev in fds:
                p.register(fd, ev)
            self._poller = p
            self._poller_pid = pid
        return self._poller

    def close(self):
        """Close this endpoint (idempotent).  Closing is shared: the
        endpoint is closed for every process that holds a copy of it."""
        if self._closed and self._shared.slot_closed(self._slot):
            return
        self._closed = True
        self._shared.close_slot(self._slot)

    @property
    def closed(self):
        """True once this endpoint has been closed (here or elsewhere)."""
        return self._closed or self._shared.slot_closed(self._slot)

    def qsize(self):
        """Approximate number of items in the queue (put and not yet
        taken)."""
        return self._shared.qsize()

    def empty(self):
        """True if no item can be taken right now (approximate)."""
        return self._shared.empty()

    def full(self):
        """True if the queue holds ``maxsize`` items (never true for an
        unbounded queue)."""
        return self._shared.full()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return "<%s slot=%d %s>" % (type(self).__name__, self._slot,
                                    "closed" if self.closed else "open")


class ProducerQueue(_Endpoint):
    """A producer endpoint: ``put`` items, then ``close()``.

    Obtain one from :meth:`IterableQueue.get_producer` and give it to one
    process (for instance as a :class:`multiprocessing.Process` argument).
    """

    _kind = _PRODUCER

    def _setup(self):
        _Endpoint._setup(self)
        self._pbuf = None
        self._pickler = None
        self._plock = threading.Lock()

    def _serialize(self, obj):
        if type(obj) in _SIMPLE_TYPES:
            return _dumps(obj, _PROTOCOL)
        with self._plock:
            buf = self._pbuf
            if buf is None or buf.tell() > (1 << 20):
                buf = self._pbuf = io.BytesIO()
                self._pickler = ForkingPickler(buf, _PROTOCOL)
            buf.seek(0)
            buf.truncate()
            self._pickler.clear_memo()
            try:
                self._pickler.dump(obj)
            except BaseException:
                self._pbuf = None
                raise
            return buf.getvalue()

    def put(self, item, block=True, timeout=None):
        """Put ``item`` on the queue.

        When ``put`` returns, the item is in the underlying OS pipe, so it
        cannot be lost when this process exits.  ``put`` blocks while the
        queue holds ``maxsize`` items or while the pipe buffer is full; with
        ``block=False``, or when ``timeout`` seconds pass, it raises
        :class:`queue.Full` instead.  If the queue is closed and no consumer
        is left (none was ever made, or all closed or died), the item is
        discarded silently, because nobody could ever receive it.

        Raises :class:`ProducerQueueClosedException` after :meth:`close`.
        """
        if self._closed:
            raise ProducerQueueClosedException(
                "put() called on a closed ProducerQueue")
        if self._gen != _fork_generation:
            self._claim()
            if self._closed:
                raise ProducerQueueClosedException(
                    "put() called on a closed ProducerQueue")
        shared = self._shared
        deadline = None
        if block and timeout is not None:
            if timeout < 0:
                raise ValueError("'timeout' must be a non-negative number")
            deadline = time.monotonic() + timeout
        if not shared.sem.acquire(False):
            if not self._wait_for_slot(block, deadline):
                return
        try:
            data = self._serialize(item)
            size = len(data)
            if size + 4 <= _PIPE_BUF:
                msg = _pack_header(size) + data
                wlock = shared.wlock
                wlock.acquire()
                try:
                    os.write(shared.wfd, msg)   # all or nothing (PIPE_BUF)
                    return
                except BlockingIOError:
                    pass
                finally:
                    wlock.release()
                written = self._write_small_slow(msg, block, deadline)
            else:
                written = self._write_big(data, block, deadline)
        except BaseException:
            shared.sem.release()
            raise
        if not written:
            shared.sem.release()

    def put_nowait(self, item):
        """Same as ``put(item, block=False)``."""
        return self.put(item, False)

    # -- slow paths ---------------------------------------------------------

    def _nobody_reads(self):
        shared = self._shared
        if shared.abandoned:
            return True
        if shared.registry_closed:
            shared.reap(_CONSUMER)
            return shared.abandoned
        return False

    def _slice(self, block, deadline):
        """Seconds to wait next; raise Full if time is up."""
        if not block:
            raise Full
        if deadline is None:
            return _PRODUCER_SLICE
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Full
        return min(remaining, _PRODUCER_SLICE)

    def _wait_for_slot(self, block, deadline):
        sem = self._shared.sem
        while True:
            if self._nobody_reads():
                return False
            if sem.acquire(True, self._slice(block, deadline)):
                return True

    def _wait_writable(self, block, deadline):
        poller = self._get_poller(((self._shared.wfd, _POLLOUT),))
        while True:
            if self._nobody_reads():
                return False
            timeout = self._slice(block, deadline)
            if poller.poll(timeout * 1000.0):
                return True

    def _write_small_slow(self, msg, block, deadline):
        shared = self._shared
        wlock = shared.wlock
        while True:
            if not self._wait_writable(block, deadline):
                return False
            wlock.acquire()
            try:
                os.write(shared.wfd, msg)
                return True
            except BlockingIOError:
                pass
            finally:
                wlock.release()

    def _write_big(self, data, block, deadline):
        # A message longer than PIPE_BUF cannot be written atomically, so the
        # write lock is held until the whole message is in the pipe (the
        # timeout only applies to waiting for the first byte of room).
        shared = self._shared
        fd = shared.wfd
        poller = self._get_poller(((fd, _POLLOUT),))
        if not self._wait_writable(block, deadline):
            return False
        view = memoryview(data)
        parts = [_pack_header(len(view)), view]
        wlock = shared.wlock
        wlock.acquire()
        try:
            for part in parts:
                part = memoryview(part)
                while len(part):
                    try:
                        n = os.write(fd, part)
                    except BlockingIOError:
                        n = 0
                    if n:
                        part = part[n:]
                        continue
                    if shared.abandoned:
                        return False
                    if not poller.poll(_PRODUCER_SLICE * 1000.0):
                        if self._nobody_reads():
                            return False
            return True
        finally:
            wlock.release()

    def get(self, *args, **kwargs):
        raise NotImplementedError(
            "a ProducerQueue cannot get(): get items from a consumer "
            "endpoint made by IterableQueue.get_consumer()")

    def get_nowait(self, *args, **kwargs):
        raise NotImplementedError(
            "a ProducerQueue cannot get_nowait(): get items from a consumer "
            "endpoint made by IterableQueue.get_consumer()")

    def __iter__(self):
        raise NotImplementedError(
            "a ProducerQueue cannot be iterated: iterate over a consumer "
            "endpoint made by IterableQueue.get_consumer()")


class ConsumerQueue(_Endpoint):
    """A consumer endpoint: iterate over it, or ``get`` items.

    Obtain one from :meth:`IterableQueue.get_consumer` and give it to one
    process.  Iteration stops once the queue is finished.
    """

    _kind = _CONSUMER

    def get(self, block=True, timeout=None):
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
        if self._closed:
            raise ConsumerQueueClosedException(
                "get() called on a closed ConsumerQueue")
        if self._gen != _fork_generation:
            self._claim()
            if self._closed:
                raise ConsumerQueueClosedException(
                    "get() called on a closed ConsumerQueue")
        shared = self._shared
        rlock = shared.rlock
        deadline = None
        if not block:
            lock_timeout = _NOWAIT_LOCK_TIMEOUT
        elif timeout is not None:
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
                self._finish()
            if not block:
                raise Empty
            self._wait(deadline)

    def get_nowait(self):
        """Same as ``get(block=False)``."""
        return self.get(False)

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return self.get()
        except ConsumerQueueClosedException:
            raise StopIteration

    next = __next__

    def _finish(self):
        self._closed = True
        self._shared.close_slot(self._slot)
        raise ConsumerQueueClosedException(
            "the queue is finished: it is closed, every producer is closed "
            "and every item has been taken")

    def _wait(self, deadline):
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

    def _read_locked(self):
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

    def _read_exact(self, n):
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

    def put(self, *args, **kwargs):
        raise NotImplementedError(
            "a ConsumerQueue cannot put(): put items on a producer "
            "endpoint made by IterableQueue.get_producer()")

    def put_nowait(self, *args, **kwargs):
        raise NotImplementedError(
            "a ConsumerQueue cannot put_nowait(): put items on a producer "
            "endpoint made by IterableQueue.get_producer()")


# ---------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------

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

    def __init__(self, maxsize=0, max_endpoints=1024):
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
    def maxsize(self):
        return self._shared.maxsize

    def get_producer(self):
        """Return a new :class:`ProducerQueue` endpoint."""
        return ProducerQueue(self._shared, self._shared.new_slot(_PRODUCER))

    def get_consumer(self):
        """Return a new :class:`ConsumerQueue` endpoint."""
        return ConsumerQueue(self._shared, self._shared.new_slot(_CONSUMER))

    def close(self):
        """Say that no more endpoints will be made (idempotent)."""
        self._shared.close_registry()

    @property
    def closed(self):
        return self._shared.registry_closed

    def qsize(self):
        """Approximate number of items in the queue."""
        return self._shared.qsize()

    def empty(self):
        return self._shared.empty()

    def full(self):
        return self._shared.full()

    def __getstate__(self):
        return (self._shared, self._creator)

    def __setstate__(self, state):
        self._shared, self._creator = state

    def __repr__(self):
        producers, consumers = self._shared.counts()
        return "<IterableQueue %s, %d producers and %d consumers open>" % (
            "closed" if self.closed else "open", producers, consumers)
