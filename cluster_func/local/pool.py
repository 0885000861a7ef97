"""The worker processes behind clum's runner: starting them (under fork, spawn or forkserver),
giving each its slot's environment, writing to their pipes without blocking, and stopping them.

Sending never blocks (non-blocking pipes and a selector), so a worker that is busy reporting
failures can never deadlock the runner.  Under fork, a new worker closes the runner's ends of
every other worker's pipes; a worker holds SIGINT/SIGTERM until it has started (the runner
handles Ctrl-C for everyone).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import selectors
import signal
import struct
import time
from typing import TYPE_CHECKING, Any, Callable, Deque, List, Mapping, Optional, Set, Tuple

from pickle import loads

from ..core.errors import signals_held
from ..core.script import without_script_folders
from . import worker as worker_module
from .gpus import Pinned
from .worker import Counters, Done, Message, message

if TYPE_CHECKING:
    from .batching import Batch

class Reaper:
    """A small process that outlives the runner to end the process groups of its workers.

    Each worker leads a process group of its own (see worker._main), which the processes its calls
    start join; the runner ends a worker's group with the worker (a timeout, a death, the end of
    the run).  Killed by ``kill -9`` it cannot: this process, forked before any worker (so that it
    holds none of their pipes), in a process group of its own and deaf to the stop signals, reads
    the groups to end from a pipe, and once the pipe hangs up (the runner is gone, however it
    went) ends those still listed.  Only forked from a process with one thread (a fork beside
    other threads may deadlock): started from a thread (cluster_func.imap), a run has none."""

    @classmethod
    def start(cls) -> Optional[Reaper]:
        import threading

        if threading.active_count() != 1 or not hasattr(os, "fork"):
            return None
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                _reap(r)
            finally:
                os._exit(0)
        os.close(r)
        return cls(pid, w)

    def __init__(self, pid: int, fd: int) -> None:
        self.pid, self.fd = pid, fd

    def _say(self, text: str) -> None:
        try:
            os.write(self.fd, text.encode())
        except OSError:
            pass

    def add(self, pgid: int) -> None:
        self._say(f"{pgid}\n")

    def forget(self, pgid: int) -> None:
        self._say(f"-{pgid}\n")

    def close(self) -> None:
        os.close(self.fd)
        try:
            os.waitpid(self.pid, 0)
        except (ChildProcessError, InterruptedError):
            pass


def _reap(r: int) -> None:
    """The reaper's loop (see Reaper): in the forked child."""
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    os.setpgid(0, 0)
    os.closerange(0, r)
    os.closerange(r + 1, 1 << 16)
    groups: Set[int] = set()
    buf = b""
    while True:
        try:
            data = os.read(r, 4096)
        except InterruptedError:
            continue
        except OSError:
            data = b""
        if not data:
            break
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if line.startswith(b"-"):
                groups.discard(int(line[1:]))
            elif line:
                groups.add(int(line))
    for g in groups:
        try:
            os.killpg(g, signal.SIGKILL)
        except OSError:
            pass


def kill_group(pid: int) -> None:
    """End the process group of worker ``pid``: the worker, if still there, and every process its
    calls started and left running."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:  # no such group (left empty, or not made yet)
        pass


class Worker:
    proc: Any  # a multiprocessing process; None until started (the same for its pipes' ends)
    task_w: Any
    result_r: Any

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.proc = None
        self.task_w = None
        self.result_r = None
        self.outq: Deque[memoryview] = collections.deque()  # memoryviews still to write to the task pipe
        self.writing = False  # its task pipe is registered for EVENT_WRITE (outq is not empty)
        self.inbox = bytearray()  # what was read from its result pipe and is not a whole message yet
        self.awaiting: Optional[Done] = None  # a "done" whose values are the next message (see Pool.receive)
        self.partial: Optional[Tuple[bytearray, int]] = None  # those values, being read: (buffer, bytes so far)
        self.pipe_size = PIPE_SIZE
        self.outstanding: Deque[Batch] = collections.deque()
        self.finished_calls = 0  # calls the runner has seen reported done by this worker
        self.ready = False
        self.watch_value: Any = -1
        self.watch_since = 0.0
        self.gen = 0  # bumped at each (re)start: events of an earlier process are stale


PIPE_SIZE = 1 << 16  # Linux's default pipe buffer
READ_SIZE = 1 << 16  # what one read of a result pipe asks for
# A batch's values (see worker.py's protocol) larger than this that are not yet in the inbox whole are
# read straight into their own buffer, rather than into the inbox and copied out of it.
DIRECT_READ_MIN = 1 << 16
_SIZE = struct.Struct("!i")  # multiprocessing.Connection's framing: the size of what follows,
_BIG_SIZE = struct.Struct("!Q")  # or -1 and then the size in 8 bytes
MAX_PIPE_SIZE = 1 << 20  # what an unprivileged process may ask for by default
_F_SETPIPE_SZ = getattr(__import__("fcntl"), "F_SETPIPE_SZ", 1031)


def _grow_pipe(fd: int, wanted: int, current: int) -> int:
    """Ask for a pipe buffer of ``wanted`` bytes (at most MAX_PIPE_SIZE); returns the size got."""
    if current >= MAX_PIPE_SIZE:
        return current
    import fcntl

    try:
        return fcntl.fcntl(fd, _F_SETPIPE_SZ, min(MAX_PIPE_SIZE, wanted))
    except OSError:  # over the per-user pipe limit: keep what there is
        return MAX_PIPE_SIZE


def describe_exit(exitcode: Optional[int]) -> str:
    if exitcode is None:
        return "the worker vanished"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory? the OOM killer sends SIGKILL)" if -exitcode == signal.SIGKILL else ""
        return f"its worker process was killed by {name}{hint}"
    return f"its worker process exited with status {exitcode}"


class Pool:
    """Up to ``processes`` worker processes of one start method, and the selector the runner's
    loop waits on (their results, their exits, pipes ready for more, the relay).

    A worker is started in a slot (:class:`Worker`) and replaced in the same slot; messages to
    it are queued and written without blocking (:meth:`send`, :meth:`flush`).
    """

    _ctx: Any  # (None until the first worker; the same for these)
    shared: Any
    counters: Any
    reaper: Any

    def __init__(self, source: Any, processes: int, start_method: Optional[str] = None, values: Optional[str] = None,
                 slot_env: Optional[Callable[[int], Mapping[str, str]]] = None, relay: Any = None) -> None:
        """``source`` gives workers their target (see cluster_func.local.worker); ``values``:
        the results format the workers encode values in, or None; ``slot_env``: slot -> the
        environment variables its worker sets first (its GPUs), or None; ``relay``: the relay
        to pump while waiting for a worker to end."""
        self.source = source
        self.processes = processes
        self.start_method = start_method
        self.values = values
        self.slot_env = slot_env
        self.relay = relay
        self._ctx = None  # multiprocessing is imported with the first worker (a resume may need none)
        self.workers: List[Worker] = [Worker(i) for i in range(processes)]
        self.sel = selectors.DefaultSelector()
        self.shared = self.counters = None  # allocated with the first worker (a resume may need none)
        self.own_signals = True  # False when run from a thread other than the main one (no handlers there)
        self.reaper = None  # see Reaper: started with the first worker
        self.groups: Set[int] = set()  # the process groups of the workers started (each leads its own)

    @property
    def ctx(self) -> Any:
        if self._ctx is None:
            import multiprocessing

            self._ctx = multiprocessing.get_context(self.start_method)
            if self.start_method == "forkserver":  # (see cluster_func.local._forkserver)
                self._ctx.set_forkserver_preload(["__main__", "cluster_func.local._forkserver"])
        return self._ctx

    def start(self, w: Worker) -> None:
        # A signal arriving half-way through starting a process would leave it without a
        # handle: hold SIGINT/SIGTERM until the start is over (the worker unblocks them).
        with signals_held() if self.own_signals else contextlib.nullcontext():
            self._start_blocked(w)

    def _start_blocked(self, w: Worker) -> None:
        if self.shared is None:
            self.shared = Counters.allocate(self.ctx, self.processes)
            self.counters = Counters(self.shared)
            self.reaper = Reaper.start()
        task_r, task_w = self.ctx.Pipe(duplex=False)
        result_r, result_w = self.ctx.Pipe(duplex=False)
        close_fds = []
        if self.ctx.get_start_method() == "fork":  # the child inherits every runner-side end
            close_fds = [task_w.fileno(), result_r.fileno()] + ([self.reaper.fd] if self.reaper else [])
            for other in self.workers:
                if other is not w and other.proc is not None and other.task_w is not None:
                    close_fds += [other.task_w.fileno(), other.result_r.fileno()]
        method = self.ctx.get_start_method()
        w.proc = self.ctx.Process(
            target=worker_module.main,
            args=(task_r, result_w,
                  self.source if self.slot_env is None else Pinned(self.source, self.slot_env(w.slot)),
                  self.shared, w.slot, close_fds,
                  None if method == "forkserver" else os.getpid(), method == "fork",
                  self.values, os.getpid() if method == "forkserver" else None),
            name=f"clum-worker-{w.slot}", daemon=True,
        )
        try:
            if method == "fork":
                w.proc.start()
            else:
                with without_script_folders():  # a spawned child imports the standard library first
                    w.proc.start()
        except BaseException:
            w.proc = None  # not started: nothing to join or settle
            for c in (task_r, task_w, result_r, result_w):
                c.close()
            raise
        task_r.close()
        result_w.close()
        self.groups.add(w.proc.pid)
        if self.reaper is not None:
            self.reaper.add(w.proc.pid)
        w.task_w, w.result_r = task_w, result_r
        os.set_blocking(task_w.fileno(), False)
        os.set_blocking(result_r.fileno(), False)  # (see receive)
        if self.values is not None:  # a batch's values at once: the worker goes on to its next batch
            _grow_pipe(result_r.fileno(), MAX_PIPE_SIZE, PIPE_SIZE)
        w.outq = collections.deque()
        w.writing = False
        w.inbox = bytearray()
        w.awaiting = w.partial = None
        w.pipe_size = PIPE_SIZE
        w.outstanding = collections.deque()
        self.counters.reset_started(w.slot)
        w.finished_calls = self.counters.finished(w.slot)
        w.ready = False
        w.watch_value, w.watch_since = -1, time.monotonic()
        w.gen += 1
        self.sel.register(result_r.fileno(), selectors.EVENT_READ, ("result", w, w.gen))
        self.sel.register(w.proc.sentinel, selectors.EVENT_READ, ("exit", w, w.gen))

    def end_group(self, w: Worker) -> None:
        """Worker w is gone or is to go: end it and every process its calls started."""
        pid = w.proc.pid
        kill_group(pid)
        if w.proc.is_alive():  # (it had no group of its own yet: it makes one first thing)
            w.proc.kill()
        self.groups.discard(pid)
        if self.reaper is not None:
            self.reaper.forget(pid)

    def unregister(self, w: Worker) -> None:
        for fd in (w.result_r.fileno(), w.proc.sentinel, w.task_w.fileno()):
            try:
                self.sel.unregister(fd)
            except (KeyError, ValueError):
                pass
        w.writing = False

    def receive(self, w: Worker, until_empty: bool = False) -> List[Message]:
        """The whole messages (worker.message) that worker w has written and its result pipe
        holds now: one read, or with ``until_empty`` reads until the pipe is empty.  Never waits
        for the rest of a message (it stays in ``w.inbox`` for the next read), and one read takes
        as many messages as the pipe holds.  A ``done`` whose values follow it (see worker.py's
        protocol) comes once they are here, with them; values not yet here whole are read straight
        into their buffer (``w.partial``).  EOFError once w's end is closed and all is read."""
        fd = w.result_r.fileno()
        inbox = w.inbox
        got: List[Message] = []
        while True:
            try:
                if w.partial is not None:
                    got += self._read_values(w, fd)
                    if w.partial is not None and not until_empty:
                        return got
                    continue
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                break
            if not data:
                if inbox or w.partial is not None or w.awaiting is not None:
                    break  # (a torn last message: as multiprocessing would, drop it)
                if got:
                    return got
                raise EOFError
            inbox += data
            self._messages(w, inbox, got)
            if not until_empty:
                break
        return got

    @staticmethod
    def _messages(w: Worker, inbox: bytearray, got: List[Message]) -> None:
        """Take the whole messages out of ``inbox`` (w's) into ``got``."""
        start, end = 0, len(inbox)
        while end - start >= 4:
            size = _SIZE.unpack_from(inbox, start)[0]
            head = 4
            if size == -1:
                if end - start < 12:
                    break
                size, head = _BIG_SIZE.unpack_from(inbox, start + 4)[0], 12
            stop = start + head + size
            if stop > end:
                if w.awaiting is not None and size >= DIRECT_READ_MIN:  # values: the rest straight into their buffer
                    buf = bytearray(size)
                    buf[:end - start - head] = memoryview(inbox)[start + head:end]
                    w.partial = (buf, end - start - head)
                    start = end
                break
            if w.awaiting is not None:  # the values of that "done"
                got.append(w.awaiting._replace(records=inbox[start + head:stop]))
                w.awaiting = None
            else:
                with memoryview(inbox) as view:
                    msg = message(loads(view[start + head:stop]))
                if type(msg) is Done and type(msg.records) is int:
                    w.awaiting = msg  # (its values are the next message)
                else:
                    got.append(msg)
            start = stop
        if start:
            del inbox[:start]

    @staticmethod
    def _read_values(w: Worker, fd: int) -> List[Message]:
        """One read of the values w.awaiting waits for, into their buffer; the "done" with them once whole.
        BlockingIOError when there is nothing to read; EOFError-free: a pipe closed half-way leaves them torn."""
        assert w.partial is not None and w.awaiting is not None
        buf, have = w.partial
        with memoryview(buf) as view:
            n = os.readv(fd, [view[have:]])
        if not n:
            raise BlockingIOError  # (closed: the torn values are dropped with the worker, see _on_exit)
        have += n
        if have < len(buf):
            w.partial = (buf, have)
            return []
        done, w.awaiting, w.partial = w.awaiting._replace(records=buf), None, None
        return [done]

    def send(self, w: Worker, header: bytes, payload: bytes | memoryview) -> None:
        """Queue one message in ``Connection.send_bytes`` framing, without copying the payload."""
        n = len(header) + len(payload)
        if n > w.pipe_size:  # big arguments: a bigger pipe moves them in fewer, larger writes
            w.pipe_size = _grow_pipe(w.task_w.fileno(), n, w.pipe_size)
        head = (_SIZE.pack(n) if n < 0x7FFFFFFF else _SIZE.pack(-1) + _BIG_SIZE.pack(n)) + header
        if not w.outq:  # (the common case: the whole message goes at once, nothing is queued)
            try:
                sent = os.writev(w.task_w.fileno(), (head, payload))
            except BlockingIOError:
                sent = 0
            except OSError:
                return  # the worker is gone; its exit event will requeue the work
            if sent == len(head) + len(payload):
                return
            if sent < len(head):
                w.outq.append(memoryview(head)[sent:])
                sent = 0
            else:
                sent -= len(head)
            w.outq.append(memoryview(payload)[sent:])
            self.flush(w)
            return
        w.outq.append(memoryview(head))
        w.outq.append(memoryview(payload))
        self.flush(w)

    def flush(self, w: Worker) -> None:
        q = w.outq
        fd = w.task_w.fileno()
        try:
            while q:
                sent = os.writev(fd, list(itertools.islice(q, 16)))
                while sent and sent >= len(q[0]):
                    sent -= len(q.popleft())
                if sent:
                    q[0] = q[0][sent:]
                    break  # the pipe is full
        except BlockingIOError:
            pass
        except OSError:
            q.clear()  # the worker is gone; its exit event will requeue the work
            return
        if q and not w.writing:
            self.sel.register(fd, selectors.EVENT_WRITE, ("write", w, w.gen))
            w.writing = True
        elif not q and w.writing:
            self.sel.unregister(fd)
            w.writing = False

    def join(self, p: Any, deadline: float) -> None:
        """Wait for worker p until deadline, passing on its last output meanwhile (a worker
        blocked writing to a full relay would not exit)."""
        if self.relay is None:
            p.join(max(0.0, deadline - time.monotonic()))
            return
        while p.is_alive() and time.monotonic() < deadline:
            self.relay.pump()
            p.join(0.02)
        self.relay.pump()

    def shutdown(self, force: bool = False) -> None:
        procs = [w.proc for w in self.workers if w.proc is not None and w.proc.pid is not None]
        if not force:
            for w in self.workers:
                try:
                    if w.task_w is not None:
                        w.task_w.close()  # EOF: the worker returns
                except OSError:
                    pass
            deadline = time.monotonic() + 5
            for p in procs:
                self.join(p, deadline)
        for w in self.workers:
            p = w.proc
            if p is not None and p.pid is not None and p.is_alive():
                # Workers ignore SIGTERM (the runner's to handle), and one still starting has it
                # held: stop it for good at once.
                p.kill()
        deadline = time.monotonic() + 1.0
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(1)
        for pid in self.groups:  # what the calls started and left running ends with the run
            kill_group(pid)
        self.groups.clear()
        if self.reaper is not None:
            self.reaper.close()
            self.reaper = None
        for w in self.workers:
            try:
                if w.task_w is not None:
                    w.task_w.close()
            except OSError:
                pass
        try:
            self.sel.close()
        except Exception:  # noqa: BLE001
            pass
