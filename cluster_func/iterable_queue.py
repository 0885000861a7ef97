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
  A ``put`` writes its item into the pipe itself whenever it can.  Only
  while the pipe is full (or another producer holds the write lock for
  long) does the item wait in a per-process buffer, which a feeder thread
  empties in order; ``close()`` and process exit wait for that buffer to
  drain, so nothing is left behind in a process's memory when it exits.
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

import collections
import io
import os
import pickle
import select
import struct
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

_SIMPLE_TYPES = frozenset((int, float, str, bytes, bool, type(None), complex))
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_dumps = pickle.dumps
_loads = pickle.loads

_POLLIN = select.POLLIN if hasattr(select, "poll") else 1
_POLLOUT = select.POLLOUT if hasattr(select, "poll") else 4

# Bumped in the child after every fork, so that an endpoint can tell cheaply
# that it is being used in a new process.
_fork_generation = 0

# Endpoints pickled for a child that is being started (spawn/forkserver):
# their shared state must stay alive in this process until the child has
# opened it.  Otherwise a parent that drops the queue (or exits) right after
# Process.start() unlinks the named semaphores before the child opens them.
_spawn_pending = []           # [popen, shared, slot, owner pid at pickling]
_spawn_lock = threading.Lock()
_spawn_finalizer_pid = None
_SPAWN_EXIT_WAIT = 60.0


def _bump_fork_generation():
    global _fork_generation, _spawn_lock, _spawn_pending
    _fork_generation += 1
    # The parent's bookkeeping of the children it was starting is not ours.
    _spawn_lock = threading.Lock()
    _spawn_pending = []


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


def _exit_close(shared, slot, pid, local):
    """Finalizer run when the owning process drops the endpoint, or exits
    normally.  At exit, first write out the items still waiting in this
    process (unless nobody can read them any more)."""
    if os.getpid() != pid:
        return
    try:
        if local is not None and local.pending:
            if getattr(_mp_util, "_exiting", False):
                local.flush()
            else:
                # Dropped by the program: let the feeder close it later.
                if local.close_when_flushed():
                    return
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


def _note_spawning(shared, slot):
    global _spawn_finalizer_pid
    from multiprocessing import context
    popen = context.get_spawning_popen()
    if popen is None:
        return
    owner = shared.table[_H_SIZE + _S_SIZE * slot + _S_PID]
    with _spawn_lock:
        _sweep_spawn_pending_locked()
        _spawn_pending.append((popen, shared, slot, owner))
        if _spawn_finalizer_pid != os.getpid():
            _spawn_finalizer_pid = os.getpid()
            _mp_util.Finalize(None, _wait_spawned_children,
                              exitpriority=_EXIT_PRIORITY + 20)


def _spawn_entry_done(entry):
    popen, shared, slot, owner = entry
    base = _H_SIZE + _S_SIZE * slot
    t = shared.table
    if t[base + _S_CLOSED] or t[base + _S_PID] != owner:
        return True           # the child took it over (or it is closed)
    try:
        return popen.poll() is not None   # the child is gone
    except Exception:         # not launched yet (no pid) and the like
        return False


def _sweep_spawn_pending_locked():
    if _spawn_pending:
        _spawn_pending[:] = [e for e in _spawn_pending
                             if not _spawn_entry_done(e)]


def _wait_spawned_children():
    """At exit: wait (bounded) until every child started with an endpoint
    has opened it, before the semaphores are unlinked."""
    deadline = time.monotonic() + _SPAWN_EXIT_WAIT
    while True:
        with _spawn_lock:
            _sweep_spawn_pending_locked()
            if not _spawn_pending or time.monotonic() > deadline:
                del _spawn_pending[:]
                return
        time.sleep(0.01)


def _nobody_reads(shared):
    """True if the queue is closed and no consumer is left (none was made,
    or all closed or died): then nothing put can ever be received."""
    if shared.abandoned:
        return True
    if shared.registry_closed:
        shared.reap(_CONSUMER)
        return shared.abandoned
    return False


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
        self._finalizer = None
        self._poller = None
        self._poller_pid = None
        self._local = None
        _mp_util.register_after_fork(self, _Endpoint._after_fork_hook)

    def _new_local(self):
        return None

    def __getstate__(self):
        _note_spawning(self._shared, self._slot)
        return (self._shared, self._slot)

    def __setstate__(self, state):
        # Unpickled only in a child being started (spawn, forkserver): the
        # endpoint was handed to this process, which now owns it.
        self._shared, self._slot = state
        self._unpickled_in = os.getpid()
        self._setup()
        try:
            self._claim()
        except Exception:
            pass

    @staticmethod
    def _after_fork_hook(self):
        # Runs in children started by multiprocessing with fork or
        # forkserver, after the child's finalizer registry was cleared (a
        # spawned child runs no such hooks).  Take ownership of the
        # endpoints that were handed to this child, and register again the
        # exit finalizers of those claimed while unpickling.
        try:
            if (self._unpickled_in == os.getpid()
                    or _handed_to_current_process(self)):
                self._claim()
        except Exception:
            pass

    def _claim(self):
        """Make the current process the owner of this endpoint."""
        pid = os.getpid()
        if self._claimed_pid != pid:
            # State local to a process (buffers, threads, locks) is never
            # inherited from the parent.
            self._local = self._new_local()
            self._poller = None
            self._finalizer = None
        self._gen = _fork_generation
        if self._closed:
            return
        if (self._claimed_pid == pid and self._finalizer is not None
                and self._finalizer.still_active()):
            return
        if not self._shared.claim(self._slot):
            self._closed = True
            return
        self._claimed_pid = pid
        # Close the endpoint when this process drops it or exits normally.
        self._finalizer = _mp_util.Finalize(
            self, _exit_close,
            args=(self._shared, self._slot, pid, self._local),
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


class _PutState(object):
    """Per-process state of a producer endpoint: the pickler, and the
    buffer and feeder thread used only while the pipe is full.

    The feeder thread holds no reference to the endpoint, so the endpoint
    can still be garbage collected while the feeder finishes its work."""

    def __init__(self, shared, slot):
        self.shared = shared
        self.slot = slot
        self.pickle_lock = threading.Lock()
        self.pbuf = None
        self.pickler = None
        # Recursive: a garbage-collection finalizer may run in a thread that
        # holds it (see _exit_close).
        self.cond = threading.Condition(threading.RLock())
        self.buffer = collections.deque()
        self.pending = 0          # messages buffered or being written
        self.thread = None
        self.close_after = False  # close the slot once everything is out

    def serialize(self, obj):
        if type(obj) in _SIMPLE_TYPES:
            return _dumps(obj, _PROTOCOL)
        with self.pickle_lock:
            buf = self.pbuf
            if buf is None or buf.tell() > (1 << 20):
                buf = self.pbuf = io.BytesIO()
                self.pickler = ForkingPickler(buf, _PROTOCOL)
            buf.seek(0)
            buf.truncate()
            self.pickler.clear_memo()
            try:
                self.pickler.dump(obj)
            except BaseException:
                self.pbuf = None
                raise
            return buf.getvalue()

    # -- buffered path ------------------------------------------------------

    def enqueue(self, msg, lock_held=False):
        """Hand a message to the feeder thread.  ``msg`` is bytes (a whole
        small message) or a memoryview (the rest of a big message whose
        start is already in the pipe; then the write lock is held and the
        feeder releases it)."""
        with self.cond:
            self.buffer.append((msg, lock_held))
            self.pending += 1
            if self.thread is None:
                t = threading.Thread(target=self._feed,
                                     name="IterableQueueFeeder")
                t.daemon = True
                self.thread = t
                t.start()
            else:
                self.cond.notify()

    def close_when_flushed(self):
        """Ask the feeder to close the slot once it has written everything.
        Return False if there is nothing left to write (caller closes)."""
        with self.cond:
            if not self.pending:
                return False
            self.close_after = True
            self.cond.notify()
            return True

    def flush(self):
        """Wait until everything buffered here is in the pipe (or dropped
        because nobody can read it any more)."""
        with self.cond:
            while self.pending:
                if self.thread is None or not self.thread.is_alive():
                    break
                self.cond.wait(_PRODUCER_SLICE)

    def _feed(self):
        shared = self.shared
        cond = self.cond
        buffer = self.buffer
        try:
            while True:
                with cond:
                    while not buffer:
                        if self.close_after and not self.pending:
                            self.thread = None
                            shared.close_slot(self.slot)
                            return
                        if not cond.wait(5.0) and not buffer:
                            # Idle: let the thread go; a new one is started
                            # when the pipe is full again.
                            if not self.pending and not self.close_after:
                                self.thread = None
                                return
                    batch = [buffer.popleft()]
                    msg, lock_held = batch[0]
                    if not lock_held and len(msg) < _PIPE_BUF:
                        # Several small messages in one atomic write.
                        total = len(msg)
                        while buffer:
                            nxt = buffer[0]
                            if nxt[1] or total + len(nxt[0]) > _PIPE_BUF:
                                break
                            total += len(nxt[0])
                            batch.append(buffer.popleft())
                if lock_held:
                    ok = self._write_rest(msg)
                elif len(batch) > 1:
                    ok = self._write_small(b"".join(m for m, _ in batch))
                elif len(msg) <= _PIPE_BUF:
                    ok = self._write_small(msg)
                else:
                    ok = self._write_big(msg)
                dropped = 0 if ok else len(batch)
                with cond:
                    if not ok:
                        # Nobody can read any more: drop the rest too.
                        dropped += len(buffer)
                        buffer.clear()
                    self.pending -= len(batch) if ok else dropped
                    if not self.pending:
                        cond.notify_all()
                for _ in range(dropped):
                    shared.sem.release()
        except BaseException:
            with cond:
                self.thread = None
                cond.notify_all()
            raise

    def _wait_writable(self, poller):
        """Wait for room in the pipe; False if nobody reads any more."""
        while True:
            if poller.poll(_PRODUCER_SLICE * 1000.0):
                return True
            if _nobody_reads(self.shared):
                return False

    def _poller(self):
        p = select.poll()
        p.register(self.shared.wfd, _POLLOUT)
        return p

    def _write_small(self, msg):
        shared = self.shared
        wlock = shared.wlock
        poller = None
        while True:
            wlock.acquire()
            try:
                os.write(shared.wfd, msg)   # atomic: all or nothing
                return True
            except BlockingIOError:
                pass
            finally:
                wlock.release()
            if poller is None:
                poller = self._poller()
            if not self._wait_writable(poller):
                return False

    def _write_big(self, framed):
        """Write a whole message longer than PIPE_BUF (header included)."""
        poller = self._poller()
        if not self._wait_writable(poller):
            return False
        self.shared.wlock.acquire()
        return self._write_rest(memoryview(framed), poller)

    def _write_rest(self, view, poller=None):
        """Write ``view`` while holding the write lock; release it."""
        shared = self.shared
        fd = shared.wfd
        try:
            while len(view):
                try:
                    n = os.write(fd, view)
                except BlockingIOError:
                    n = 0
                if n:
                    view = view[n:]
                    continue
                if poller is None:
                    poller = self._poller()
                if not poller.poll(_PRODUCER_SLICE * 1000.0):
                    if _nobody_reads(shared):
                        return False
            return True
        finally:
            shared.wlock.release()


class ProducerQueue(_Endpoint):
    """A producer endpoint: ``put`` items, then ``close()``.

    Obtain one from :meth:`IterableQueue.get_producer` and give it to one
    process (for instance as a :class:`multiprocessing.Process` argument).
    """

    _kind = _PRODUCER

    def _new_local(self):
        return _PutState(self._shared, self._slot)

    def put(self, item, block=True, timeout=None):
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
        if self._closed:
            raise ProducerQueueClosedException(
                "put() called on a closed ProducerQueue")
        if self._gen != _fork_generation:
            self._claim()
            if self._closed:
                raise ProducerQueueClosedException(
                    "put() called on a closed ProducerQueue")
        shared = self._shared
        if not shared.sem.acquire(False):
            if not self._wait_for_slot(block, timeout):
                return
        local = self._local
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
        self._put_large(shared, local, data, size)

    @staticmethod
    def _put_large(shared, local, data, size):
        """put's part for a message larger than the pipe writes atomically
        (``_PIPE_BUF``): as much of it as fits now, the rest by the feeder."""
        msg = memoryview(_pack_header(size) + data)
        if not local.pending:
            # Write as much as fits now; a partly written message keeps the
            # write lock, which the feeder releases when it has written the
            # rest.
            wlock = shared.wlock
            if wlock.acquire(True, _FAST_LOCK_TIMEOUT):
                try:
                    n = os.write(shared.wfd, msg)
                except BlockingIOError:
                    n = 0
                except BaseException:
                    wlock.release()
                    raise
                if n == len(msg):
                    wlock.release()
                    return
                if n:
                    local.enqueue(msg[n:], lock_held=True)
                    return
                wlock.release()
        local.enqueue(msg)

    def put_nowait(self, item):
        """Same as ``put(item, block=False)``."""
        return self.put(item, False)

    def _wait_for_slot(self, block, timeout):
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

    def close(self):
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
