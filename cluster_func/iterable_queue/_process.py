"""Processes as the queue sees them: which process this is (its fork
generation and start time), whether another one is still alive, and whether
an object was handed to this one as a :class:`multiprocessing.Process`
argument."""

import multiprocessing
import os
from typing import Dict, Optional, Tuple

# Bumped in the child after every fork, so that an endpoint can tell cheaply
# that it is being used in a new process.  Read it as
# ``_process._fork_generation``: it is rebound at every fork.
_fork_generation = 0


def _bump_fork_generation() -> None:
    global _fork_generation
    _fork_generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_bump_fork_generation)

_HAVE_PROC = os.path.exists("/proc/self/stat")


def _proc_stat(pid: int) -> Optional[Tuple[bytes, int]]:
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


_own_start: Dict[int, int] = {}


def _own_starttime() -> int:
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


def _process_alive(pid: int, starttime: int) -> bool:
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


def _handed_to_current_process(obj: object) -> bool:
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
