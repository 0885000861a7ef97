"""The run journal: which calls completed and which failed, so that a run can be resumed.

A call is a position in ``args``.  The journal is a text file of JSON lines, append-only,
never rewritten in place.  Records are written as results arrive (one ``write`` per round of
results, so a killed run loses none that it had received) and fsync'ed about once a second.

Format 2 (the current one).  The first line identifies the file as a journal; nothing is
ever renamed or appended to unless its first line is this header (or a format-1 ``start``)::

    {"cluster_func_journal": 2, "script": PATH, "bins": "0/1", "mode": "round-robin", "created": EPOCH,
     "target": "target", "args": "args", "argv": [...]}

then, in any number (``t`` is the record's type)::

    {"t": "start", "time": EPOCH, "pid": N, "resume": BOOL, "results": PATH}   a run began (a resumed run
                                                               appends one); "results": where it collects its
                                                               values, relative to the journal's folder
    {"t": "ok", "pos": [[first, count, step], ...], "c": "HEX", "d": "HEX", "f": "jsonl", "vc": "HEX", "v": "BASE64"}
                                                                these calls completed
    {"t": "fail", "pos": N, "attempt": K, "final": BOOL, "type": "ValueError", "msg": "...", "args": "repr",
     "tb": "Traceback ..."}                                      a call failed (tb: final failures only, at most 8,000 characters)
    {"t": "results", "path": PATH, "ino": N, "size": N, "mtime_ns": N, "crc": "HEX", "sha256": "HEX"}
                                                                the run wrote its --results file
    {"t": "end", "done": N, "failed": M, "status": "complete" | "interrupted" | "aborted" | "walltime"}

The header names what ran (``target``, ``args`` and the script's own arguments ``argv``; a
journal written before they were recorded lacks them, which counts as the defaults):
``--resume`` refuses a journal of another script, target, args or argv.

Values (``--results``): ``f`` and ``v`` are the values of the record's calls, in its
position order: ``v`` is the base64 of the records of a results file of format ``f`` (JSON
lines ``{"pos": P, "value": V}``, or pickled ``(P, V)`` tuples), made by the workers; ``vc``
is the CRC-32 of those bytes, so that a record whose values were damaged is skipped as torn.  So a
value is written in the same line, the same write and under the same lock as the record that
says its call completed, and a torn record loses both.  A run that wants values resumes only
from records that carry them in its format (the others run again).  The ``--results`` file is
an export, written whole (a temporary file renamed over it) when a run ends, of this run's
records (handed to it as they are written) and the earlier records its resume kept (see
:mod:`cluster_func.record.results`); the
``results`` record then says which file that is, so that a later run knows the file is its own.

``pos`` lists positions as runs (a range is one run), in the order in which the batch held
them.  ``c`` is a content check of the elements at those positions, in that order: CRC-32 (8 hex
digits) and the length (hex) of ``pickle.dumps(elements, 4)``; the worker
computes it over the very bytes it received.  ``d`` is one 16-hex-digit BLAKE2b digest per
call (the pickle of the element with sets in a fixed order): always under ``--hash``/``--key``
(where there is no ``c``), and in round-robin for calls of 10 µs or more, where the workers
compute it at no measurable cost.

Resuming (see :class:`ResumeWork`): in round-robin binning a position recorded as completed
is skipped when the elements now at the record's positions still have its check; otherwise,
where the record has ``d``, each position whose element still has its digest is skipped (this
also covers sets of strings, whose pickles depend on PYTHONHASHSEED), and the rest run again.
A position never counts as done because of an equal element elsewhere.  Under
``--hash``/``--key`` the iterator may yield elements in another order, so completed calls are
matched by content, counting equal elements (a multiset of ``d`` digests).  Records of one run
never overlap; where records of different runs do (a resumed run re-ran calls whose arguments
had changed), the later record wins.

A line that does not parse, or parses but is not a well-formed record, is skipped and counted
(a record torn by a kill or a full disk is the usual cause).  Format 1 (no header; ``start``
with ``"v": 1``) matched calls by digest alone, which loses replicates: it is recognised as a
journal (so it may be moved aside) but refused for ``--resume``.

The journal's other parts: :mod:`.fingerprints` (the ``c`` and ``d`` the workers compute),
:mod:`.writer` (the lock and the writer), :mod:`.resume` (the resume filter).
"""

from __future__ import annotations

import base64
import json
import os
import re
import zlib
from dataclasses import dataclass, field
from operator import itemgetter
from typing import IO, Any, Iterator, Optional, Sequence

from . import formats


FORMAT = 2
HEADER_KEY = "cluster_func_journal"
FLUSH_SECONDS = 1.0
_CHECK_RE = re.compile(r"^[0-9a-f]{9,}$")
_DIGESTS_RE = re.compile(r"^(?:[0-9a-f]{16})+$")
_STATUSES = ("complete", "interrupted", "aborted", "walltime")
VALUE_FORMATS = tuple(formats.names())  # the formats of the values "ok" records carry
IDENTITY_DEFAULTS = {"target": "target", "args": "args", "argv": []}


# --- positions ------------------------------------------------------------------------------

def encode_positions(positions: Sequence[int]) -> list[list[int]]:
    """Positions as [first, count, step] runs, in their order (a range is one run)."""
    if isinstance(positions, range):
        return [[positions.start, len(positions), positions.step]] if len(positions) else []
    runs = []
    i, n = 0, len(positions)
    while i < n:
        first = positions[i]
        if i + 1 < n:
            step = positions[i + 1] - first
            j = i + 1
            while j + 1 < n and positions[j + 1] - positions[j] == step:
                j += 1
            if step > 0:
                runs.append([first, j - i + 1, step])
                i = j + 1
                continue
        runs.append([first, 1, 1])
        i += 1
    return runs


def decode_positions(runs: list[list[int]]) -> Sequence[int]:
    """The positions of ``runs``: a range for a single run, else a list."""
    if len(runs) == 1:
        first, count, step = runs[0]
        return range(first, first + count * step, step)
    out: list[int] = []
    for first, count, step in runs:
        out.extend(range(first, first + count * step, step))
    return out


def _valid_runs(runs: Any) -> bool:
    if not isinstance(runs, list) or not runs:
        return False
    for run in runs:
        if not (isinstance(run, list) and len(run) == 3
                and all(type(x) is int for x in run) and run[0] >= 0 and run[1] > 0 and run[2] > 0):
            return False
    return True


def default_path(script_path: str, bins_text: str, target: str = "target") -> str:
    """``.cluster_func/<script>[.<target>].<bins>.journal`` beside the script (a target other
    than ``target`` gets a journal of its own, so that runs of two targets never meet)."""
    folder = os.path.join(os.path.dirname(script_path), ".cluster_func")
    stem = os.path.splitext(os.path.basename(script_path))[0]
    if target != "target":
        stem += "." + re.sub(r"[^A-Za-z0-9_]", "_", target)
    tag = "all" if bins_text in ("", "0/1") else "bins-" + bins_text.replace("/", "-of-").replace(",", "_")
    return os.path.join(folder, f"{stem}.{tag}.journal")


# --- reading -----------------------------------------------------------------------------------

@dataclass
class Record:
    """A completed-calls record, for resuming."""
    seq: int  # its order in the file: where records overlap, the later wins
    positions: Any  # range or list, in the order the batch held them
    check: Optional[str] = None  # "c"
    digests: Optional[bytes] = None  # "d"
    values: Optional[str] = None  # "f": the format of the values it carries, if any

    def __post_init__(self) -> None:
        p = self.positions
        self.lo, self.hi = (p[0], p[-1]) if isinstance(p, range) and p.step > 0 else (min(p), max(p))  # type: int, int
        self.members = p if isinstance(p, range) else frozenset(p)


@dataclass
class JournalState:
    """What reading a journal found."""
    format: Optional[int] = None  # None: not a journal
    header: dict = field(default_factory=dict)
    records: list = field(default_factory=list)  # Record, only when read for resuming
    runs: int = 0
    last_done: int = 0
    last_failed: list = field(default_factory=list)  # final failures of the last run (records)
    last_status: Optional[str] = None  # None: the last run did not write its end
    bad: int = 0  # lines skipped: torn or malformed
    completed_total: int = 0  # calls recorded as completed, over every run
    size: int = 0  # bytes read (reading on from here sees only what was added)
    exports: list = field(default_factory=list)  # "results" records: files this journal's runs wrote
    ok_records: int = 0  # completed-calls records read (their sequence numbers are 0 to this - 1)
    results_path: Optional[str] = None  # the results file the last run that collected values named

    @property
    def recorded(self) -> int:
        """Calls the resumable records cover."""
        return sum(len(r.positions) for r in self.records)


def _header(line: bytes) -> tuple[int | None, dict]:
    """The format of a journal whose first line is ``line``, or None."""
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):  # (nested too deep: a torn line too)
        return None, {}
    if not isinstance(rec, dict):
        return None, {}
    v = rec.get(HEADER_KEY)
    if type(v) is int and v >= 2:
        return v, rec
    if rec.get("t") == "start" and rec.get("v") == 1 and "bins" in rec:
        return 1, rec
    return None, {}


def identify(path: str) -> tuple[int | None, dict]:
    """(format, header) of the file at ``path``: format None when it is not a journal."""
    with open(path, "rb") as f:
        first = f.readline(1 << 16)
    return _header(first)


def read(path: str, for_resume: bool = False, state: Optional[JournalState] = None, incremental: bool = False) -> JournalState:
    """Read a journal; resumable records are kept only ``for_resume``, otherwise the counts.

    ``incremental``: continue from ``state.size`` later, so that a last line still being
    written is left for then rather than counted as bad.
    """
    st = state or JournalState()
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return st
    with f:
        return read_file(f, for_resume, st, incremental)


def read_file(f: IO[bytes], for_resume: bool = False, state: Optional[JournalState] = None,
              incremental: bool = False) -> JournalState:
    """:func:`read` of a journal open for reading in binary (``f``; its position is moved)."""
    st = state or JournalState()
    if st.size:
        f.seek(st.size)
    else:
        first = f.readline()
        st.size = len(first)
        st.format, st.header = _header(first)
        if st.format is None:
            return st
        if st.format == 1:
            _apply(st, st.header, False)
    if not for_resume and st.format is not None and st.format >= 2:
        _count_lines(st, f, incremental)
        return st
    seq = len(st.records)
    for raw in f:
        if not raw.endswith(b"\n"):  # torn, or still being written
            if not incremental:
                st.bad += 1
            break  # (read incrementally, it is read again next time)
        st.size += len(raw)
        if _line(st, raw, for_resume, seq):
            seq += 1
    return st


def _line(st: JournalState, raw: bytes, for_resume: bool, seq: int = 0) -> bool:
    """One whole line (``st.size`` already counts it): parsed, checked and applied; True when
    it was kept as a resumable record."""
    if not for_resume and b',"v":"' in raw:  # counting only: the values (last, no quote in base64) need no parse
        raw = raw[:raw.rindex(b',"v":"')] + b"}"
    rec = _parse(raw, values=for_resume)
    if rec is None:
        st.bad += 1
        return False
    if rec["t"] == "results":  # where it is: cluf tells a current job's export from earlier ones
        rec["offset"] = st.size - len(raw)
    return _apply(st, rec, for_resume, seq)


# --- counting fast (cluf --status/--wait of many bins) ------------------------------------------
# Reading only to count (not for resuming), a completed-calls line of the shape the writer
# writes (one run of positions, no spaces) is checked by one regular
# expression over many lines at once, instead of json.loads and _parse line by line.  The
# expression accepts only lines that _parse accepts (after the values are cut off, as
# _line cuts them): a first position >= 0, a count and a step > 0 written as plain JSON
# integers, "c" of 9 or more lower-case hex digits, "d" of whole 16-digit digests (their
# number, the count, is checked apart), the values' "f" and "vc" last.  A line of
# any other shape, or a damaged one, goes through _line as before, so the counts are the ones
# line-by-line reading gives, torn tails and bad lines included.  Values are cut off first, as
# _line cuts them (from the last ',"v":"'): a record's values are never parsed to count it.
_OK_FAST = re.compile(
    rb'^\{"t":"ok","pos":\[\[(?:0|[1-9][0-9]*),([1-9][0-9]*),[1-9][0-9]*\]\]'
    rb'(?:,"c":"[0-9a-f]{9,}")?(?:,"d":"([0-9a-f]+)")?'
    rb'(?:,"f":"(?:jsonl|pkl)","vc":"[0-9a-f]{8}")?\}\n', re.M)
_VALUES = rb'(?:,"f":"(?:jsonl|pkl)","vc":"[0-9a-f]{8}")?'  # (the values themselves cut off first)
# the same, for lines of one call each (calls slow enough to go one by one: the most lines a
# journal has), checked all at once with nothing to convert: the count is the number of lines
_ONE_CALL_LINES = re.compile(
    rb'(?:\{"t":"ok","pos":\[\[(?:0|[1-9][0-9]*),1,[1-9][0-9]*\]\](?:,"c":"[0-9a-f]{9,}")?'
    rb'(?:,"d":"[0-9a-f]{16}")?' + _VALUES + rb'\}\n)*')
# a line of another type, after the first of a block (a line of no type at all is found by
# _count_oks, which then reads the lines around it one by one)
_OTHER = re.compile(rb'\n(\{"t":"(?:start|fail|results|end)"[^\n]*\n)')
_OTHER_FIRST = re.compile(rb'(\{"t":"(?:start|fail|results|end)"[^\n]*\n)')  # the block's first line
_CHUNK = 1 << 22  # bytes read at a time: memory stays flat however long the journal


def _count_lines(st: JournalState, f: IO[bytes], incremental: bool) -> None:
    """The rest of a format-2 journal from ``f`` (at ``st.size``), counted as :func:`_line`
    would count it line by line, a chunk of whole lines at a time."""
    pieces = []  # of a line longer than a chunk, so far (joined once: no copying over and over)
    while True:
        chunk = f.read(_CHUNK)
        if not chunk:
            break
        cut = chunk.rfind(b"\n") + 1
        if not cut:
            pieces.append(chunk)
            continue
        data = b"".join(pieces + [chunk]) if pieces else chunk
        pieces = [chunk[cut:]] if cut < len(chunk) else []
        _count_block(st, data, len(data) - (len(chunk) - cut))
    if pieces and not incremental:  # a torn last line (read incrementally, it is read again next time)
        st.bad += 1


def _count_block(st: JournalState, data: bytes, end: int) -> None:
    """Whole lines ``data[:end]``: the runs of completed-calls lines between the other lines
    are checked and counted at once; the other lines (start, fail, results, end) one by one."""
    base, pos = st.size, 0
    m = _OTHER_FIRST.match(data, 0, end) or _OTHER.search(data, 0, end)
    while m is not None:
        _count_oks(st, data, pos, m.start(1))
        st.size = base + m.end()
        _line(st, m.group(1), False)
        pos = m.end()
        m = _OTHER.search(data, pos - 1, end)
    _count_oks(st, data, pos, end)
    st.size = base + end


def _cut_values(raw: bytes) -> bytes:
    return raw[:raw.rindex(b',"v":"')] + b"}" if b',"v":"' in raw else raw


def _digests_fit(found: list[tuple[bytes, bytes]], counts: list[int]) -> bool:
    """Whether each line's "d" (if any) holds one 16-digit digest per call."""
    lengths = list(map(len, map(itemgetter(1), found)))
    if not any(lengths):
        return True
    digits = list(map((16).__mul__, counts))
    if all(lengths):
        return lengths == digits
    return all(d == n for d, n in zip(lengths, digits) if d)


def _count_oks(st: JournalState, data: bytes, start: int, end: int) -> None:
    """Lines ``data[start:end]``, each beginning as a completed-calls record."""
    if start == end:
        return
    lines = data.count(b"\n", start, end)
    block, first, last = data, start, end
    if data.find(b',"v":"', start, end) >= 0:  # values: cut off as _line cuts them (they need no check)
        block = b"\n".join(map(_cut_values, data[start:end - 1].split(b"\n"))) + b"\n"
        first, last = 0, len(block)
    if _ONE_CALL_LINES.fullmatch(block, first, last):
        st.last_done += lines
        st.completed_total += lines
        st.ok_records += lines
        return
    found = _OK_FAST.findall(block, first, last)
    counts = list(map(int, map(itemgetter(0), found)))
    if len(found) == lines and _digests_fit(found, counts):
        calls = sum(counts)
        st.last_done += calls
        st.completed_total += calls
        st.ok_records += lines
        return
    base = st.size - start  # (st.size is at ``start``)
    while start < end:  # some line is of another shape, or damaged: each on its own
        nl = data.index(b"\n", start, end) + 1
        st.size = base + nl
        _line(st, data[start:nl], False)
        start = nl


def _parse(raw: bytes, values: bool = True) -> dict | None:
    """The record of a line, checked; None when it is malformed.  ``values`` false: counting only,
    the values (cut off) are not checked."""
    try:
        rec = json.loads(raw)
    except (ValueError, RecursionError):  # (nested too deep: a torn line too)
        return None
    if not isinstance(rec, dict):
        return None
    t = rec.get("t")
    if t == "ok":
        if not _valid_runs(rec.get("pos")):
            return None
        c, d = rec.get("c"), rec.get("d")
        if c is not None and not (isinstance(c, str) and _CHECK_RE.match(c)):
            return None
        if d is not None and not (isinstance(d, str) and _DIGESTS_RE.match(d)
                                  and len(d) == 16 * sum(run[1] for run in rec["pos"])):
            return None
        if "v" in rec or "f" in rec:  # values come as a format and its records, both or neither
            v = rec.get("v", None if values else "")  # (counting: the values were cut off)
            if rec.get("f") not in VALUE_FORMATS or not isinstance(v, str):
                return None
        if "v" in rec:  # the values must be whole: their CRC-32 is "vc"
            try:
                data = base64.b64decode(rec["v"], validate=True)
            except ValueError:
                return None
            if rec.get("vc") != f"{zlib.crc32(data):08x}":
                return None
            rec["v"] = data
        return rec
    if t == "fail":
        return rec if type(rec.get("pos")) is int and rec["pos"] >= 0 else None
    if t == "start":
        return rec
    if t == "results":
        ok = isinstance(rec.get("path"), str) and all(type(rec.get(k)) is int for k in ("ino", "size", "mtime_ns"))
        return rec if ok else None
    if t == "end":
        return rec if rec.get("status", "complete") in _STATUSES else None
    return None


def _apply(st: JournalState, rec: dict, for_resume: bool, seq: int = 0) -> bool:
    t = rec["t"]
    if t == "start":
        st.runs += 1
        st.last_done, st.last_failed, st.last_status = 0, [], None
        if isinstance(rec.get("results"), str) and rec["results"]:
            st.results_path = rec["results"]
    elif t == "ok":
        runs = rec["pos"]
        n = sum(run[1] for run in runs)
        st.last_done += n
        st.completed_total += n
        st.ok_records += 1
        if for_resume and st.format is not None and st.format >= 2:
            d = rec.get("d")
            st.records.append(Record(seq, decode_positions(runs), rec.get("c"),
                                     bytes.fromhex(d) if d else None, rec.get("f")))
            return True
    elif t == "fail":
        if rec.get("final", True):
            st.last_failed.append(rec)
    elif t == "results":
        st.exports.append(rec)
    elif t == "end":
        st.last_status = rec.get("status", "complete")
    return False


def ok_records(path: str) -> Iterator[tuple[int, dict]]:
    """``(seq, record)`` for every completed-calls record of the journal at ``path``, numbered
    as :func:`read` numbers them (records torn or malformed are skipped the same way)."""
    seq = 0
    with open(path, "rb") as f:
        f.readline()
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            rec = _parse(raw)
            if rec is not None and rec["t"] == "ok":
                yield seq, rec
                seq += 1


def record_values(rec: dict) -> bytes:
    """The results-file bytes of an ok record's values (empty if it carries none)."""
    return rec.get("v", b"")  # (decoded and checked by _parse)


def identity_differences(header: dict, script_path: str, identity: dict) -> list[str]:
    """What differs between the run a journal's header names and this one (empty: the same)."""
    out = []
    if header.get("script") not in (None, script_path):
        out.append(f"script {header.get('script')} (this run: {script_path})")
    for key, default in IDENTITY_DEFAULTS.items():
        was, now = header.get(key, default), identity.get(key, default)
        if was != now:
            shown = (lambda v: " ".join(v) if v else "none") if key == "argv" else str
            word = {"target": "--target", "args": "--args", "argv": "script arguments after --"}[key]
            out.append(f"{word} {shown(was)} (this run: {shown(now)})")
    return out
