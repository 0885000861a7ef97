"""Adaptive batches: how many calls the runner sends a worker at once.

A batch should keep a worker busy for about ``TARGET_BATCH_SECONDS``: long enough that the
runner's per-batch cost is small, short enough that the last batches spread evenly over the
workers.  The size follows the measured seconds per call (:class:`BatchSizer`); a batch that
runs past ``SPLIT_FACTOR`` times the target is handed back part-way by its worker and dealt
again (:meth:`Batch.tail`).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..core.script import pickling_hint
from ..record.fingerprints import pickle_elements

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

    def __init__(self, target: float = TARGET_BATCH_SECONDS, max_batch: int = MAX_BATCH) -> None:
        self.target = target
        self.max_batch = max_batch
        self.per_call: Optional[float] = None
        self.last_size = 0

    def observe(self, n_calls: int, seconds: float) -> None:
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
    positions: Any  # range or list of positions in the args iterable
    elements: Any  # a list (or a range, from core.bins.RangeWork)
    attempts: Optional[list] = None  # per element, None means all first attempts
    failed: set = field(default_factory=set)  # indices k reported failed (this attempt)
    worker: Optional[object] = None  # the pool.Worker it was sent to

    def attempt(self, k: int) -> int:
        return self.attempts[k] if self.attempts else 0

    def tail(self, start: int, new_id: int) -> Batch:
        return Batch(new_id, self.positions[start:], self.elements[start:],
                     self.attempts[start:] if self.attempts else None)


def pickled(b: Batch, fail_unsent: Callable[[Any, Any, str, str], None]) -> Optional[bytes | memoryview]:
    """The batch's elements pickled; elements that cannot be pickled fail here (``fail_unsent``)
    and are taken out of the batch.  A range (core.bins.RangeWork) travels as itself."""
    if b.elements.__class__ is range:
        return pickle.dumps(b.elements, 4)
    try:
        return pickle_elements(b.elements)
    except Exception:  # noqa: BLE001 - find the culprits, send the rest
        keep = []
        for k, e in enumerate(b.elements):
            try:
                pickle.dumps(e, 4)
                keep.append(k)
            except Exception as err:  # noqa: BLE001
                msg = f"cannot be sent to a worker process: {type(err).__name__}: {err}. {pickling_hint(e)}"
                fail_unsent(b.positions[k], e, "PicklingError", msg)
        b.positions = [b.positions[k] for k in keep]
        b.elements = [b.elements[k] for k in keep]
        b.attempts = [b.attempts[k] for k in keep] if b.attempts else None
        return pickle_elements(b.elements) if keep else None
