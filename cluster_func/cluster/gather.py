"""``cluf --gather``: the values of a cluf run's bins, merged into one results file.

Each bin's job exports its own results file in the jobs dir (see
:mod:`cluster_func.record.results`); this reads those of the bins' current jobs, checked as
:func:`_bin_values` says (a damaged file is named and its values left out), and writes one file
whole, in position order, saying how many positions have no value yet (and, in round-robin
binning, which).  A file named with ``-o`` is never overwritten.  Its memory grows with the
bins, not the values: each bin's records go to a spill file, merged at the end (:class:`_Merge`).
"""

from __future__ import annotations

import heapq
import os
import shlex
import struct
import sys
import tempfile
import warnings
import zlib
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from ..core.bins import format_positions
from ..core.errors import UserError
from ..core.files import replaced
from ..record.results import TornRecords, ValueNotWritable, encoder, format_of, read_records
from . import jobs, manifest
from .jobs import ARRAY_BIN_VAR
from .status import check_bin_journal, current_journal, load_run

if TYPE_CHECKING:
    from ..record.journal import JournalState


def gather(jobs_dir: str | None, out: str | None = None) -> int:
    """Merge the results files of a cluf run's bins into one file in position order; say how
    many positions have no value (bins not done, calls failed).  Exit status 1 if any."""
    jobs_dir = os.path.abspath(jobs_dir or os.getcwd())
    manifests = manifest.find_manifests(jobs_dir)
    if not manifests:
        raise UserError(f"No cluf run in {jobs_dir}: there is no *{manifest.MANIFEST_SUFFIX} file there. Give the "
                        f"jobs dir of a run submitted with --results.")
    if out is not None and len(manifests) > 1:
        raise UserError(f"{jobs_dir} holds {len(manifests)} cluf runs; -o names one output file: gather "
                        f"without -o (one file per run) or give a jobs dir with one run.")
    status = 0
    for path in manifests:
        m = load_run(path)
        plan = jobs.plan_from_dict(m["plan"])
        if not plan.results:
            raise UserError(f"The run {path} was submitted without --results, so its jobs kept no values. "
                            f"Submit it with --results jsonl (or pkl) to collect them.")
        target = os.path.abspath(out) if out else path[:-len(manifest.MANIFEST_SUFFIX)] + ".results." + plan.results
        format_of(target)
        if out and os.path.lexists(target):
            raise UserError(f"cluf --gather -o {out}: that file exists, and --gather never overwrites a file "
                            f"named with -o (it may be yours). Remove it first, or name a new file with -o; "
                            f"without -o the merged file goes to the jobs dir, replaced at each --gather.")
        try:
            with _Merge(target) as merge:
                missing, not_done, unknown = _read_bins(plan, m, jobs_dir, merge)
                n = merge.write()
        except ValueNotWritable as e:
            raise UserError(f"Cannot write {target}: {e}. Gather into a .pkl file with -o.") from None
        except OSError as e:
            raise UserError(f"Cannot write {target}: {e.strerror}.") from None
        print(f"cluf: gathered {n} values of {m['script']} into {target}.")
        if merge.twice:
            _warn(f"{merge.twice} positions have a value in more than one bin's results file: the first bin's "
                  f"value is kept. The bins' files do not belong to one run of this manifest: submit the run "
                  f"again with --resume to write them again.")
        if missing or unknown or not_done:
            status = 1
            _say_incomplete(jobs_dir, plan.nodes, missing, not_done, unknown, merge.lacking, merge.lacking_count)
    return status


def _read_bins(plan: jobs.RunPlan, m: dict, jobs_dir: str, merge: _Merge) -> tuple[int, list[int], list[int]]:
    """Add each bin's values to ``merge``; (positions without a value, bins not done, bins whose
    call count is not known)."""
    missing, not_done, unknown = 0, [], []
    for i in range(plan.nodes):
        job = manifest.job(m, i)
        expected = job.calls if job is not None else None
        check_bin_journal(plan.path(i, ".journal"))
        st = current_journal(job, plan.path(i, ".journal")) if job is not None else None
        round_robin = expected is not None and _mode(st) == "round-robin"
        merge.start_bin(i, plan.nodes, expected if round_robin else None)
        count = _bin_values(plan, i, jobs_dir, job, st, merge)
        merge.end_bin()
        done = st is not None and st.format is not None and st.last_status == "complete"
        if not done:
            not_done.append(i)
        if expected is not None:
            missing += max(0, expected - count)
        elif not done or st.last_failed:  # type: ignore[union-attr]  # (done: st is not None)
            unknown.append(i)
    return missing, not_done, unknown


class _Merge:
    """The merged results file, made in memory that grows with the bins, not the values.

    Each bin's records (encoded in the target's format) are written in position order to one
    unnamed spill file beside the target, a segment per bin: as they come when the bin's file
    lists them in order (as a fresh run writes it), else held and sorted, that bin's alone (a
    resume lists the values of the calls it skipped last).  A bin whose file turns out damaged
    has its segment cut off again.  :meth:`write` then merges the segments (``heapq.merge``, a
    small buffer each) into the target, written whole (temp file, fsync, rename).  Round-robin
    bins with a known call count also count (and list the first few of) their positions
    without a value."""

    FRAME = struct.Struct("<QI")  # (position, record length), then the record

    def __init__(self, target: str) -> None:
        self.target = target
        self.encode = encoder(format_of(target))
        self.segments: list[tuple[int, int]] = []  # (offset, length) in the spill
        self.twice = 0
        self.lacking: list[int] = []
        self.lacking_count = 0

    def __enter__(self) -> _Merge:
        self.spill = tempfile.TemporaryFile(dir=os.path.dirname(self.target) or ".")
        return self

    def __exit__(self, *exc: object) -> None:
        self.spill.close()

    # --- a bin at a time ---
    def start_bin(self, i: int, nodes: int, expected: int | None) -> None:
        """Bin i's records come next; ``expected``: its call count, when its positions without a
        value are to be counted (round-robin)."""
        self.start = self.spill.seek(0, os.SEEK_END)
        self.held: list[tuple[int, bytes]] | None = None
        self.bin, self.nodes, self.expected = i, nodes, expected
        self._restart_gaps()

    def _restart_gaps(self) -> None:
        self.last, self.next, self.bin_lacking_count = -1, 0, 0
        self.bin_lacking: list[int] = []

    def add(self, pos: int, value: Any) -> None:
        """One record of the bin's file (its position checked by the caller)."""
        record = self.encode(pos, value)
        if self.held is None and pos > self.last:
            self.spill.write(self.FRAME.pack(pos, len(record)) + record)
            self.last = pos
            self._seen(pos)
            return
        if self.held is None:  # out of order: hold this bin's records (those spilled too) and sort
            self.held = list(self._segment(self.start, self.spill.tell() - self.start))
            self.spill.truncate(self.start)
            self.spill.seek(self.start)
        self.held.append((pos, record))

    def repeated(self) -> int | None:
        """A position the bin's records hold twice, or None.  (Only records out of order can:
        those in order each come after the last.)"""
        if self.held is not None:
            self.held.sort()
            for (a, _), (b, _) in zip(self.held, self.held[1:]):
                if a == b:
                    return a
        return None

    def drop_bin(self) -> None:
        """The bin's file is damaged: none of its values."""
        self.held = None
        self.spill.truncate(self.start)
        self.spill.seek(self.start)
        self._restart_gaps()

    def end_bin(self) -> None:
        if self.held is not None:
            self.held.sort()
            self._restart_gaps()
            for pos, record in self.held:
                self.spill.write(self.FRAME.pack(pos, len(record)) + record)
                self._seen(pos)
            self.held = None
        end = self.spill.tell()
        if end > self.start:
            self.segments.append((self.start, end - self.start))
        if self.expected is not None:
            self._lack(self.next, self.expected)
            self.lacking = sorted(self.lacking + self.bin_lacking)[:LIST_AT_MOST]
            self.lacking_count += self.bin_lacking_count

    def _seen(self, pos: int) -> None:
        """The bin has a value at ``pos`` (positions in increasing order): the expected positions
        before it that it skipped lack one."""
        if self.expected is not None:
            k = (pos - self.bin) // self.nodes
            if k > self.next:
                self._lack(self.next, min(k, self.expected))
            self.next = max(self.next, k + 1)

    def _lack(self, first: int, end: int) -> None:
        """The bin's expected positions ``first`` to ``end - 1`` (as call numbers) lack a value."""
        if end <= first:
            return
        self.bin_lacking_count += end - first
        room = LIST_AT_MOST - len(self.bin_lacking)
        self.bin_lacking += [self.bin + k * self.nodes for k in range(first, min(end, first + max(0, room)))]

    # --- the merge ---
    def _segment(self, offset: int, length: int) -> Iterator[tuple[int, bytes]]:
        """The records of a segment of the spill, read a small buffer at a time."""
        self.spill.flush()  # (read below the buffer)
        size = max(1 << 11, min(1 << 20, (16 << 20) // max(1, len(self.segments))))  # (16 MiB in all)
        fd, frame, end = self.spill.fileno(), self.FRAME, offset + length
        head = frame.size
        buf, at = b"", offset
        while at < end:
            chunk = os.pread(fd, min(size, end - at), at)
            if not chunk:  # (the spill is ours and whole: never)
                raise OSError(f"the spill file of --gather ended at {at} of {end} bytes")
            buf, at = buf + chunk, at + len(chunk)
            k = 0
            while len(buf) - k >= head:
                pos, n = frame.unpack_from(buf, k)
                if len(buf) - k < head + n:
                    break
                yield pos, buf[k + head:k + head + n]
                k += head + n
            buf = buf[k:]

    def write(self) -> int:
        """Merge the segments into the target; the number of values written."""
        self.spill.flush()
        n, last = 0, -1
        with replaced(self.target, "wb", sync=True) as f:
            for pos, record in heapq.merge(*(self._segment(o, k) for o, k in self.segments)):
                if pos == last:
                    self.twice += 1
                    continue
                f.write(record)
                n, last = n + 1, pos
        return n


def _mode(st: JournalState | None) -> str:
    """The binning of a bin's journal (round-robin when it does not say)."""
    mode = st.header.get("mode") if st is not None else None
    return mode if isinstance(mode, str) else "round-robin"


def _warn(text: str) -> None:
    print(f"cluf: warning: {text}", file=sys.stderr)


def _bin_values(plan: jobs.RunPlan, i: int, jobs_dir: str, job: manifest.JobRecord | None,
                st: JournalState | None, merge: _Merge) -> int:
    """Add the values in bin i's results file to ``merge``; how many.  None (0) when it has no file yet, when the
    file is not one the bin's current job wrote (``st`` is its journal, None when the journal
    holds no run of that job), or when the file is damaged (said, naming the bin and the file).

    What is checked, as ``clum --resume`` checks its journal: the file's bytes are those whose
    size and CRC-32 the journal's last export record of the current job gives; every record
    parses; every position is one of the bin's (round-robin: position % bins == bin) and comes
    once."""
    f = plan.path(i, ".results." + plan.results)  # type: ignore[operator]  # (gather: a run with --results)
    if not os.path.lexists(f):
        return 0
    if not os.path.isfile(f):
        raise UserError(f"The results file of bin {i}, {f}, is "
                        f"{'a directory' if os.path.isdir(f) else 'not a regular file'}, so it "
                        f"holds no values that cluf can gather. Move it away (the bin's job writes a "
                        f"new one when it runs again: cluf --resubmit {jobs_dir}) and gather again.")
    if st is None:  # the bin's current job has not run: the file is an earlier submission's
        return 0
    try:
        with open(f, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise UserError(f"Cannot read the results file of bin {i}, {f}: {e.strerror or e}. Fix its "
                        f"permissions (or run cluf as the user whose jobs wrote it) and gather "
                        f"again.") from None
    exports = [e for e in st.exports
               if manifest.journal_is_current(job, st.header, e.get("offset", 0) + 1)]  # type: ignore[arg-type]
    rewrite = (f"Move it away and run the bin's job script again ('{_by_hand(job, i)}': it resumes, runs "  # type: ignore[arg-type]
               f"only the calls its journal does not record as completed and writes the file again from the "
               f"journal), then gather again")
    if not exports:
        _warn(f"bin {i}: {f} is not a results file of the bin's current job (its journal "
              f"{plan.path(i, '.journal')} records no export of it), so its values are left out. {rewrite}.")
        return 0
    last = exports[-1]
    crc = last.get("crc")
    same = len(data) == last["size"] and (f"{zlib.crc32(data):08x}" == crc if isinstance(crc, str)
                                          else os.stat(f).st_mtime_ns == last["mtime_ns"])
    if not same:
        _warn(f"bin {i}: {f} is not the file its job wrote: its {len(data)} bytes differ from those its journal "
              f"{plan.path(i, '.journal')} records ({last['size']} bytes"
              f"{', CRC-32 ' + crc if isinstance(crc, str) else ''}): changed or damaged since, so its values "
              f"are left out. {rewrite}.")
        return 0
    return _checked_records(plan, i, f, st, rewrite, merge)


def _checked_records(plan: jobs.RunPlan, i: int, f: str, st: JournalState | None, rewrite: str,
                     merge: _Merge) -> int:
    """Add the records of bin i's results file ``f`` to ``merge``, each a position of the bin,
    once; how many.  None (0) when one is not (said)."""
    count = 0
    round_robin = _mode(st) == "round-robin"
    why = None
    with warnings.catch_warnings(record=True) as torn:
        warnings.simplefilter("always", TornRecords)
        for pos, value in read_records(f):
            if round_robin and pos % plan.nodes != i:
                why = f"position {pos} is not one of bin {i}'s (round-robin: position % {plan.nodes} is {i})"
                break
            merge.add(pos, value)
            count += 1
    twice = merge.repeated() if why is None else None
    if twice is not None:
        why = f"position {twice} is in it twice"
    if why is not None:
        _warn(f"bin {i}: {f} is damaged: {why}, so its values are left out. {rewrite}.")
    elif torn:
        _warn(f"bin {i}: {f} is damaged: {torn[0].message}; its values are left out. {rewrite}.")
    else:
        return count
    merge.drop_bin()
    return 0


def _by_hand(job: manifest.JobRecord, i: int) -> str:
    """How to run bin i's job script by hand."""
    if job.array_id is not None:
        return f"{ARRAY_BIN_VAR}={i} bash {shlex.quote(job.script)}"
    return f"bash {shlex.quote(job.script)}"


def _say_incomplete(jobs_dir: str, nodes: int, missing: int, not_done: list[int], unknown: list[int],
                    lacking: Sequence[int] = (), lacking_count: int = 0) -> None:
    """Say what a gathered run lacks: positions without a value, bins not done, bins whose call
    count is not known; ``lacking``: the first positions without a value (of ``lacking_count``)."""
    parts = []
    if missing:
        parts.append(f"{missing} positions have no value (calls not done or failed)")
    if not_done:
        parts.append(f"bins {format_positions(not_done)} of {nodes} are not done")
    if unknown:
        parts.append(f"the call count of bins {format_positions(unknown)} is not known, so what "
                     f"they lack is not counted")
    if lacking:
        shown = format_positions(sorted(lacking)[:LIST_AT_MOST]).replace(",", ", ")
        more = max(lacking_count, len(lacking)) - min(len(lacking), LIST_AT_MOST)
        parts.append(f"the positions without a value: {shown}" + (f" and {more} more" if more > 0 else ""))
    print(f"cluf: incomplete: {'; '.join(parts)}. 'cluf --status {jobs_dir}' shows the bins.")


LIST_AT_MOST = 50  # positions listed by name; the rest are counted
