"""The accounting of a clum run's outcomes: each call is complete (recorded in the journal,
with its value when the run collects values), failed (reported with its argument and
traceback, retried while ``--retries`` allows), or neither (it runs again).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional

from .batching import Batch
from .reporter import Reporter

if TYPE_CHECKING:
    from .pool import Worker
    from .worker import Counters


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
    def total(self) -> int:
        return self.done + self.failed


class Accounting:
    """Outcomes into the journal, the reporter and the :class:`Outcome`; failed calls that
    may run again into ``retry_queue`` ((position, element, attempt) for the runner to send)."""

    def __init__(self, reporter: Reporter, journal: Any = None, retries: int = 0, values: Optional[str] = None,
                 collect: Optional[Callable[[Any], None]] = None) -> None:
        self.reporter = reporter
        self.journal = journal
        self.retries = retries
        self.values = values
        self.collect = collect  # records -> None: who else takes the values (cluster_func.map)
        self.outcome = Outcome()
        self.retry_queue: collections.deque = collections.deque()

    def on_fail(self, b: Batch, k: int, exc_type: str, message: Any, tb: str) -> None:
        b.failed.add(k)
        position, element, attempt = b.positions[k], b.elements[k], b.attempt(k)
        self.fail(position, element, attempt, exc_type, message, tb)

    def fail_unsent(self, position: int, element: Any, exc_type: str, message: Any) -> None:
        """A call that failed before it could be sent to a worker (no retries: it cannot run)."""
        self.fail(position, element, self.retries, exc_type, message, f"{exc_type}: {message}")

    def fail(self, position: int, element: Any, attempt: int, exc_type: str, message: Any, tb: str) -> None:
        will_retry = attempt < self.retries
        if self.journal:
            self.journal.failed(position, element, attempt, exc_type, message, final=not will_retry, tb=tb)
        self.reporter.failure(position, element, exc_type, message, tb, attempt, will_retry)
        if will_retry:
            self.retry_queue.append((position, element, attempt + 1))
        else:
            self.outcome.failed += 1

    def complete(self, b: Batch, n_done: int, check: Any = None, digests: Optional[bytes] = None,
                 records: Any = None, values_crc: Optional[int] = None) -> None:
        """The first n_done calls of b are over; those not failed are complete.  From the worker,
        for the journal: ``check``, its content check of the whole batch (used when all of it
        is done), ``digests``, per call started (or None), and the values' ``records`` with
        their CRC-32 (``values_crc``, or None)."""
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
            self.journal.completed(positions, elements, check if whole else None, digests, records, values_crc)
        if self.collect is not None and records:
            self.collect(records)

    def complete_unreported(self, b: Batch, n: int, leftovers: list, ids: Iterator[int]) -> None:
        """The first n calls of b ended, but the worker never reported the batch done.  They are
        complete, unless values are being collected: their values are lost with the worker,
        so those that did not fail run again."""
        if self.values is None:
            self.complete(b, n)
            return
        again = [k for k in range(n) if k not in b.failed]
        if again:
            leftovers.append(Batch(next(ids), [b.positions[k] for k in again],
                                   [b.elements[k] for k in again],
                                   [b.attempt(k) for k in again] if b.attempts else None))

    def settle(self, w: Worker, blame: Optional[str], counters: Counters, batches: Dict[int, Batch],
               ids: Iterator[int]) -> List[Batch]:
        """Worker w's process is gone: complete the calls its counters say it finished.

        ``blame``: why the call it was running failed (it died, it timed out); None when it
        was stopped on purpose (that call is then neither complete nor failed).  ``counters``:
        the pool's shared counters; ``batches``: the runner's batches by id (w's are taken
        out); ``ids``: where new batch ids come from.  Returns the batches, or parts of
        batches, that still have to run, in order.
        """
        current = counters.started(w.slot)  # calls of the batch it was on, 0 between batches
        finished = counters.finished(w.slot)  # calls finished in all, at batch ends
        leftovers: List[Batch] = []
        if w.outstanding and finished > w.finished_calls:  # it finished a batch, report lost
            b = w.outstanding.popleft()
            batches.pop(b.id, None)
            n = finished - w.finished_calls
            self.complete_unreported(b, n, leftovers, ids)
            w.finished_calls = finished
            if n < len(b.elements):
                leftovers.append(b.tail(n, next(ids)))
        if w.outstanding and current > 0:  # call current-1 of the next batch was running
            b = w.outstanding.popleft()
            batches.pop(b.id, None)
            k = current - 1
            self.complete_unreported(b, k, leftovers, ids)
            if blame is not None and k not in b.failed:
                kind = "TimedOut" if blame.startswith("timed out") else "WorkerDied"
                self.fail(b.positions[k], b.elements[k], b.attempt(k), kind, blame, f"{kind}: {blame}")
            if k + 1 < len(b.elements):
                leftovers.append(b.tail(k + 1, next(ids)))
        while w.outstanding:
            o = w.outstanding.popleft()
            batches.pop(o.id, None)
            leftovers.append(o.tail(0, next(ids)))
        return leftovers
