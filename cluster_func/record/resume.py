"""The resume filter: the work of a run with the calls its journal records as completed taken out.

In round-robin binning a position recorded as completed is skipped when the elements now at the
record's positions still have its check; otherwise, where the record has ``d``, each position
whose element still has its digest is skipped, and the rest run again.  A position never counts
as done because of an equal element elsewhere.  Under ``--hash``/``--key`` the iterator may yield
elements in another order, so completed calls are matched by content, counting equal elements (a
multiset of ``d`` digests).  Records of one run never overlap; where records of different runs
do, the later record wins.  What was kept, and for which current positions, is in
:class:`Kept` (the results export uses it to put each value at its element's position).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

from .fingerprints import call_digest, elements_check
from .journal import JournalState, Record


class ResumeWork:
    """The runner's work with the calls a journal records as completed taken out.

    Wraps a :class:`cluster_func.core.bins.Work` and offers the same ``take(n)``, which may return
    fewer than n before the end (the work is over when it returns nothing).  Round-robin
    journals (``c`` checks): the elements at a record's positions are held back until all of
    them have been seen, then skipped together when their check matches, or run; where the
    work and the record line up (evenly spaced positions, the usual case) whole records are
    taken and checked at once, without looking at each element.  ``--hash``/``--key``
    journals (``d`` digests): each element's digest is looked up in a multiset.
    ``skipped`` counts what was skipped, and :class:`Kept` says which recorded calls were kept
    for which current positions (so that their values can be found: see results.export).
    """

    out_pos: list  # what take() hands out next
    out_elem: list
    by_digest: Any  # a Counter of the recorded calls' digests (--hash/--key), else None
    open: list

    def __init__(self, work: Any, state: JournalState, mode: str) -> None:
        self.work = work
        self.skipped = 0
        self.kept = Kept()
        self.error: Optional[BaseException] = None
        self.out_pos, self.out_elem = [], []
        if mode == "round-robin":
            self.records = _disjoint([r for r in state.records if r.check is not None])
            self.by_digest = None
        else:
            self.records = []
            self.by_digest = collections.Counter()
            for r in state.records:
                if r.digests is not None:
                    d = r.digests
                    self.by_digest.update(d[i:i + 8] for i in range(0, len(d), 8))
        self.records.sort(key=lambda r: r.lo)
        self.next_rec = 0
        self.open = []  # [record, {position: element}, last position]
        self.exhausted = False

    @property
    def error_position(self) -> Optional[int]:
        """The position args was producing when it raised (see bins.Work)."""
        return self.work.error_position

    def take(self, n: int) -> tuple[Sequence[int], list, Optional[BaseException]]:
        if not self.out_elem:
            direct = self._take_direct(n)
            if direct is not None:
                return direct
        while len(self.out_elem) < n and not self.exhausted:
            if self.out_elem and self._direct_next():
                break  # hand out what is held; what follows goes straight through
            self._pull(n)
        pos, elem = self.out_pos[:n], self.out_elem[:n]
        del self.out_pos[:n], self.out_elem[:n]
        error = None
        if not self.out_elem and self.exhausted:
            error, self.error = self.error, None
        return pos, elem, error

    def _direct_next(self) -> bool:
        """True when the next elements can go straight through (:meth:`_take_direct`)."""
        work = self.work
        if self.open or self.exhausted or self.by_digest is not None or work.step is None:
            return False
        return self.next_rec >= len(self.records) or self.records[self.next_rec].lo > work.next_position

    def _take_direct(self, n: int) -> Optional[tuple[Sequence[int], list, Optional[BaseException]]]:
        """Evenly spaced work with nothing held or pending, before the next record: the work's
        own batch, positions as a range (what a fresh run sends; nothing per element)."""
        work = self.work
        if self.out_elem or not self._direct_next():
            return None
        k = n
        if self.next_rec < len(self.records):
            k = min(n, -(-(self.records[self.next_rec].lo - work.next_position) // work.step))
            if k <= 0:
                return None
        positions, elements, error = work.take(k)
        if error is not None or len(elements) < k:
            self.exhausted = True
        return positions, elements, error

    def _emit(self, positions: Iterable[int], elements: Iterable[Any]) -> None:
        self.out_pos.extend(positions)
        self.out_elem.extend(elements)

    def _pull(self, n: int) -> None:
        work = self.work
        if self.by_digest is not None:
            positions, elements, error = work.take(max(n, 1024))
            self._content_filter(positions, elements)
            self._end_if(len(elements) == 0 or error is not None, error)
            return
        # Evenly spaced work at a record that lines up with it: take the record whole.  (Work before
        # the next record goes straight through: see take() and _take_direct().)
        if work.step is not None and not self.open and self.next_rec < len(self.records):
            nxt = self.records[self.next_rec]
            rp = nxt.positions
            if nxt.lo == work.next_position and isinstance(rp, range) and rp.step == work.step:
                self.next_rec += 1
                positions, elements, error = work.take(len(rp))
                if len(elements) == len(rp):
                    self._verdict(nxt, positions, elements)
                else:
                    self._emit(positions, elements)
                self._end_if(len(elements) < len(rp) or error is not None, error)
                return
        positions, elements, error = work.take(max(n, 1024))
        self._general(positions, elements)
        self._end_if(len(elements) == 0 or error is not None, error)

    def _end_if(self, finished: bool, error: Optional[BaseException]) -> None:
        if not finished:
            return
        self.exhausted = True
        self.error = error
        for rec, held, _ in self.open:  # some positions no longer exist
            self._partial_verdict(rec, held)
        self.open = []

    def _general(self, positions: Sequence[int], elements: list) -> None:
        """One element at a time: hold the elements of the records they fall in."""
        recs, out_p, out_e = self.records, self.out_pos, self.out_elem
        for pos, elem in zip(positions, elements):
            while self.next_rec < len(recs) and recs[self.next_rec].lo <= pos:
                r = recs[self.next_rec]
                self.open.append([r, {}, r.hi])
                self.next_rec += 1
            for entry in self.open:
                if pos in entry[0].members:
                    entry[1][pos] = elem
                    break
            else:
                out_p.append(pos)
                out_e.append(elem)
            if self.open:
                self._close_records(pos)

    def _close_records(self, pos: int) -> None:
        still = []
        for entry in self.open:
            rec, held, last = entry
            if len(held) == len(rec.positions):
                self._verdict(rec, rec.positions, [held[p] for p in rec.positions])
            elif pos >= last:  # some of its positions were not in the work
                self._partial_verdict(rec, held)
            else:
                still.append(entry)
        self.open = still

    def _verdict(self, rec: Record, positions: Sequence[int], elements: list) -> None:
        """All of a record's positions are here: skip them, or those whose digest still
        matches, and run the rest."""
        if elements_check(elements) == rec.check:
            self.skipped += len(elements)
            self.kept.whole.add(rec.seq)
            return
        if rec.digests is None:
            self._emit(positions, elements)
            return
        self._by_digest(rec, enumerate(zip(positions, elements)))

    def _partial_verdict(self, rec: Record, held: dict) -> None:
        """Some of a record's positions are gone: with per-call digests, skip the held elements
        that still have theirs; without, run them all."""
        if rec.digests is None:
            self._emit(list(held), list(held.values()))
            return
        index = {p: k for k, p in enumerate(rec.positions)}
        self._by_digest(rec, ((index[p], (p, e)) for p, e in held.items()))

    def _by_digest(self, rec: Record, items: Iterable[tuple[int, tuple[int, Any]]]) -> None:
        """Skip each (k, (position, element)) whose element still has the record's k-th digest;
        run the others."""
        d, kept = rec.digests, None
        for k, (p, e) in items:
            if call_digest(e) == d[8 * k:8 * k + 8]:  # type: ignore[index]  # (a record with digests)
                self.skipped += 1
                if kept is None:
                    kept = self.kept.some.setdefault(rec.seq, set())
                kept.add(p)
            else:
                self.out_pos.append(p)
                self.out_elem.append(e)

    def _content_filter(self, positions: Sequence[int], elements: list) -> None:
        counter = self.by_digest
        for pos, elem in zip(positions, elements):
            d = call_digest(elem)
            if counter.get(d, 0) > 0:
                counter[d] -= 1
                self.skipped += 1
                self.kept.by_digest.setdefault(d, []).append(pos)
            else:
                self.out_pos.append(pos)
                self.out_elem.append(elem)


@dataclass
class Kept:
    """Which recorded calls a resume skipped, i.e. kept as completed, and for which positions of
    the current ``args``.  Round-robin: the positions are the record's own, whole records by
    sequence number (``whole``) or some of their positions (``some``).  ``--hash``/``--key``:
    calls are matched by content, so equal elements may have moved; ``by_digest`` lists, per
    digest, the current positions that a recorded call with that digest stands for."""
    whole: set = field(default_factory=set)
    some: dict = field(default_factory=dict)  # seq -> {position}
    by_digest: dict = field(default_factory=dict)  # digest -> [position], taken in file order


def _disjoint(records: list[Record]) -> list[Record]:
    """Make the records disjoint: where a later record (a later run re-ran some calls) shares
    positions with an earlier one, the later wins those positions, and the earlier keeps the
    others.  An earlier record with per-call digests keeps them for its other positions (its
    check, of all its elements, no longer applies); one without digests cannot be checked in
    part, and is dropped (its other positions run again)."""
    if len(records) < 2:
        return records
    taken: dict[int, set[int]] = {}  # seq -> positions of that record that later records re-ran
    active: list[Record] = []  # records whose span may still overlap later ones
    for r in sorted(records, key=lambda r: r.lo):
        active = [a for a in active if a.hi >= r.lo]
        for a in active:
            if _share(a, r):
                early, late = (a, r) if a.seq < r.seq else (r, a)
                taken.setdefault(early.seq, set()).update(p for p in early.positions if p in late.members)
        active.append(r)
    out = []
    for r in records:
        gone = taken.get(r.seq)
        if gone:
            r = _without(r, gone)  # type: ignore[assignment]  # (None: dropped, just below)
        if r is not None:
            out.append(r)
    return out


def _without(r: Record, gone: set[int]) -> Optional[Record]:
    """Record r without the positions in ``gone`` (None when nothing of it can be checked)."""
    if r.digests is None:
        return None
    keep = [k for k, p in enumerate(r.positions) if p not in gone]
    if not keep:
        return None
    d = r.digests
    return Record(r.seq, [r.positions[k] for k in keep], None, b"".join(d[8 * k:8 * k + 8] for k in keep), r.values)


def _share(a: Record, b: Record) -> bool:
    if len(a.positions) > len(b.positions):
        a, b = b, a
    return any(p in b.members for p in a.positions)
