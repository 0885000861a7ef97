"""What producer and consumer endpoints have in common: their slot in the
shared table, which process owns them, and closing them when that process
drops them or exits."""

import os
import select
from multiprocessing import util as _mp_util
from typing import Iterable, Literal, Optional, Tuple, Type, TypeVar

from . import _process
from ._process import _handed_to_current_process
from ._put import _PutState
from ._shared import _EXIT_PRIORITY, _Shared
from ._spawn import _note_spawning

_E = TypeVar("_E", bound="_Endpoint")


def _exit_close(shared: _Shared, slot: int, pid: int,
                local: Optional[_PutState]) -> None:
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


class _Endpoint(object):
    _kind = 0

    def __init__(self, shared: _Shared, slot: int) -> None:
        self._shared = shared
        self._slot = slot
        self._unpickled_in: Optional[int] = None
        self._setup()

    def _setup(self) -> None:
        self._closed = False
        self._gen = -1            # not claimed in this process yet
        self._claimed_pid: Optional[int] = None
        self._finalizer: Optional[_mp_util.Finalize[None]] = None
        self._poller: Optional[select.poll] = None
        self._poller_pid: Optional[int] = None
        self._local: Optional[_PutState] = None
        _mp_util.register_after_fork(self, _Endpoint._after_fork_hook)

    def _new_local(self) -> Optional[_PutState]:
        return None

    def __getstate__(self) -> Tuple[_Shared, int]:
        _note_spawning(self._shared, self._slot)
        return (self._shared, self._slot)

    def __setstate__(self, state: Tuple[_Shared, int]) -> None:
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
    def _after_fork_hook(self: "_Endpoint") -> None:
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

    def _claim(self) -> None:
        """Make the current process the owner of this endpoint."""
        pid = os.getpid()
        if self._claimed_pid != pid:
            # State local to a process (buffers, threads, locks) is never
            # inherited from the parent.
            self._local = self._new_local()
            self._poller = None
            self._finalizer = None
        self._gen = _process._fork_generation
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

    def _open_here(self, error: Type[Exception], message: str) -> None:
        """The cold start of put/get: claim the endpoint if this process
        has not yet, then raise ``error(message)`` if it is closed."""
        if not self._closed:
            self._claim()
        if self._closed:
            raise error(message)

    def _get_poller(self, fds: Iterable[Tuple[int, int]]) -> select.poll:
        pid = os.getpid()
        if self._poller is None or self._poller_pid != pid:
            p = select.poll()
            for fd, ev in fds:
                p.register(fd, ev)
            self._poller = p
            self._poller_pid = pid
        return self._poller

    def close(self) -> None:
        """Close this endpoint (idempotent).  Closing is shared: the
        endpoint is closed for every process that holds a copy of it."""
        if self._closed and self._shared.slot_closed(self._slot):
            return
        self._closed = True
        self._shared.close_slot(self._slot)

    @property
    def closed(self) -> bool:
        """True once this endpoint has been closed (here or elsewhere)."""
        return self._closed or self._shared.slot_closed(self._slot)

    def qsize(self) -> int:
        """Approximate number of items in the queue (put and not yet
        taken)."""
        return self._shared.qsize()

    def empty(self) -> bool:
        """True if no item can be taken right now (approximate)."""
        return self._shared.empty()

    def full(self) -> bool:
        """True if the queue holds ``maxsize`` items (never true for an
        unbounded queue)."""
        return self._shared.full()

    def __enter__(self: _E) -> _E:
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self.close()
        return False

    def __repr__(self) -> str:
        return "<%s slot=%d %s>" % (type(self).__name__, self._slot,
                                    "closed" if self.closed else "open")
