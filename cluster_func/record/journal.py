"""The run journal: which calls completed and which failed, so that a run can be resumed.

A call is a position in ``args``.  The journal is a text file of JSON lines, append-only,
never rewritten in place.  Records are written as results arrive (one ``write`` per round of
results, so a killed run loses none that it had received) and fsync'ed about once a second.

Format 2 (the current one).  The first line identifies the file as a journal; nothing is
ever renamed or appended to unless its first line is this header (or a format-1 ``start``)::

    {"cluster_func_journal": 2, "script": PATH, "bins": "0/1", "mode": "round-robin", "created": EPOCH,
     "target": "target", "args": "args", "argv": [...]}

then, in any number (``t`` is the record's type)::

    {"t": "start", "time": EPOCH, "pid": N, "resume": BOOL}     a run began (a resumed run appends one)
    {"t": "ok", "pos": [[first, count, step], ...], "c": "HEX", "d": "HEX", "f": "jsonl", "v": "BASE64"}
                                                                these calls completed
    {"t": "fail", "pos": N, "attempt": K, "final": BOOL, "type": "ValueError", "msg": "...", "args": "repr"}
    {"t": "results", "path": PATH, "ino": N, "size": N, "mtime_ns": N}  the run wrote its --results file
    {"t": "end", "done": N, "failed": M, "status": "complete" | "interrupted" | "aborted" | "walltime"}

The header names what ran (``target``, ``args`` and the script's own arguments ``argv``; a
journal written before they were recorded lacks them, which counts as the defaults):
``--resume`` refuses a journal of another script, target, args or argv.

Values (``--results``): ``f`` and ``v`` are the values of the record's calls, in its
position order: ``v`` is the base64 of the records of a results file of format ``f`` (JSON
lines ``{"pos": P, "value": V}``, or pickled ``(P, V)`` tuples), made by the workers.  So a
value is written in the same line, the same write and under the same lock as the record that
says its call completed, and a torn record loses both.  A run that wants values resumes only
from records that carry them in its format (the others run again).  The ``--results`` file is
an export, written whole (a temporary file renamed over it) when a run ends, from this run's
records and the earlier records its resume kept (see :mod:`cluster_func.record.results`); the
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

Only one live run may use a journal: it holds an OS lock (``lockf``) on ``PATH.lock`` for as
long as it runs; the lock ends however the process ends (a ``kill -9`` leaves the file, not the
lock).  The file holds the holder's pid, for the message a second run gets; the holder removes
it when it ends, and a run that locked a file that was removed meanwhile locks again.
"""

import base64
import collections
import errno
import fcntl
import hashlib
import io
import json
import os
import pickle
import re
import time
import zlib
from dataclasses import dataclass, field
from typing import Optional

from ..core.errors import UserError
from ..core.files import replaced
from ..core.script import short_repr

FORMAT = 2
HEADER_KEY = "cluster_func_journal"
FLUSH_SECONDS = 1.0
_CHECK_RE = re.compile(r"^[0-9a-f]{9,}$")
_DIGESTS_RE = re.compile(r"^(?:[0-9a-f]{16})+$")
_STATUSES = ("complete", "interrupted", "aborted", "walltime")
VALUE_FORMATS = ("jsonl", "pkl")
IDENTITY_DEFAULTS = {"target": "target", "args": "args", "argv": []}


class JournalWriteError(Exception):
    """Writing the journal failed (a full disk, a lost file server): the run must stop."""

    def __init__(self, path, err: OSError, what="the journal"):
        self.path = path
        self.err = err
        self.what = what
        super().__init__(f"cannot write {what} {path}: {err.strerror or err}")


# --- content checks -------------------------------------------------------------------

def content_check(data) -> str:
    """The ``c`` check of a batch's pickled elements (bytes or a memoryview)."""
    return f"{zlib.crc32(data):08x}{len(data):x}"


def pickle_elements(elements):
    """``pickle.dumps(list(elements), 4)``, as a buffer: the bytes a batch travels as.  (A
    Pickler on a file writes big bytes objects straight through, 30 times faster than
    ``pickle.dumps`` for a 1 MB argument; the bytes are the same.)"""
    f = io.BytesIO()
    pickle.Pickler(f, 4).dump(elements if type(elements) is list else list(elements))
    return f.getbuffer()


def elements_check(elements) -> str:
    return content_check(pickle_elements(elements))


_SET_TAG = "\x00cluster_func:set"


def _canonical(obj):
    """``obj`` with every set replaced by a tagged tuple in a fixed order: a set of strings
    iterates in an order that depends on PYTHONHASHSEED, and a call's digest must not."""
    t = type(obj)
    if t is tuple:
        return tuple(_canonical(x) for x in obj)
    if t is list:
        return [_canonical(x) for x in obj]
    if t is dict:
        return {k: _canonical(v) for k, v in obj.items()}
    if t is set or t is frozenset:
        items = sorted((_canonical(x) for x in obj), key=lambda x: pickle.dumps(x, 4))
        return (_SET_TAG, t.__name__, tuple(items))
    return obj


def call_digest(element) -> bytes:
    try:
        data = pickle.dumps(_canonical(element), 4)
    except Exception:  # noqa: BLE001 - fall back to repr for the odd unpicklable element
        data = repr(element).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=8).digest()


# --- positions ------------------------------------------------------------------------------

def encode_positions(positions):
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


def decode_positions(runs):
    """The positions of ``runs``: a range for a single run, else a list."""
    if len(runs) == 1:
        first, count, step = runs[0]
        return range(first, first + count * step, step)
    out = []
    for first, count, step in runs:
        out.extend(range(first, first + count * step, step))
    return out


def _valid_runs(runs):
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
    positions: object  # range or list, in the order the batch held them
    check: Optional[str] = None  # "c"
    digests: Optional[bytes] = None  # "d"
    values: Optional[str] = None  # "f": the format of the values it carries, if any

    def __post_init__(self):
        p = self.positions
        self.lo, self.hi = (p[0], p[-1]) if isinstance(p, range) and p.step > 0 else (min(p), max(p))
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

    @property
    def recorded(self):
        """Calls the resumable records cover."""
        return sum(len(r.positions) for r in self.records)


def _header(line: bytes):
    """The format of a journal whose first line is ``line``, or None."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None, {}
    if not isinstance(rec, dict):
        return None, {}
    v = rec.get(HEADER_KEY)
    if type(v) is int and v >= 2:
        return v, rec
    if rec.get("t") == "start" and rec.get("v") == 1 and "bins" in rec:
        return 1, rec
    return None, {}


def identify(path: str):
    """(format, header) of the file at ``path``: format None when it is not a journal."""
    with open(path, "rb") as f:
        first = f.readline(1 << 16)
    return _header(first)


def read(path: str, for_resume=False, state: Optional[JournalState] = None, incremental=False) -> JournalState:
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
        seq = len(st.records)
        for raw in f:
            if not raw.endswith(b"\n"):  # torn, or still being written
                if not incremental:
                    st.bad += 1
                break  # (read incrementally, it is read again next time)
            st.size += len(raw)
            if not for_resume and b',"v":"' in raw:  # counting only: the values (last, no quote in base64) need no parse
                raw = raw[:raw.rindex(b',"v":"')] + b"}"
            rec = _parse(raw)
            if rec is None:
                st.bad += 1
                continue
            if _apply(st, rec, for_resume, seq):
                seq += 1
    return st


def _parse(raw):
    try:
        rec = json.loads(raw)
    except ValueError:
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
        if ("v" in rec or "f" in rec) and rec.get("f") not in VALUE_FORMATS or not isinstance(rec.get("v", ""), str):
            return None
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


def _apply(st: JournalState, rec, for_resume, seq=0) -> bool:
    t = rec["t"]
    if t == "start":
        st.runs += 1
        st.last_done, st.last_failed, st.last_status = 0, [], None
    elif t == "ok":
        runs = rec["pos"]
        n = sum(run[1] for run in runs)
        st.last_done += n
        st.completed_total += n
        st.ok_records += 1
        if for_resume and st.format >= 2:
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


def ok_records(path):
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


def record_values(rec) -> Optional[bytes]:
    """The results-file bytes of an ok record's values (None if it carries none)."""
    v = rec.get("v")
    return base64.b64decode(v) if v is not None else None


def identity_differences(header, script_path, identity):
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


# --- the lock --------------------------------------------------------------------------

_LOCK_TEXT = re.compile(rb"^(clum pid [0-9]+\n)?$")


class JournalLock:
    """An OS lock on ``PATH.lock``, held for as long as a run uses the file at PATH (a journal,
    or a results file).  PATH is taken with its symbolic links resolved, so that one file is one
    lock however it is named.  A ``PATH.lock`` that is not a lock of clum's (empty, or
    ``clum pid N``) is never written or removed: the run stops and names it."""

    def __init__(self, journal_path, what="journal"):
        journal_path = os.path.realpath(journal_path)
        self.what = what
        self.path = journal_path + ".lock"
        for _ in range(100):
            fd = self._lock(journal_path)
            try:  # the holder removes the file when it ends: make sure ours is still the one
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        try:  # the pid is only for the message a second run gets: a full disk does not stop us here
            os.ftruncate(fd, 0)
            os.write(fd, f"clum pid {os.getpid()}\n".encode())
        except OSError:
            pass
        self.fd = fd

    def _lock(self, journal_path):
        if os.path.lexists(self.path) and (os.path.islink(self.path) or not os.path.isfile(self.path)):
            raise UserError(f"Cannot lock the {self.what} {journal_path}: {self.path} is not a lock file of clum "
                            f"(it is a {'symbolic link' if os.path.islink(self.path) else 'directory or special file'}), "
                            f"and clum will not touch it. Move it away, or choose another path.")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except IsADirectoryError:
            raise UserError(f"Cannot lock the journal {journal_path}: {self.path} is a directory. "
                            f"Remove it, or choose another journal with --journal PATH.") from None
        except OSError as e:
            raise UserError(f"Cannot lock the journal {journal_path}: cannot open {self.path}: "
                            f"{e.strerror}. Choose a writable place with --journal PATH.") from None
        try:
            text = os.pread(fd, 200, 0)
        except OSError:
            text = b""
        if not _LOCK_TEXT.match(text):
            os.close(fd)
            raise UserError(f"Cannot lock the {self.what} {journal_path}: {self.path} exists and is not a lock file "
                            f"of clum (it holds other text), so clum will neither overwrite nor remove it. Move it "
                            f"away, or choose another path for the {self.what}.")
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.read(fd, 100).decode("ascii", "replace").split()
            os.close(fd)
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise UserError(f"Cannot lock the journal {journal_path}: {e.strerror}. Choose a "
                                f"file system that supports locks with --journal PATH.") from None
            who = f"pid {holder[-1]}" if holder and holder[-1].isdigit() else "another process"
            if self.what != "journal":
                raise UserError(
                    f"Another clum run ({who}) is using the {self.what} {journal_path}: two runs writing one file "
                    f"would mix their values. Wait for it to end (or stop it), or name another file.") from None
            raise UserError(
                f"Another clum run ({who}) is using the journal {journal_path}: two runs on one journal "
                f"would run calls twice. Wait for it to end (or stop it), or give this run a journal "
                f"of its own with --journal PATH.") from None
        return fd

    def release(self):
        if self.fd is not None:
            try:
                os.unlink(self.path)  # while still holding it (see __init__)
            except OSError:
                pass
            os.close(self.fd)  # closing it releases the lock
            self.fd = None


# --- writing ---------------------------------------------------------------------------------

def _check_path(path):
    if os.path.isdir(path):
        raise UserError(f"The journal path {path} is a directory. Give the path of a file with "
                        f"--journal PATH (e.g. --journal {os.path.join(path, 'run.journal')}).")
    if os.path.exists(path) and not os.path.isfile(path):
        raise UserError(f"The journal path {path} is not a regular file. Give another path with --journal PATH.")


def _foreign(path, what):
    return UserError(f"{path} is not a clum journal ({what}), so clum will not move, overwrite or append "
                     f"to it. Give the run another journal with --journal PATH, or move the file away.")


class Journal:
    """The journal of one run.  Construct it to lock, check and open; ``close`` at the end.

    Writing errors raise :class:`JournalWriteError`; afterwards ``written_calls`` says how many
    completed calls reached the file.
    """

    def __init__(self, path: str, script_path: str, bins_text: str, mode: str, resume: bool, warn,
                 identity: Optional[dict] = None, values: Optional[str] = None):
        path = os.path.realpath(path)  # a link to a journal is that journal (one lock, one file)
        self.path = path
        self.mode = mode
        self.identity = dict(IDENTITY_DEFAULTS, **(identity or {}))
        self.values = values  # "jsonl"/"pkl": completed records carry their calls' values
        self.first_seq = 0  # the sequence number of this run's first completed-calls record
        self.dropped_without_values = 0
        self.lines = []  # (text, completed calls in it)
        self.last_sync = time.monotonic()
        self.written_calls = 0
        self.broken: Optional[JournalWriteError] = None
        self.fd = None
        _check_path(path)
        folder = os.path.dirname(path) or "."
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise UserError(f"Cannot create the journal folder {folder}: {e.strerror}. "
                            f"Choose another place with --journal PATH.") from None
        self.lock = JournalLock(path)
        try:
            self._open(path, script_path, bins_text, mode, resume, warn)
        except BaseException:
            self.lock.release()
            raise

    def _open(self, path, script_path, bins_text, mode, resume, warn):
        self.previous = self.replaced_state = None
        exists = os.path.exists(path)
        if exists:
            try:
                fmt, header = identify(path)
            except OSError as e:
                raise UserError(f"Cannot read the journal {path}: {e.strerror}. Choose another "
                                f"journal with --journal PATH.") from None
            if fmt is None:
                raise _foreign(path, "its first line is not a journal header")
            if fmt >= 2 and header.get("script") not in (None, script_path):
                raise UserError(
                    f"The journal {path} belongs to another script, {header.get('script')} (this run: "
                    f"{script_path}), so clum will neither resume from it nor move it. Give this run its own "
                    f"journal with --journal PATH (or leave --journal out).")
            if resume and fmt >= 2:
                diff = identity_differences(header, script_path, self.identity)
                if diff:
                    raise UserError(
                        f"The journal {path} records a run of {'; '.join(diff)}: its completed calls are "
                        f"not calls of this run, so --resume cannot skip them. Resume with the same options, "
                        f"or start this run over without --resume (the journal is then kept as {path}.prev), "
                        f"or give it another journal with --journal PATH.")
            if resume:
                if fmt != FORMAT:
                    raise UserError(
                        f"The journal {path} is of format {fmt}, written by an earlier cluster-func, which "
                        f"this one cannot resume from safely. Run without --resume to start over (the old "
                        f"journal is kept as {path}.prev).")
                if header.get("bins") != bins_text or header.get("mode") != mode:
                    raise UserError(
                        f"The journal {path} is of a run with bins {header.get('bins')} and {header.get('mode')} "
                        f"binning, but this run has bins {bins_text} and {mode} binning: its records do not "
                        f"apply. Resume with the same --bins/--hash/--key, or use another --journal.")
                self.previous = read(path, for_resume=True)
                self.first_seq = self.previous.ok_records
                if self.values is not None:  # a call counts as completed here only with its value
                    keep = [r for r in self.previous.records if r.values == self.values]
                    drop = [r for r in self.previous.records if r.values != self.values]
                    if drop and keep:
                        covered = {p for r in keep for p in r.positions}
                        self.dropped_without_values = len({p for r in drop for p in r.positions} - covered)
                    else:
                        self.dropped_without_values = sum(len(r.positions) for r in drop)
                    self.previous.records = keep
                if self.previous.bad:
                    warn(f"skipped {self.previous.bad} unreadable line(s) of the journal {path} (torn by a "
                         f"kill or a full disk, or edited); the calls they recorded will run again.")
            else:
                prev = self.replaced_state = read(path)
                if prev.last_status is None or prev.last_failed:
                    state = "did not finish" if prev.last_status is None else "finished with failed calls"
                    done = (f"{prev.completed_total} calls completed, which --resume would have skipped"
                            if prev.completed_total else "no call completed")
                    warn(f"the previous run {state} ({done}); starting over, its journal kept as {path}.prev.")
                self._keep_previous(path)
                exists = False
        try:
            if exists:
                self.fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                with open(path, "rb") as r:  # a torn last line stays on its own line
                    r.seek(-1, os.SEEK_END)
                    if r.read(1) != b"\n":
                        self._add("")
            else:
                self._create(path, {HEADER_KEY: FORMAT, "script": script_path, "bins": bins_text,
                                    "mode": mode, "created": round(time.time(), 3), **self.identity})
        except OSError as e:
            raise _write_failed(UserError(f"Cannot write the journal {path}: {e.strerror}. Free some space "
                                          f"or choose another place with --journal PATH."), e) from None
        self._add(json.dumps({"t": "start", "time": round(time.time(), 3), "pid": os.getpid(),
                              "resume": bool(resume)}, separators=(",", ":")))
        try:
            self.flush()
        except JournalWriteError as e:
            raise _write_failed(UserError(f"{e}. Free some space or choose another place with --journal PATH."),
                                e.err) from None

    def _keep_previous(self, path):
        prev = path + ".prev"
        if os.path.lexists(prev):
            if os.path.isdir(prev) or not os.path.isfile(prev):
                raise UserError(f"Cannot keep the previous journal as {prev}: that is not a file. Move it away, "
                                f"or choose another journal with --journal PATH.")
            try:
                fmt, _ = identify(prev)
            except OSError:
                fmt = None
            if fmt is None:
                raise UserError(f"Cannot keep the previous journal as {prev}: that file is not a clum journal, "
                                f"and clum will not overwrite it. Move it away, or choose another journal "
                                f"with --journal PATH.")
        try:
            os.replace(path, prev)
        except OSError as e:
            raise UserError(f"Cannot move the previous journal {path} to {prev}: {e.strerror}. "
                            f"Choose another place with --journal PATH.") from None

    def _create(self, path, header):
        """A new journal appears with its header, whole, or not at all."""
        with replaced(path, "wb") as f:
            f.write((json.dumps(header, separators=(",", ":")) + "\n").encode("utf-8", "surrogatepass"))
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    # --- records ---
    def _add(self, text, calls=0):
        self.lines.append((text, calls))

    def completed(self, positions, elements, check=None, digests=None, values=None):
        """Calls at ``positions`` (holding ``elements``) completed.  From the worker: ``check``,
        its content check when they are a whole batch as sent; ``digests``, per call, if any;
        ``values``, the results-file bytes of their values (when the run collects them)."""
        rec = {"t": "ok", "pos": encode_positions(positions)}
        if self.mode == "round-robin":
            rec["c"] = check or elements_check(elements)
        elif digests is None:
            digests = b"".join(call_digest(e) for e in elements)
        if digests is not None:
            rec["d"] = digests.hex()
        if self.values is not None:
            rec["f"] = self.values
            rec["v"] = base64.b64encode(values or b"").decode("ascii")
        self._add(json.dumps(rec, separators=(",", ":")), len(elements))

    def exported(self, path, st):
        """The run wrote its results file: ``st`` is its os.stat (so a later run knows it is ours)."""
        self._add(json.dumps({"t": "results", "path": path, "ino": st.st_ino, "size": st.st_size,
                              "mtime_ns": st.st_mtime_ns}, separators=(",", ":")))

    def failed(self, position, element, attempt, exc_type, message, final):
        self._add(json.dumps({"t": "fail", "pos": position, "attempt": attempt, "final": final,
                              "type": exc_type, "msg": str(message)[:2000], "args": short_repr(element, 300)},
                             separators=(",", ":")))

    def maybe_flush(self, now):
        """Write what is pending (one write: it survives the process being killed);
        fsync at most once every FLUSH_SECONDS (so a power loss loses at most that)."""
        if self.lines:
            self.flush(sync=now - self.last_sync >= FLUSH_SECONDS)

    def flush(self, sync=True):
        if self.broken is not None:
            raise self.broken
        if self.lines:
            lines, self.lines = self.lines, []
            data = ("\n".join(text for text, _ in lines) + "\n").encode("utf-8", "surrogatepass")
            try:
                _write_all(self.fd, data)
            except _PartialWrite as e:
                self._count_written(lines, e.written)
                self.broken = JournalWriteError(self.path, e.err)
                raise self.broken from None
            self.written_calls += sum(n for _, n in lines)
        if sync:
            self.last_sync = time.monotonic()
            try:
                os.fsync(self.fd)
            except OSError as e:
                if e.errno in (errno.EINVAL, errno.EROFS):  # cannot be synced (a pipe, /dev/null)
                    return
                self.broken = JournalWriteError(self.path, e)
                raise self.broken from None

    def _count_written(self, lines, nbytes):
        """Count the calls of the lines that reached the file whole before a write failed."""
        end = 0
        for text, n in lines:
            end += len(text.encode("utf-8", "surrogatepass")) + 1
            if end > nbytes:
                break
            self.written_calls += n

    def close(self, done, failed, status):
        """Write the end record (unless writing already failed) and release the journal."""
        try:
            if self.broken is None:
                self._add(json.dumps({"t": "end", "done": done, "failed": failed, "status": status},
                                     separators=(",", ":")))
                self.flush()
        except JournalWriteError:
            pass
        finally:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None
            self.lock.release()


def _write_failed(error: UserError, cause: OSError) -> UserError:
    """A full disk or a failing file system is a failed run (exit 1), not bad input (exit 2)."""
    if cause.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG):
        error.exit_status = 1
    return error


class _PartialWrite(Exception):
    def __init__(self, written, err):
        self.written = written
        self.err = err


def _write_all(fd, data):
    view, done = memoryview(data), 0
    while done < len(data):
        try:
            done += os.write(fd, view[done:])
        except OSError as e:
            raise _PartialWrite(done, e) from None
    return done


# --- resuming ------------------------------------------------------------------------------------

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

    def __init__(self, work, state: JournalState, mode: str):
        self.work = work
        self.skipped = 0
        self.kept = Kept()
        self.error = None
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
    def error_position(self):
        """The position args was producing when it raised (see bins.Work)."""
        return self.work.error_position

    def take(self, n):
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

    def _direct_next(self):
        """True when the next elements can go straight through (:meth:`_take_direct`)."""
        work = self.work
        if self.open or self.exhausted or self.by_digest is not None or work.step is None:
            return False
        return self.next_rec >= len(self.records) or self.records[self.next_rec].lo > work.next_position

    def _take_direct(self, n):
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

    def _emit(self, positions, elements):
        self.out_pos.extend(positions)
        self.out_elem.extend(elements)

    def _pull(self, n):
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

    def _end_if(self, finished, error):
        if not finished:
            return
        self.exhausted = True
        self.error = error
        for rec, held, _ in self.open:  # some positions no longer exist
            self._partial_verdict(rec, held)
        self.open = []

    def _general(self, positions, elements):
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

    def _close_records(self, pos):
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

    def _verdict(self, rec: Record, positions, elements):
        """All of a record's positions are here: skip them, or those whose digest still
        matches, and run the rest."""
        if elements_check(elements) == rec.check:
            self.skipped += len(elements)
            self.kept.whole.add(rec.seq)
            return
        d = rec.digests
        if d is None:
            self._emit(positions, elements)
            return
        for k, (p, e) in enumerate(zip(positions, elements)):
            if call_digest(e) == d[8 * k:8 * k + 8]:
                self.skipped += 1
                self.kept.some.setdefault(rec.seq, set()).add(p)
            else:
                self.out_pos.append(p)
                self.out_elem.append(e)

    def _partial_verdict(self, rec: Record, held):
        """Some of a record's positions are gone: with per-call digests, skip the held elements
        that still have theirs; without, run them all."""
        if rec.digests is None:
            self._emit(list(held), list(held.values()))
            return
        index = {p: k for k, p in enumerate(rec.positions)}
        d = rec.digests
        for p, e in held.items():
            k = index[p]
            if call_digest(e) == d[8 * k:8 * k + 8]:
                self.skipped += 1
                self.kept.some.setdefault(rec.seq, set()).add(p)
            else:
                self.out_pos.append(p)
                self.out_elem.append(e)

    def _content_filter(self, positions, elements):
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


def _disjoint(records):
    """Drop the earlier of two records that share a position (the later run re-ran it)."""
    if len(records) < 2:
        return records
    dropped = set()
    active = []  # records whose span may still overlap later ones
    for r in sorted(records, key=lambda r: r.lo):
        active = [a for a in active if a.hi >= r.lo]
        for a in active:
            if a.seq not in dropped and r.seq not in dropped and _share(a, r):
                dropped.add(min(a.seq, r.seq))
        active.append(r)
    return [r for r in records if r.seq not in dropped]


def _share(a: Record, b: Record):
    if len(a.positions) > len(b.positions):
        a, b = b, a
    return any(p in b.members for p in a.positions)
