"""What the runner sends a worker next, and the message that carries it.

Batches come, in this order, from: the batches put back (handed back part-way by a worker,
left by a worker that is gone, taken to start a worker), the calls to retry, and new work
(``work.take(n)``), in sizes chosen by a :class:`~cluster_func.local.batching.BatchSizer`.
"""

from __future__ import annotations

import collections
import itertools
import pickle
from typing import Any, List, Optional, Tuple

from ..core.script import args_error_where, user_traceback
from .accounting import Accounting
from .batching import MAX_BATCH, MAX_BATCH_BYTES, Batch, BatchSizer, pickled
from .reporter import Reporter
from .worker import HEADER


class Dealer:
    """Deals out ``work`` (a :class:`cluster_func.core.bins.Work` or
    :class:`cluster_func.record.resume.ResumeWork`) and the retries ``acct`` keeps, in batches.
    ``digests`` and ``values`` go into each batch's message (see the protocol in worker.py)."""

    def __init__(self, work: Any, acct: Accounting, reporter: Reporter, digests: int, values: Optional[str] = None) -> None:
        self.work = work
        self.acct = acct
        self.reporter = reporter
        self.digests = digests
        self.values = values
        self.sizer = BatchSizer()
        self.pending: collections.deque = collections.deque()  # batches to send before new work
        self.ids = itertools.count()
        self.exhausted = False

    def next_batch(self) -> Optional[Batch]:
        if self.pending:
            return self.pending.popleft()
        if self.acct.retry_queue:
            items = sorted(self.acct.retry_queue.popleft() for _ in range(min(len(self.acct.retry_queue), self.sizer.next_size())))
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

    def deal(self) -> Optional[Tuple[Batch, bytes, bytes | memoryview]]:
        """The next batch that can be sent, with its message's header and body; None when there is none now."""
        while True:
            b = self.next_batch()
            if b is None:
                return None
            data: bytes | memoryview | None = pickled(b, self.acct.fail_unsent)
            if data is not None:
                break
        if len(data) > MAX_BATCH_BYTES // 2:  # shrink batches of large elements
            per = len(data) / len(b.elements)
            self.sizer.max_batch = max(1, min(MAX_BATCH, int(MAX_BATCH_BYTES / per)))
        b.failed = set()
        header = HEADER.pack(b.id, self.sizer.split_after, self.digests, len(data))
        if self.values is not None:  # the worker writes each value's record with its position
            data = bytes(data) + pickle.dumps(b.positions, 4)
        return b, header, data

    def _args_failed(self, error: BaseException, position: Optional[int]) -> None:
        """The arguments iterable raised (``position``: the element it was producing, in all of
        args): no more work comes from it; say so loudly, with the script's traceback."""
        where = args_error_where(position)
        self.acct.outcome.args_error = f"the arguments iterable raised {type(error).__name__} {where}"
        self.reporter.message(f"the arguments iterable raised an exception {where}; no more calls will "
                              f"be started (the calls already sent still run):\n{user_traceback(error)}")

    def work_left(self) -> bool:
        return bool(self.pending or self.acct.retry_queue or not self.exhausted)

    def put_back(self, batches: List[Batch]) -> None:
        """Send these batches first, in their order."""
        self.pending.extendleft(reversed(batches))

    def re_deal(self, rest: Batch) -> None:
        """The rest of a batch a worker handed back, first, in batches sized for the calls' new cost."""
        size = self.sizer.next_size()
        pieces = [Batch(next(self.ids), rest.positions[k:k + size], rest.elements[k:k + size],
                        rest.attempts[k:k + size] if rest.attempts else None)
                  for k in range(0, len(rest.elements), size)]
        self.put_back(pieces)
