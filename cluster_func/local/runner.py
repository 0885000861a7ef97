"""The local pool behind ``clum``: workers, adaptive batches, failures, signals, progress.

Nothing here knows about clusters.  The runner pulls ``(position, element)``
pairs from an iterator (already filtered to the chosen bins), deals them out to
worker processes in batches whose size adapts to the measured cost of a call,
and keeps, for every batch it has sent, enough to know what to do if the worker
running it dies.  Sending never blocks (non-blocking pipes and a selector), so
a worker that is busy reporting failures can never deadlock the runner.
"""

from __future__ import annotations

import os
import selectors
import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from ..core.errors import Interrupted
from ..record.writer import JournalWriteError
from .accounting import Accounting, Outcome
from .batching import Batch
from .dealer import Dealer
from .pool import Pool, Worker, describe_exit
from .reporter import Reporter
from .worker import DIGESTS_ALWAYS, DIGESTS_IF_DEAR, DIGESTS_NEVER, Done, Fail, Fatal, Message, Ready

if TYPE_CHECKING:
    from ..engine import Settings

PREFETCH = 2  # batches outstanding per worker


class _StopNow(Exception):
    """The end of the grace period: stop the calls still running."""


class Runner:
    """Run the target over ``work`` on up to ``processes`` workers: the loop.

    ``source`` gives workers their target: :class:`cluster_func.local.worker.Inherited` (fork) or
    :class:`cluster_func.local.worker.FromScript`.  ``work`` offers ``take(n)`` (a
    :class:`cluster_func.core.bins.Work` or :class:`cluster_func.record.resume.ResumeWork`).  ``journal``
    (optional) gets ``completed(...)`` and ``failed(...)``.  Workers start when there is work
    for them, never more than ``processes`` (:class:`~cluster_func.local.pool.Pool`); what each
    call came to is accounted by :class:`~cluster_func.local.accounting.Accounting`; what each worker
    is sent next is dealt by :class:`~cluster_func.local.dealer.Dealer`.  The runner
    keeps, for every batch it has sent, enough to know what to do if the worker running it dies.
    """

    _wake_r: Optional[int]  # the pipe that wakes the loop (while it runs)
    _wake_w: Optional[int]

    def __init__(self, settings: Settings, work: Any, reporter: Reporter, journal: Any = None, relay: Any = None,
                 collect: Optional[Callable[[Any], None]] = None) -> None:
        """``settings``: a :class:`cluster_func.engine.Settings` (what to run and how: the source,
        processes, start method, retries, timeout, values, stop_at, slot_env; its ``source`` as
        ``relay`` wrapped it, if there is one).  ``journal``: a record.writer.Journal, or None.
        ``relay``: a :class:`cluster_func.local.relay.Relay` to pump.  ``collect``: called with each
        batch's value records too (cluster_func.map keeps them)."""
        values = settings.values
        self.pool = Pool(settings.source, settings.processes, settings.start_method, values, settings.slot_env,
                         relay)
        self.acct = Accounting(reporter, journal, settings.retries, values, collect)
        self.relay = relay
        self.stop_new_at: Optional[float] = None  # (near the walltime: start no new call after, stop the running ones at)
        self.kill_at: Optional[float] = None
        if settings.stop_at is not None:
            self.stop_new_at, self.kill_at = settings.stop_at
        self.draining = False
        self.values = values
        self.reporter = reporter
        self.journal = journal
        self.timeout = settings.timeout
        digests = (DIGESTS_NEVER if journal is None else
                   DIGESTS_ALWAYS if journal.mode != "round-robin" else DIGESTS_IF_DEAR)
        self.dealer = Dealer(work, self.acct, reporter, digests, values)
        self.batches: Dict[int, Batch] = {}  # the batches sent and not yet done, by id
        # Some worker was left with fewer than PREFETCH batches, or a slot unstarted, for want of
        # work: the loop deals again once work turns up (a batch handed back, a retry).
        self.hungry = False
        self.deaths_before_ready = 0
        # Signal handlers can only be set from the main thread: run() from another thread (as
        # cluster_func.imap does) leaves Ctrl-C to the caller, who stops the run with request_stop().
        self.own_signals = threading.current_thread() is threading.main_thread()
        self.pool.own_signals = self.own_signals
        self.stop_requested: Any = False  # or the number of the signal that asks the run to stop
        self._wake_r = self._wake_w = None

    def request_stop(self, signum: int = signal.SIGINT) -> None:
        """Stop the run as Ctrl-C would (from another thread, or from the signal handler).

        Only noted here: the loop stops at its next turn, between two whole steps.  (A signal
        handler that raised would cut a step in two wherever the signal lands: a message taken
        from a worker's pipe and never accounted, a batch taken off a worker's list and never
        settled; then what is settled after the stop no longer matches what the workers did.)"""
        self.stop_requested = self.stop_requested or signum
        if self._wake_w is not None:
            try:
                os.write(self._wake_w, b"!")  # the loop's select() returns at once
            except OSError:
                pass

    @property
    def outcome(self) -> Outcome:
        return self.acct.outcome

    def fail_unsent(self, position: int, element: Any, exc_type: str, message: Any) -> None:
        """A call that failed before it could be sent to a worker (no retries: it cannot run)."""
        self.acct.fail_unsent(position, element, exc_type, message)

    def _feed(self, w: Worker) -> None:
        """Send w batches until it has PREFETCH outstanding (or there is nothing to send)."""
        while len(w.outstanding) < PREFETCH:
            dealt = self.dealer.deal()
            if dealt is None:
                self.hungry = True  # (see _loop)
                return
            b, header, data = dealt
            b.worker = w
            self.batches[b.id] = b
            w.outstanding.append(b)
            self.pool.send(w, header, data)

    def _has_work(self) -> bool:
        return not self.draining and self.dealer.work_left()

    def _check_walltime(self, now: float) -> None:
        """Near the walltime: start no new call; at its end, stop the calls still running."""
        assert self.stop_new_at is not None and self.kill_at is not None  # (checked with a walltime only)
        if not self.draining and now >= self.stop_new_at:
            self.draining = True
            if self.pool.counters is not None:
                self.pool.counters.stop_new_batches()
            self.reporter.message("the walltime is near: starting no new calls; waiting for the running "
                                  "ones (they are stopped at the end of the grace period).")
        if now >= self.kill_at and any(w.outstanding for w in self.pool.workers):
            raise _StopNow()

    def _on_done(self, w: Worker, batch_id: int, n_done: int, seconds: float, check: Any, digests: Optional[bytes],
                 records: Any, values_crc: Optional[int] = None) -> None:
        b = w.outstanding.popleft()
        assert b.id == batch_id, (b.id, batch_id)
        del self.batches[b.id]
        w.finished_calls += n_done
        self.dealer.sizer.observe(n_done, seconds)
        self.acct.complete(b, n_done, check, digests, records, values_crc)
        if n_done < len(b.elements):
            # The worker handed back the rest (its calls got dear): re-deal it in batches sized
            # for the new cost, so that every worker gets a share, not the one that returned it.
            self.dealer.re_deal(b.tail(n_done, 0))

    def _on_message(self, w: Worker, msg: Message) -> None:
        """One of the worker's messages (worker.Ready, Fatal, Fail, Done)."""
        if type(msg) is Done:
            self._on_done(w, msg.batch_id, msg.n_done, msg.seconds, msg.check, msg.digests, msg.records, msg.values_crc)
        elif type(msg) is Fail:
            b = self.batches.get(msg.batch_id)
            if b is not None:
                self.acct.on_fail(b, msg.k, msg.exc_type, msg.message, msg.traceback)
        elif type(msg) is Ready:
            w.ready = True
            self.deaths_before_ready = 0
        elif type(msg) is Fatal:
            self.outcome.fatal = msg.text

    def _on_messages(self, w: Worker, messages: List[Message]) -> None:
        """The messages one read took from w's pipe; then w gets more work if a batch is over."""
        feed = False
        for msg in messages:
            self._on_message(w, msg)
            feed = feed or msg.kind in ("done", "ready")
        if feed:
            self._feed(w)

    def _drain(self, w: Worker) -> None:
        try:
            for msg in self.pool.receive(w, until_empty=True):
                self._on_message(w, msg)
        except (EOFError, OSError):
            pass

    def _on_exit(self, w: Worker, reason: Optional[str] = None) -> None:
        """Worker w is gone (or is being replaced): settle its batches, start another."""
        self._drain(w)
        self.pool.unregister(w)
        w.proc.join(1)
        exitcode = w.proc.exitcode
        self.pool.end_group(w)  # the processes its calls started go with it
        if not w.ready and self.outcome.fatal is None:
            self.deaths_before_ready += 1
        leftovers = self.acct.settle(w, reason or describe_exit(exitcode), self.pool.counters, self.batches,
                                     self.dealer.ids)
        self.dealer.put_back(leftovers)
        for c in (w.task_w, w.result_r):
            try:
                c.close()
            except OSError:
                pass
        if self.outcome.fatal is None and self.deaths_before_ready < 3:
            self.pool.start(w)
            self._feed(w)
        elif self.outcome.fatal is None:
            self.outcome.fatal = (f"worker processes keep dying before loading the script "
                                  f"({describe_exit(exitcode)})")

    def _check_timeouts(self, now: float) -> None:
        for w in list(self.pool.workers):
            current = self.pool.counters.started(w.slot)
            if not w.outstanding or current == 0:  # idle, or between batches
                w.watch_value = -1
                continue
            value = (current, self.pool.counters.finished(w.slot))
            if value != w.watch_value:
                w.watch_value, w.watch_since = value, now
            elif self.timeout is not None and now - w.watch_since > self.timeout:
                self.pool.end_group(w)  # the call, and every process it started
                w.proc.join(5)
                self._on_exit(w, reason=f"timed out after {self.timeout:g} s")

    def run(self) -> Outcome:
        own = self.own_signals
        # SIGINT and SIGTERM stop the run; so do SIGUSR1/SIGUSR2 when a stop handler was set for
        # them (clum in a cluf job: Grid Engine's warnings).  Each is only noted (request_stop).
        taken = [signal.SIGTERM, signal.SIGINT] + [
            s for s in (signal.SIGUSR1, signal.SIGUSR2) if own and callable(signal.getsignal(s))]
        old = {s: signal.getsignal(s) for s in taken} if own else {}

        def on_signal(signum: int, frame: Optional[FrameType]) -> None:
            self.request_stop(signum)

        if own:
            self._wake_r, self._wake_w = os.pipe()
            for fd in (self._wake_r, self._wake_w):
                os.set_blocking(fd, False)
            self.pool.sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None, None))
            for s in taken:
                signal.signal(s, on_signal)
        stopped_at_walltime = False
        try:
            if self.relay is not None:
                self.pool.sel.register(self.relay.master, selectors.EVENT_READ, ("relay", None, None))
            self._grow()
            self._loop()
        except Interrupted as e:
            self.outcome.interrupted_by = e.signum
        except JournalWriteError as e:
            self.outcome.journal_error = str(e)
        except _StopNow:
            stopped_at_walltime = True
        finally:
            if own:  # a second signal while the workers stop is noted, and changes nothing
                for s in taken:
                    signal.signal(s, signal.SIG_IGN)
            stopped = (self.outcome.interrupted_by is not None or self.outcome.fatal is not None
                       or self.outcome.journal_error is not None or stopped_at_walltime)
            self.pool.shutdown(force=stopped)
            if stopped:
                self._settle_stopped()
            for w in self.pool.workers:
                try:
                    if w.result_r is not None:
                        w.result_r.close()
                except OSError:
                    pass
            for s, handler in old.items():  # (a handler set outside Python reads as None: the default then)
                signal.signal(s, handler if handler is not None else
                              signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)
            if self.relay is not None:
                self.relay.close()
            for wake_fd in (self._wake_r, self._wake_w):
                if wake_fd is not None:
                    os.close(wake_fd)
            self._wake_r = self._wake_w = None
            self.reporter.close()
        if self.draining and self.outcome.interrupted_by is None and self.outcome.fatal is None:
            # what was not done: batches handed back or never sent, calls stopped mid-way
            self.outcome.walltime_stop = self.dealer.work_left() or stopped_at_walltime
        return self.outcome

    def _grow(self) -> None:
        """Start workers while there is work that the running ones have not taken."""
        for w in self.pool.workers:
            if w.proc is not None:
                continue
            b = self.dealer.next_batch()
            if b is None:
                self.hungry = True
                return
            self.dealer.put_back([b])
            self.pool.start(w)
            self._feed(w)

    def _loop(self) -> None:
        poll = 0.2
        if self.timeout:
            poll = min(poll, max(0.01, self.timeout / 10))
        select, workers, journal = self.pool.sel.select, self.pool.workers, self.journal
        while self.outcome.fatal is None:
            if self.stop_requested:
                raise Interrupted(self.stop_requested)
            if not self._has_work() and not any(w.outstanding for w in workers):
                if journal:
                    journal.flush()
                break
            for key, _ in select(poll):
                self._on_event(*key.data)
            now = time.monotonic()
            if self.timeout:
                self._check_timeouts(now)
            if self.stop_new_at is not None:
                self._check_walltime(now)
            if self.hungry and self._has_work():
                self._deal_again()
            if journal:
                journal.maybe_flush(now)
            self.reporter.tick(self.outcome)

    def _on_event(self, kind: str, w: Any, gen: Any) -> None:
        """One event of the loop's select() (see Pool.sel and run())."""
        if kind == "relay":
            self.relay.pump()
        elif kind == "wake" or gen != w.gen:  # a signal (see request_stop); a process since replaced
            return
        elif kind == "result":
            try:
                messages = self.pool.receive(w)
            except (EOFError, OSError):
                return  # the exit event follows
            self._on_messages(w, messages)
        elif kind == "write":
            self.pool.flush(w)
        elif kind == "exit":
            self._on_exit(w)

    def _deal_again(self) -> None:
        """Work turned up while a worker was short of it: idle workers get it; workers not yet
        started start if needed."""
        self.hungry = False
        for w in self.pool.workers:
            if w.proc is not None and len(w.outstanding) < PREFETCH:
                if w.proc.is_alive():
                    self._feed(w)
                else:
                    self.hungry = True  # (its exit event is on its way: its replacement is fed)
        self._grow()

    def _settle_stopped(self) -> None:
        """After stopping the workers early: count (and journal) the calls they had finished,
        including those inside a batch whose later calls never ran."""
        for w in self.pool.workers:
            if w.proc is None or w.result_r is None or w.result_r.closed:
                continue
            try:
                self._drain(w)
                self.acct.settle(w, None, self.pool.counters, self.batches, self.dealer.ids)
            except JournalWriteError as e:  # the disk filled up meanwhile: what is left is not done
                self.outcome.journal_error = self.outcome.journal_error or str(e)
