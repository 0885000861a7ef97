"""map's values on their way back: the records the runner hands over, kept by position (or handed
on, for imap), and a resumed run's earlier values from its journal (api/local.py's docstring)."""

from __future__ import annotations

import io
import pickle
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Sequence, Tuple

from .failures import Failure

if TYPE_CHECKING:
    from ..record.resume import Kept
    from ..record.writer import Journal

Sink = Callable[[List[Tuple[int, Any]]], None]  # imap's: takes each batch's (position, value) pairs


# --- the values' way back -----------------------------------------------------------------

def _pickle_stream(data: bytes) -> Iterator[Tuple[int, Any]]:
    """The ``(position, value)`` records of clum's ``.pkl`` format in ``data``."""
    f = io.BytesIO(data)
    end = len(data)
    while f.tell() < end:
        yield pickle.load(f)


_HOLE = object()  # no value (yet) at this position


class _Collector:
    """What the runner takes for a results file: it keeps the values (or, for imap, hands them
    on), and with a journal also writes the records to the values file beside it.

    ``values`` holds them by position (``_HOLE`` where there is none); ``filled`` says, a byte a
    position, which have one (so that the holes are counted in C at the end: ``list.count``
    would compare every value).  Both are sized from ``len(args)`` when there is one."""

    def __init__(self, fmt: str, keep: bool = True, sink: Sink | None = None, size: int | None = None) -> None:
        self.format = fmt  # "values" (in memory only) or "pkl" (the journal keeps them too)
        self.keep = keep
        self.sink = sink
        size = size or 0
        self.values: List[Any] = [_HOLE] * size if keep else []
        self.filled = bytearray(size)
        self.unpicklable: Dict[int, Failure] = {}

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self.format == "values":
            positions, values, bad = pickle.loads(data)
        else:
            positions, values = zip(*_pickle_stream(data))
            bad = None
        self._store(positions, values)
        for p, type_name, error in bad or ():
            msg = (f"the value returned, a {type_name}, cannot be pickled to come back from its worker "
                   f"process ({error})")
            self.unpicklable[p] = Failure(p, "?", "TypeError", msg, f"TypeError: {msg}\n")
            self.filled[p] = 0
            if self.keep:
                self.values[p] = _HOLE
        if self.sink is not None:
            if type(positions) is int:
                positions = range(positions, positions + len(values))
            pairs = list(zip(positions, values))
            if bad:
                gone = {p for p, _, _ in bad}
                pairs = [(p, v) for p, v in pairs if p not in gone]
            if pairs:
                self.sink(pairs)

    def _grow(self, last: int) -> None:
        have = len(self.filled)
        if last > have:
            more = max(last, 2 * have) - have
            self.filled.extend(bytes(more))
            if self.keep:
                self.values.extend([_HOLE] * more)

    def _store(self, positions: int | Sequence[int], values: Sequence[Any]) -> None:
        if isinstance(positions, int):  # (the first of positions that run on by one)
            first, last = positions, positions + len(values)
            self._grow(last)
            if self.keep:
                self.values[first:last] = values
            self.filled[first:last] = b"\x01" * (last - first)
            return
        self._grow(max(positions) + 1)
        out, filled, keep = self.values, self.filled, self.keep
        for p, v in zip(positions, values):
            if keep:
                out[p] = v
            filled[p] = 1

    def has(self, p: int) -> bool:
        return p < len(self.filled) and self.filled[p] == 1

    def finish(self, n: int) -> int:
        """Exactly n positions; returns how many have no value."""
        self._grow(n)
        del self.filled[n:]
        if self.keep:
            del self.values[n:]
        return self.filled.count(0)


def _previous_values(journal: Journal, kept: Kept, positions: Iterable[int]) -> Dict[int, Any]:
    """The values of the calls at ``positions`` that an earlier run on this journal completed
    and this resumed run skipped (``kept``, a record.resume.Kept): they travel in the journal's
    own records, as clum's do (see cluster_func.record.results.export)."""
    from ..record.results import export

    wanted = set(positions)
    found: Dict[int, Any] = {}

    def take(data: bytes) -> None:
        for p, v in _pickle_stream(data):
            if p in wanted:
                found[p] = v

    if wanted:
        export(journal.path, "pkl", journal.first_seq, kept, take)
    return found
