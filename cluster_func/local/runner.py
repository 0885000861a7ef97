"""The local pool behind ``clum``: workers, adaptive batches, failures, signals, progress.

Nothing here knows about clusters.  The runner pulls ``(position, element)``
pairs from an iterator (already filtered to the chosen bins), deals them out to
worker processes in batches whose size adapts to the measured cost of a call,
and keeps, for every batch it has sent, enough to know what to do if the worker
running it dies.  Sending never blocks (non-blocking pipes and a selector), so
a worker that is busy reporting failures can never deadlock the runner.
"""

import collections
import itertools
import os
import pickle
import selectors
import signal
import struct
import time
from dataclasses import dataclass, field
from typing import List, Optional

from . import worker as worker_module
from ..core.errors import Interrupted, signals_held
from .gpus import Pinned
from ..record.fingerprints import pickle_elements
from ..record.writer import JournalWriteError
from .reporter import Reporter
from ..core.script import args_error_where, user_traceback
from .worker import DIGESTS_ALWAYS, DIGESTS_IF_DEAR, DIGESTS_NEVER, HEADER, Counters

# Adaptive batching.  A batch should keep a worker busy for about TARGET seconds:
# long enough that the runner's per-batch cost is small, short enough that the
# last batches spread evenly.  A worker hands back the rest of a batch that runs
# past SPLIT x TARGET (only asked for when calls are slow enough that checking
# the clock costs nothing measurable).
TARGET_BATCH_SECONDS = 0.004
SPLIT_FACTOR = 3.0
MAX_BATCH = 20000
MAX_BATCH_BYTES = 1 << 20  # pickled; keeps memory flat when elements are large
PREFETCH = 2  # batches outstanding per worker
CLOCK_CHECK_MIN_CALL = 20e-6  # check the clock per call only for calls slower than this


class BatchSizer:
    """Chooses the next batch size from the measured seconds per call.

    Starts at one call, grows at most 4x per batch, and follows the most recent
    measurements closely (an exponential average weighted by calls), so a run
    whose calls turn expensive shrinks its batches at once.
    """

    def __init__(self, target=TARGET_BATCH_SECONDS, max_batch=MAX_BATCH):
        self.target = target
        self.max_batch = max_batch
        self.per_call: Optional[float] = None
        self.last_size = 0

    def observe(self, n_calls: int, seconds: float):
        if n_calls <= 0:
            return
        x = max(seconds, 1e-9) / n_calls
        if self.per_call is None:
            self.per_call = x
        elif x > self.per_call:
            self.per_call = x  # calls got dearer: react immediately
        else:
            w = min(1.0, n_calls / max(self.last_size, 1))
            self.per_call = (1 - 0.5 * w) * self.per_call + 0.5 * w * x

    def next_size(self) -> int:
        if self.per_call is None:
            size = 1 if self.last_size == 0 else self.last_size
        else:
            size = int(self.target / self.per_call)
            size = min(size, max(1, self.last_size) * 4)
        size = max(1, min(self.max_batch, size))
        self.last_size = size
        return size

    @property
    def split_after(self) -> float:
        """Deadline to give a batch, or 0 for none."""
        if self.per_call is not None and self.per_call >= CLOCK_CHECK_MIN_CALL:
            return self.target * SPLIT_FACTOR
        return 0.0


@dataclass
class Batch:
    id: int
    positions: object  # range or list of positions in the args iterable
    elements: list
    attempts: Optional[list] = None  # per element, None means all first attempts
    failed: set = field(default_factory=set)  # indices k reported failed (this attempt)
    worker: Optional["Worker"] = None

    def attempt(self, k):
        return self.attempts[k] if self.attempts else 0

    def tail(self, start, new_id):
        return Batch(new_id, self.positions[start:], self.elements[start:],
                     self.attempts[start:] if self.attempts else None)


class _StopNow(Exception):
    """The end of the grace period: stop the calls still running."""


class Worker:
    def __init__(self, slot):
        self.slot = slot
        self.proc = None
        self.task_w = None
        self.result_r = None
        self.outq = collections.deque()  # memoryviews still to write to the task pipe
        self.pipe_size = PIPE_SIZE
        self.outstanding = collections.deque()
        self.finished_calls = 0  # calls the runner has seen reported done by this worker
        self.ready = False
        self.watch_value = -1
        self.watch_since = 0.0
        self.gen = 0  # bumped at each (re)start: events of an earlier process are stale


PIPE_SIZE = 1 << 16  # Linux's default pipe buffer
MAX_PIPE_SIZE = 1 << 20  # what an unprivileged process may ask for by default
_F_SETPIPE_SZ = getattr(__import__("fcntl"), "F_SETPIPE_SZ", 1031)


def _grow_pipe(fd, wanted, current):
    """Ask for a pipe buffer of ``wanted`` bytes (at most MAX_PIPE_SIZE); returns the size got."""
    if current >= MAX_PIPE_SIZE:
        return current
    import fcntl

    try:
        return fcntl.fcntl(fd, _F_SETPIPE_SZ, min(MAX_PIPE_SIZE, wanted))
    except OSError:  # over the per-user pipe limit: keep what there is
        return MAX_PIPE_SIZE




@dataclass
class Outcome:
    """What a run did; the command line turns it into messages and an exit status."""
    done: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)
    interrupted_by: Optional[int] = None
    fatal: Optional[str] = None
    args_error: Optional[str] = None
    journal_error: Optional[str] = None
    walltime_stop: bool = False  # stopped before the walltime with work left

    @property
    def total(self):
        return self.done + self.failed


def describe_exit(exitcode) -> str:
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


class Runner:
    """Run the target over ``work`` on up to ``processes`` workers.

    ``source`` gives workers their target: :class:`cluster_func.local.worker.Inherited` (fork) or
    :class:`cluster_func.local.worker.FromScript`.  ``work`` offers ``take(n)`` (a
    :class:`cluster_func.core.bins.Work` or :class:`cluster_func.record.resume.ResumeWork`).  ``journal``
    (optional) gets ``completed(positions, elements, check)`` and ``failed(...)``.
    Workers start when there is work for them, never more than ``processes``.
    """

    def __init__(self, source, processes, work, reporter: Reporter, journal=None, retries=0,
                 timeout=None, start_method=None, values=None, stop_at=None, relay=None, slot_env=None):
        """``stop_at``: (start no new call after, stop running calls at), time.monotonic() values.
        ``relay``: a :class:`cluster_func.local.relay.Relay` (whose ``wrap`` made ``source``) to pump.
        ``slot_env``: slot -> the environment variables its worker sets first (its GPUs), or None."""
        self.relay = relay
        self.slot_env = slot_env
        self.source = source
        self.stop_new_at, self.kill_at = stop_at or (None, None)
        self.draining = False
        self.values = values  # "jsonl"/"pkl": workers make value records, which go into the journal
        self.processes = processes
        self.work = work
        self.reporter = reporter
        self.journal = journal
        self.retries = retries
        self.timeout = timeout
        self.start_method = start_method
        self._ctx = None  # multiprocessing is imported with the first worker (a resume may need none)
        self.sizer = BatchSizer()
        self.outcome = Outcome()
        self.pending: collections.deque = collections.deque()  # batches to send before new work
        self.retry_queue: collections.deque = collections.deque()  # (position, element, attempt)
        self.batches = {}
        self.ids = itertools.count()
        self.exhausted = False
        self.workers: List[Worker] = []
        self.sel = selectors.DefaultSelector()
        self.shared = self.counters = None  # allocated with the first worker (a resume may need none)
        self.deaths_before_ready = 0
        self.digests = (DIGESTS_NEVER if journal is None else
                        DIGESTS_ALWAYS if journal.mode != "round-robin" else DIGESTS_IF_DEAR)

    @property
    def ctx(self):
        if self._ctx is None:
            import multiprocessing

            self._ctx = multiprocessing.get_context(self.start_method)
            if self.start_method == "forkserver":  # (see cluster_func.local._forkserver)
                self._ctx.set_forkserver_preload(["__main__", "cluster_func.local._forkserver"])
        return self._ctx

    # --- workers -------------------------------------------------------------
    def _start_worker(self, w: Worker):
        # A signal arriving half-way through starting a process would leave it without a
        # handle: hold SIGINT/SIGTERM until the start is over (the worker unblocks them).
        with signals_held():
            self._start_worker_blocked(w)

    def _start_worker_blocked(self, w: Worker):
        if self.shared is None:
            self.shared = Counters.allocate(self.ctx, self.processes)
            self.counters = Counters(self.shared)
        task_r, task_w = self.ctx.Pipe(duplex=False)
        result_r, result_w = self.ctx.Pipe(duplex=False)
        close_fds = []
        if self.ctx.get_start_method() == "fork":  # the child inherits every runner-side end
            close_fds = [task_w.fileno(), result_r.fileno()]
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
            w.proc.start()
        except BaseException:
            w.proc = None  # not started: nothing to join or settle
            for c in (task_r, task_w, result_r, result_w):
                c.close()
            raise
        task_r.close()
        result_w.close()
        w.task_w, w.result_r = task_w, result_r
        os.set_blocking(task_w.fileno(), False)
        w.outq = collections.deque()
        w.pipe_size = PIPE_SIZE
        w.outstanding = collections.deque()
        self.counters.reset_started(w.slot)
        w.finished_calls = self.counters.finished(w.slot)
        w.ready = False
        w.watch_value, w.watch_since = -1, time.monotonic()
        w.gen += 1
        self.sel.register(result_r.fileno(), selectors.EVENT_READ, ("result", w, w.gen))
        self.sel.register(w.proc.sentinel, selectors.EVENT_READ, ("exit", w, w.gen))

    def _unregister(self, w: Worker):
        for fd in (w.result_r.fileno(), w.proc.sentinel, w.task_w.fileno()):
            try:
                self.sel.unregister(fd)
            except (KeyError, ValueError):
                pass

    def _send(self, w: Worker, header: bytes, payload: bytes):
        """Queue one message in ``Connection.send_bytes`` framing, without copying the payload."""
        n = len(header) + len(payload)
        if n > w.pipe_size:  # big arguments: a bigger pipe moves them in fewer, larger writes
            w.pipe_size = _grow_pipe(w.task_w.fileno(), n, w.pipe_size)
        size = struct.pack("!i", n) if n < 0x7FFFFFFF else struct.pack("!iQ", -1, n)
        w.outq.append(memoryview(size + header))
        w.outq.append(memoryview(payload))
        self._flush(w)

    def _flush(self, w: Worker):
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
        key = self.sel.get_map().get(fd)
        if q and key is None:
            self.sel.register(fd, selectors.EVENT_WRITE, ("write", w, w.gen))
        elif not q and key is not None:
            self.sel.unregister(fd)

    # --- work ------------------------------------------------------------------
    def _next_batch(self) -> Optional[Batch]:
        if self.pending:
            return self.pending.popleft()
        if self.retry_queue:
            items = sorted(self.retry_queue.popleft() for _ in range(min(len(self.retry_queue), self.sizer.next_size())))
            return Batch(next(self.ids), [p for p, _, _ in items], [e for _, e, _ in items], [a for _, _, a in items])
        if self.exhausted:
            return None
        size = self.sizer.next_size()
        positions, elements, error = self.work.take(size)
        if error is not None:
            self._args_failed(error, getattr(self.work, "error_position", None))
        if not elements or error is not None:  # (a resume may hand out short batches before the end)
            self.exhausted = True
        if not elements:
            return None
        return Batch(next(self.ids), positions, elements)

    def _args_failed(self, error, position):
        """The arguments iterable raised (``position``: the element it was producing, in all of
        args): no more work comes from it; say so loudly, with the script's traceback."""
        where = args_error_where(position)
        self.outcome.args_error = f"the arguments iterable raised {type(error).__name__} {where}"
        self.reporter.message(f"the arguments iterable raised an exception {where}; no more calls will "
                              f"be started (the calls already sent still run):\n{user_traceback(error)}")

    def _pickled(self, b: Batch):
        """The batch's elements pickled; elements that cannot be pickled fail here."""
        try:
            return pickle_elements(b.elements)
        except Exception:  # noqa: BLE001 - find the culprits, send the rest
            keep = []
            for k, e in enumerate(b.elements):
                try:
                    pickle.dumps(e, 4)
                    keep.append(k)
                except Exception as err:  # noqa: BLE001
                    msg = f"cannot be sent to a worker process: {type(err).__name__}: {err}"
                    self.fail_unsent(b.positions[k], e, "PicklingError", msg)
            b.positions = [b.positions[k] for k in keep]
            b.elements = [b.elements[k] for k in keep]
            b.attempts = [b.attempts[k] for k in keep] if b.attempts else None
            return pickle_elements(b.elements) if keep else None

    def _feed(self, w: Worker):
        while len(w.outstanding) < PREFETCH:
            b = self._next_batch()
            if b is None:
                return
            data = self._pickled(b)
            if data is None:
                continue
            if len(data) > MAX_BATCH_BYTES // 2:  # shrink batches of large elements
                per = len(data) / len(b.elements)
                self.sizer.max_batch = max(1, min(MAX_BATCH, int(MAX_BATCH_BYTES / per)))
            b.worker = w
            b.failed = set()
            self.batches[b.id] = b
            w.outstanding.append(b)
            header = HEADER.pack(b.id, self.sizer.split_after, self.digests, len(data))
            if self.values is not None:  # the worker writes each value's record with its position
                data = bytes(data) + pickle.dumps(b.positions, 4)
            self._send(w, header, data)

    def _has_work(self):
        return not self.draining and self._work_left()

    def _work_left(self):
        return bool(self.pending or self.retry_queue or not self.exhausted)

    def _check_walltime(self, now):
        """Near the walltime: start no new call; at its end, stop the calls still running."""
        if not self.draining and now >= self.stop_new_at:
            self.draining = True
            if self.counters is not None:
                self.counters.stop_new_batches()
            self.reporter.message("the walltime is near: starting no new calls; waiting for the running "
                                  "ones (they are stopped at the end of the grace period).")
        if now >= self.kill_at and any(w.outstanding for w in self.workers):
            raise _StopNow()

    # --- results -------------------------------------------------------------------
    def _on_fail(self, b: Batch, k: int, exc_type, message, tb):
        b.failed.add(k)
        position, element, attempt = b.positions[k], b.elements[k], b.attempt(k)
        self._fail_call(position, element, attempt, exc_type, message, tb)

    def fail_unsent(self, position, element, exc_type, message):
        """A call that failed before it could be sent to a worker (no retries: it cannot run)."""
        self._fail_call(position, element, self.retries, exc_type, message, f"{exc_type}: {message}")

    def _fail_call(self, position, element, attempt, exc_type, message, tb):
        will_retry = attempt < self.retries
        if self.journal:
            self.journal.failed(position, element, attempt, exc_type, message, final=not will_retry)
        self.reporter.failure(position, element, exc_type, message, tb, attempt, will_retry)
        if will_retry:
            self.retry_queue.append((position, element, attempt + 1))
        else:
            self.outcome.failed += 1

    def _complete(self, b: Batch, n_done: int, check=None, digests=None, records=None):
        """The first n_done calls of b are over; those not failed are complete.  From the worker,
        for the journal: ``check``, its content check of the whole batch (used when all of it
        is done), and ``digests``, per call started (or None)."""
        if n_done <= 0:
            return
        whole = n_done == len(b.elements) and not b.failed
        if b.failed:
            idx = [k for k in range(n_done) if k not in b.failed]
            positions = [b.positions[k] for k in idx]
            elements = [b.elements[k] for k in idx]
            if digests is not None:
                digests = b"".join(digests[8 * k:8 * k + 8] for k in idx)
        elif n_done == len(b.elements):
            positions, elements = b.positions, b.elements
        else:
            positions, elements = b.positions[:n_done], b.elements[:n_done]
            if digests is not None:
                digests = digests[:8 * n_done]
        self.outcome.done += len(elements)
        if self.journal and elements:  # the values travel in the record that says their calls completed
            self.journal.completed(positions, elements, check if whole else None, digests, records)

    def _on_done(self, w: Worker, batch_id, n_done, seconds, check, digests, records):
        b = w.outstanding.popleft()
        assert b.id == batch_id, (b.id, batch_id)
        del self.batches[b.id]
        w.finished_calls += n_done
        self.sizer.observe(n_done, seconds)
        self._complete(b, n_done, check, digests, records)
        if n_done < len(b.elements):
            # The worker handed back the rest (its calls got dear): re-deal it in batches sized
            # for the new cost, so that every worker gets a share, not the one that returned it.
            rest = b.tail(n_done, 0)
            size = self.sizer.next_size()
            pieces = [Batch(next(self.ids), rest.positions[k:k + size], rest.elements[k:k + size],
                            rest.attempts[k:k + size] if rest.attempts else None)
                      for k in range(0, len(rest.elements), size)]
            self.pending.extendleft(reversed(pieces))

    def _on_message(self, w: Worker, msg):
        kind = msg[0]
        if kind == "done":
            self._on_done(w, *msg[1:])
        elif kind == "fail":
            b = self.batches.get(msg[1])
            if b is not None:
                self._on_fail(b, *msg[2:])
        elif kind == "ready":
            w.ready = True
            self.deaths_before_ready = 0
        elif kind == "fatal":
            self.outcome.fatal = msg[1]

    def _drain(self, w: Worker):
        try:
            while w.result_r.poll():
                self._on_message(w, w.result_r.recv())
        except (EOFError, OSError):
            pass

    def _account(self, w: Worker, blame: Optional[str]):
        """Worker w's process is gone: complete the calls its counters say it finished.

        ``blame``: why the call it was running failed (it died, it timed out); None when it
        was stopped on purpose (that call is then neither complete nor failed).  Returns the
        batches, or parts of batches, that still have to run, in order.
        """
        current = self.counters.started(w.slot)  # calls of the batch it was on, 0 between batches
        finished = self.counters.finished(w.slot)  # calls finished in all, at batch ends
        leftovers = []
        if w.outstanding and finished > w.finished_calls:  # it finished a batch, report lost
            b = w.outstanding.popleft()
            self.batches.pop(b.id, None)
            n = finished - w.finished_calls
            self._complete_unreported(b, n, leftovers)
            w.finished_calls = finished
            if n < len(b.elements):
                leftovers.append(b.tail(n, next(self.ids)))
        if w.outstanding and current > 0:  # call current-1 of the next batch was running
            b = w.outstanding.popleft()
            self.batches.pop(b.id, None)
            k = current - 1
            self._complete_unreported(b, k, leftovers)
            if blame is not None and k not in b.failed:
                kind = "TimedOut" if blame.startswith("timed out") else "WorkerDied"
                self._fail_call(b.positions[k], b.elements[k], b.attempt(k), kind, blame, f"{kind}: {blame}")
            if k + 1 < len(b.elements):
                leftovers.append(b.tail(k + 1, next(self.ids)))
        while w.outstanding:
            o = w.outstanding.popleft()
            self.batches.pop(o.id, None)
            leftovers.append(o.tail(0, next(self.ids)))
        return leftovers

    def _complete_unreported(self, b: Batch, n: int, leftovers: list):
        """The first n calls of b ended, but the worker never reported the batch done.  They are
        complete, unless values are being collected: their values are lost with the worker,
        so those that did not fail run again."""
        if self.values is None:
            self._complete(b, n)
            return
        again = [k for k in range(n) if k not in b.failed]
        if again:
            leftovers.append(Batch(next(self.ids), [b.positions[k] for k in again],
                                   [b.elements[k] for k in again],
                                   [b.attempt(k) for k in again] if b.attempts else None))

    def _on_exit(self, w: Worker, reason: Optional[str] = None):
        """Worker w is gone (or is being replaced): settle its batches, start another."""
        self._drain(w)
        self._unregister(w)
        w.proc.join(1)
        exitcode = w.proc.exitcode
        if not w.ready and self.outcome.fatal is None:
            self.deaths_before_ready += 1
        self.pending.extendleft(reversed(self._account(w, reason or describe_exit(exitcode))))
        for c in (w.task_w, w.result_r):
            try:
                c.close()
            except OSError:
                pass
        if self.outcome.fatal is None and self.deaths_before_ready < 3:
            self._start_worker(w)
            self._feed(w)
        elif self.outcome.fatal is None:
            self.outcome.fatal = (f"worker processes keep dying before loading the script "
                                  f"({describe_exit(exitcode)})")

    def _check_timeouts(self, now):
        for w in list(self.workers):
            current = self.counters.started(w.slot)
            if not w.outstanding or current == 0:  # idle, or between batches
                w.watch_value = -1
                continue
            value = (current, self.counters.finished(w.slot))
            if value != w.watch_value:
                w.watch_value, w.watch_since = value, now
            elif now - w.watch_since > self.timeout:
                w.proc.kill()
                w.proc.join(5)
                self._on_exit(w, reason=f"timed out after {self.timeout:g} s")

    # --- the loop --------------------------------------------------------------------
    def run(self) -> Outcome:
        old_term = signal.getsignal(signal.SIGTERM)
        old_int = signal.getsignal(signal.SIGINT)

        def on_signal(signum, frame):
            raise Interrupted(signum)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        stopped_at_walltime = False
        try:
            self.workers = [Worker(i) for i in range(self.processes)]
            if self.relay is not None:
                self.sel.register(self.relay.master, selectors.EVENT_READ, ("relay", None, None))
            self._grow()
            self._loop()
        except Interrupted as e:
            self.outcome.interrupted_by = e.signum
        except JournalWriteError as e:
            self.outcome.journal_error = str(e)
        except _StopNow:
            stopped_at_walltime = True
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            stopped = (self.outcome.interrupted_by is not None or self.outcome.fatal is not None
                       or self.outcome.journal_error is not None or stopped_at_walltime)
            self._shutdown(force=stopped)
            if stopped:
                self._settle_stopped()
            for w in self.workers:
                try:
                    if w.result_r is not None:
                        w.result_r.close()
                except OSError:
                    pass
            signal.signal(signal.SIGTERM, old_term)
            signal.signal(signal.SIGINT, old_int)
            if self.relay is not None:
                self.relay.close()
            self.reporter.close()
        if self.draining and self.outcome.interrupted_by is None and self.outcome.fatal is None:
            # what was not done: batches handed back or never sent, calls stopped mid-way
            self.outcome.walltime_stop = self._work_left() or stopped_at_walltime
        return self.outcome

    def _grow(self):
        """Start workers while there is work that the running ones have not taken."""
        for w in self.workers:
            if w.proc is not None:
                continue
            b = self._next_batch()
            if b is None:
                return
            self.pending.appendleft(b)
            self._start_worker(w)
            self._feed(w)

    def _loop(self):
        poll = 0.2
        if self.timeout:
            poll = min(poll, max(0.01, self.timeout / 10))
        while self.outcome.fatal is None:
            if not any(w.outstanding for w in self.workers) and not self._has_work():
                if self.journal:
                    self.journal.flush()
                break
            for key, _ in self.sel.select(poll):
                kind, w, gen = key.data
                if kind == "relay":
                    self.relay.pump()
                    continue
                if gen != w.gen:
                    continue  # that process has been replaced since select() returned
                if kind == "result":
                    try:
                        msg = w.result_r.recv()
                    except (EOFError, OSError):
                        continue  # the exit event follows
                    self._on_message(w, msg)
                    if msg[0] in ("done", "ready"):
                        self._feed(w)
                elif kind == "write":
                    self._flush(w)
                elif kind == "exit":
                    self._on_exit(w)
            now = time.monotonic()
            if self.timeout:
                self._check_timeouts(now)
            if self.stop_new_at is not None:
                self._check_walltime(now)
            # idle workers (after a requeue) get work; workers not yet started start if needed
            if self._has_work():
                for w in self.workers:
                    if w.proc is not None and len(w.outstanding) < PREFETCH and w.proc.is_alive():
                        self._feed(w)
                self._grow()
            if self.journal:
                self.journal.maybe_flush(now)
            self.reporter.tick(self.outcome)

    def _settle_stopped(self):
        """After stopping the workers early: count (and journal) the calls they had finished,
        including those inside a batch whose later calls never ran."""
        for w in self.workers:
            if w.proc is None or w.result_r is None or w.result_r.closed:
                continue
            try:
                self._drain(w)
                self._account(w, blame=None)
            except JournalWriteError as e:  # the disk filled up meanwhile: what is left is not done
                self.outcome.journal_error = self.outcome.journal_error or str(e)

    def _join(self, p, deadline):
        """Wait for worker p until deadline, passing on its last output meanwhile (a worker
        blocked writing to a full relay would not exit)."""
        if self.relay is None:
            p.join(max(0.0, deadline - time.monotonic()))
            return
        while p.is_alive() and time.monotonic() < deadline:
            self.relay.pump()
            p.join(0.02)
        self.relay.pump()

    def _shutdown(self, force=False):
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
                self._join(p, deadline)
        for w in self.workers:
            p = w.proc
            if p is not None and p.pid is not None and p.is_alive():
                # A worker still starting has SIGTERM held: it would only notice the runner gone
                # (and print multiprocessing's traceback); stop it for good at once.
                p.terminate() if w.ready else p.kill()
        deadline = time.monotonic() + 1.0
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(1)
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
