"""Endpoints pickled for a child that is being started (spawn/forkserver):
their shared state must stay alive in this process until the child has
opened it.  Otherwise a parent that drops the queue (or exits) right after
Process.start() unlinks the named semaphores before the child opens them."""

import os
import threading
import time
from multiprocessing import util as _mp_util
from typing import Any, List, Optional, Tuple

from ._shared import _EXIT_PRIORITY, _H_SIZE, _S_CLOSED, _S_PID, _S_SIZE, _Shared

_SpawnEntry = Tuple[Any, _Shared, int, int]   # popen, shared, slot, owner pid

_spawn_pending: List[_SpawnEntry] = []    # [popen, shared, slot, owner pid at pickling]
_spawn_lock = threading.Lock()
_spawn_finalizer_pid: Optional[int] = None
_SPAWN_EXIT_WAIT = 60.0


def _forget_after_fork() -> None:
    global _spawn_lock, _spawn_pending
    # The parent's bookkeeping of the children it was starting is not ours.
    _spawn_lock = threading.Lock()
    _spawn_pending = []


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def _note_spawning(shared: _Shared, slot: int) -> None:
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


def _spawn_entry_done(entry: _SpawnEntry) -> bool:
    popen, shared, slot, owner = entry
    base = _H_SIZE + _S_SIZE * slot
    t = shared.table
    if t[base + _S_CLOSED] or t[base + _S_PID] != owner:
        return True           # the child took it over (or it is closed)
    try:
        return popen.poll() is not None   # the child is gone
    except Exception:         # not launched yet (no pid) and the like
        return False


def _sweep_spawn_pending_locked() -> None:
    if _spawn_pending:
        _spawn_pending[:] = [e for e in _spawn_pending
                             if not _spawn_entry_done(e)]


def _wait_spawned_children() -> None:
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
