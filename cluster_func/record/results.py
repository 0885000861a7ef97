"""Collected return values: ``clum --results PATH`` and ``cluster_func.read_results``.

A results file holds one record per call of the run's ``args``: its position and what
``target`` returned.  The format comes from the file name:

``.jsonl``  JSON Lines, one ``{"pos": 17, "value": 0.93}`` a line (``pandas.read_json(PATH,
            lines=True)`` reads it).  Tuples become lists; NumPy scalars and arrays become
            numbers and lists (anything with ``tolist()``); a value JSON cannot hold makes
            that call fail, with its type named (never a silent ``repr``).  JSON object keys
            must be strings: a dict with other keys makes the call fail (``{1: "a", "1": "b"}``
            would otherwise come back as one key).
``.pkl``    a stream of pickles, each a tuple ``(pos, value)`` (load them one by one with
            ``pickle.load`` until EOFError), for values JSON cannot hold.

Where the values live.  Workers turn values into records (the main process only moves bytes
and never holds a value); the records of a batch travel inside the journal record that says
the batch completed (see :mod:`cluster_func.record.journal`): one writer, one write, one lock, one
torn-record rule, so a call counts as completed exactly when its value is in the journal.  The
results file is an export of the journal, written whole (a temporary file fsync'ed and renamed
over it) when the run ends, however it ends short of ``kill -9``: this run's values and the
values of the calls its ``--resume`` skipped, at the positions those calls have in the current
``args`` (under ``--hash``/``--key`` an element may have moved; the value moves with it).  So
the invariant: for every position of the current ``args``, the file holds exactly one value,
the one ``target`` returned for the element now there, or the run said (its summary and exit
status) that the position has none: failed, interrupted, not reached.  A full disk while
exporting leaves the previous file whole (exit 1); ``--resume`` writes it again, running
nothing that completed.

Ownership.  The journal records each file it exported (inode, size, modification time, sha256, and the CRC-32 of
its bytes by which ``cluf --gather`` knows a bin's file is whole and its job's),
before the file is renamed into place: a file at PATH (or PATH.prev) is replaced or moved only
when it is the run's own, known by what it holds (see :func:`owned`): a recorded export, wherever
it was copied, or a file whose every readable record is one of the journal's values at its
position (a torn file, an export whose record was lost); any other file, another run's or the
user's, is refused (exit 2) before anything changes.  A results file is
locked as the journal is (``PATH.lock``, symbolic links resolved).
"""

from __future__ import annotations

import collections
import glob
import io
import json
import os
import pickle
import zlib
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence, Tuple, Union

from ..core.errors import UserError
from ..core.files import replaced

if TYPE_CHECKING:
    from .resume import Kept
    from .writer import Journal, JournalLock

FORMATS = (".jsonl", ".pkl")


def format_of(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise UserError(f"--results {path}: the file name must end in .jsonl (JSON Lines, one "
                        f"{{\"pos\": N, \"value\": ...}} a line) or .pkl (pickled (pos, value) records, for "
                        f"values JSON cannot hold). Example: --results scores.jsonl")
    return ext[1:]


# --- in the worker ---------------------------------------------------------------------

class ValueNotWritable(TypeError):
    """The value a call returned cannot be written in the results file's format: that call
    fails with this message (and no traceback from inside the tool)."""

    no_traceback = True


def _json_default(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)  # NumPy scalars and arrays
    if tolist is not None and callable(tolist):
        return tolist()
    t = type(value)
    name = t.__qualname__ if t.__module__ in ("builtins", "__cluster_func_target__") else \
        f"{t.__module__}.{t.__qualname__}"
    raise TypeError(f"the value returned is a {name}, "
                    f"which JSON cannot hold: return numbers, strings, lists or dicts, or write the "
                    f"results as pickles with --results PATH.pkl")


def _json_key(k: Any) -> str:
    if isinstance(k, str):
        return k
    if k is True or k is False or k is None:
        return {True: "true", False: "false", None: "null"}[k]
    return float.__repr__(k) if isinstance(k, float) else str(k)


def _check_keys(value: Any) -> None:
    """JSON turns dict keys into strings: refuse a dict where two keys would become one."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if len({_json_key(k) for k in v}) < len(v):
                keys = [k for k in v if not isinstance(k, str)][:3]
                raise ValueNotWritable(
                    f"the value returned holds a dict whose keys {', '.join(map(repr, keys))} become the same "
                    f"JSON strings as other keys of it (JSON keys are strings), so one would be lost: return "
                    f"distinct string keys, or write the results as pickles with --results PATH.pkl")
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(x for x in v if isinstance(x, (dict, list, tuple)))


def encoder(fmt: str) -> Callable[[int, Any], bytes]:
    """A function (position, value) -> the bytes of one record."""
    if fmt == "values":  # cluster_func.map without a file: the values go to the caller in memory
        return value_encoder()
    if fmt == "jsonl":
        from json.encoder import encode_basestring_ascii

        dumps = json.JSONEncoder(separators=(",", ":"), default=_json_default).encode
        int_text, float_text, inf = int.__repr__, float.__repr__, float("inf")

        def encode(pos: int, value: Any) -> bytes:
            t = type(value)
            try:
                # The usual scalars without building an encoder per call (what json.dumps writes).
                if t is int:
                    text = int_text(value)
                elif t is float and -inf < value < inf:
                    text = float_text(value)
                elif t is str:
                    text = encode_basestring_ascii(value)
                else:
                    text = dumps(value)
                    if "{" in text:  # a dict somewhere: its keys must stay apart once JSON made them strings
                        _check_keys(value)
            except (TypeError, ValueError) as e:
                raise ValueNotWritable(str(e)) from None
            return f'{{"pos":{pos},"value":{text}}}\n'.encode("utf-8", "surrogatepass")
        return encode

    def encode_pickle(pos: int, value: Any) -> bytes:
        try:
            return pickle.dumps((pos, value), 4)
        except Exception as e:  # noqa: BLE001
            raise ValueNotWritable(f"the value returned, a {type(value).__qualname__}, cannot be pickled: "
                                   f"{e}") from None
    return encode_pickle


def pack_values(positions: Sequence[int], values: list, failed: list[int]) -> bytes:
    """A batch's values as one pickle of ``(positions, values, bad)``: ``positions`` is the
    first position when they run on by one (the usual case, so that this process stores the
    values with one slice assignment), else the list of them; ``bad`` lists ``(position, type
    name, error)`` for the values that cannot be pickled (None at their place in ``values``):
    those calls fail.  ``values`` holds one value per call started, None for a failed call
    (``failed`` has their indices), which is left out."""
    if not values:
        return b""
    n = len(values)
    if failed or type(positions) is not range or positions.step != 1:
        gone = set(failed)
        keep = [k for k in range(n) if k not in gone]
        where: Any = [positions[k] for k in keep]
        values = [values[k] for k in keep]
        if not where:
            return b""
        if where != list(range(where[0], where[0] + len(where))):
            where = tuple(where)
        else:
            where = where[0]
    else:
        where = positions[0]
    try:
        return pickle.dumps((where, values, None), 4)
    except Exception:  # noqa: BLE001 - find the values that cannot travel; the others do
        kept, bad = [], []
        pos = range(where, where + len(values)) if type(where) is int else where
        for p, value in zip(pos, values):
            try:
                pickle.dumps(value, 4)
                kept.append(value)
            except Exception as e:  # noqa: BLE001
                kept.append(None)
                bad.append((p, type(value).__qualname__, f"{type(e).__name__}: {e}"))
        return pickle.dumps((where, kept, bad), 4)


def value_encoder() -> Callable[[int, Any], bytes]:
    """The workers' encoder for the ``values`` format (cluster_func.map without a journal): the worker hands it
    a batch's values whole (``pack``, see worker.run_batches), which travel as one pickle."""
    def encode(pos: int, value: Any) -> bytes:  # (one call at a time: not used by the worker, which uses pack)
        return pickle.dumps((pos, value), 4)

    encode.pack = pack_values  # type: ignore[attr-defined]
    return encode



# --- in the main process -----------------------------------------------------------------

def _stat_key(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def file_digest(path: str) -> str:
    """The sha256 of a file's bytes (hex): what an export record holds, so that the file is known
    by what it holds wherever it is (a copied or moved folder, another machine)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _journals(journal_path: str) -> list[str]:
    return [p for p in (journal_path, journal_path + ".prev") if os.path.isfile(p)]


def _exports(journal_path: str) -> list[dict]:
    """The "results" records of the journal at ``journal_path`` (and its ``.prev``): the results
    files its runs wrote."""
    from . import journal as journal_mod

    found = []
    for path in _journals(journal_path):
        try:
            found += journal_mod.read(path).exports
        except OSError:
            pass
    return found


def _holds_only_journal_values(path: str, fmt: str, journal_path: str) -> bool:
    """True when every record that can be read in the file at ``path`` is, byte for byte, a value
    record of the journal (or its ``.prev``) at its position, and there is at least one: the file
    is an export of this run's, whether or not its export was recorded (a failure between the
    two), and whatever a copy did to its inode.  Records that cannot be read (torn) are left out;
    a file of another run, or of the user's, holds records the journal does not."""
    from . import journal as journal_mod

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    mine = collections.defaultdict(set)
    for jpath in _journals(journal_path):
        try:
            for _, rec in journal_mod.ok_records(jpath):
                if rec.get("f") == fmt:
                    for pos, item in _split(journal_mod.record_values(rec), fmt):  # type: ignore[arg-type]
                        mine[pos].add(item)
        except (OSError, ValueError):
            continue
    if not mine:
        return False
    seen = 0
    try:
        if fmt == "jsonl":
            for line in data.split(b"\n")[:-1]:
                line += b"\n"
                try:
                    pos = json.loads(line)["pos"]
                except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                    continue  # a torn line
                if type(pos) is not int or line not in mine.get(pos, ()):
                    return False
                seen += 1
        else:
            for pos, item in _split(data, fmt):
                if type(pos) is not int or item not in mine.get(pos, ()):
                    return False
                seen += 1
    except Exception:  # noqa: BLE001 - a torn pickle: what follows cannot be framed
        pass
    return seen > 0


def owned(path: str, fmt: str, journal_path: str) -> bool:
    """Is the results file at ``path`` one of this run's (see the module docstring, Ownership)?"""
    st = os.stat(path)
    exports = _exports(journal_path)
    if any((e.get("ino"), e.get("size"), e.get("mtime_ns")) == _stat_key(st) for e in exports):
        return True  # (the file as written, where it was written)
    if any(e.get("size") == st.st_size and e.get("sha256") for e in exports):
        digest = file_digest(path)
        if any(e.get("size") == st.st_size and e.get("sha256") == digest for e in exports):
            return True  # the file as written, copied or moved with its folder
    return _holds_only_journal_values(path, fmt, journal_path)


def collected_into(journal_path: str) -> str | None:
    """The results file the journal's last run collected values into (as given to it), or None
    when its runs collected none; for a --resume that leaves --results out."""
    from . import journal as journal_mod

    try:
        if not os.path.isfile(journal_path) or journal_mod.identify(journal_path)[0] is None:
            return None
        st = journal_mod.read(journal_path)
    except OSError:
        return None
    if st.results_path is None:
        return None
    return os.path.normpath(os.path.join(os.path.dirname(os.path.realpath(journal_path)), st.results_path))


class Results:
    """The ``--results`` file of one run.

    The values themselves travel in the journal's records (see :mod:`cluster_func.record.journal`);
    this file is their export, written whole when the run ends.  Construct it to check the
    path (nothing is changed then, so a refused option leaves every file as it was); ``lock``
    it, ``start`` it (a new run keeps the previous file as ``PATH.prev``), and ``export`` at the
    end.  A file is replaced or moved only when the run's journal says one of its runs wrote it.
    """

    lock: JournalLock | None  # held from acquire() to release()

    def __init__(self, path: str, journal_path: str, resume: bool) -> None:
        self.given = path
        self.format = format_of(path)
        self.path = os.path.realpath(path)
        self.resume = resume
        self.lock = None
        if os.path.isdir(self.path):
            raise UserError(f"--results {path} is a directory. Name a file, e.g. --results "
                            f"{os.path.join(path, 'results.' + self.format)}.")
        real_journal = os.path.realpath(journal_path)
        if self.path in (real_journal, real_journal + ".prev", real_journal + ".lock"):
            raise UserError(f"--results {path} is the run's journal{'' if self.path == real_journal else ' file'} "
                            f"({journal_path}): the two must be different files. Name another file with --results "
                            f"(e.g. --results {os.path.splitext(path)[0]}.values.{self.format}).")
        for p, what in ((self.path, "the results file"), (self.path + ".prev", "the previous results file")):
            if not os.path.lexists(p) or (p != self.path and resume):
                continue
            if not os.path.isfile(p):
                raise UserError(f"{what} {p} is not a regular file; clum will not replace it. Move it away, or "
                                f"name another file with --results PATH.")
            if not owned(p, self.format, real_journal):
                raise UserError(
                    f"{p} is not a results file of this run: no run of its journal ({journal_path}) wrote it (it "
                    f"is another run's, a file of yours, or it was changed since). clum will not overwrite, move or add to it. "
                    f"Name another file with --results PATH, or move it away.")

    def acquire(self) -> None:
        """Lock the file (two runs never write one results file)."""
        from .writer import JournalLock

        folder = os.path.dirname(self.path)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise UserError(f"Cannot create the folder {folder} for --results: {e.strerror}.") from None
        self.lock = JournalLock(self.path, what="results file")

    def start(self) -> None:
        """A new run (not --resume): keep the previous file as PATH.prev, so that a run killed
        before its export leaves no values of another run under the name."""
        if not self.resume and os.path.lexists(self.path):
            try:
                os.replace(self.path, self.path + ".prev")
            except OSError as e:
                raise UserError(f"Cannot move the previous results {self.given} to {self.given}.prev: "
                                f"{e.strerror}. Name another file with --results PATH.") from None

    def export(self, journal: Journal, kept: Kept | None) -> int:
        """Write the file whole from the journal: this run's values and those its resume kept.
        Returns the number of values.  OSError (a full disk) leaves the previous file as it was."""
        journal.flush()
        import hashlib

        from ..core.errors import signals_held

        digest, crc = hashlib.sha256(), 0

        def write(data: bytes) -> None:
            nonlocal crc
            digest.update(data)
            crc = zlib.crc32(data, crc)
            f.write(data)

        # The file and its record are one step: the record (with what the file holds) reaches the
        # journal before the file is renamed into place; should the record fail, the file is not
        # put in place.  (A file in place whose record is missing is still known by what it holds.)
        with signals_held(), replaced(self.path, "wb", sync=True) as f:
            n = export(journal.path, self.format, journal.first_seq, kept, write)
            f.flush()
            journal.exported(self.path, os.fstat(f.fileno()), crc, digest.hexdigest())
            journal.flush()
        return n

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def _split(data: bytes, fmt: str) -> Iterator[Tuple[int, bytes]]:
    """(position, record bytes) of each record of results-file bytes."""
    if fmt == "jsonl":
        for line in data.split(b"\n")[:-1]:
            yield int(line[7:line.index(b",", 7)]), line + b"\n"
        return
    buf = io.BytesIO(data)
    start = 0
    while start < len(data):
        pos, _ = pickle.load(buf)
        end = buf.tell()
        yield pos, data[start:end]
        start = end


def _moved(record: bytes, pos: int, fmt: str) -> bytes:
    """A record of results-file bytes, with its position replaced."""
    if fmt == "jsonl":
        return b'{"pos":%d' % pos + record[record.index(b",", 7):]
    return pickle.dumps((pos, pickle.loads(record)[1]), 4)


def export(journal_path: str, fmt: str, first_seq: int, kept: Kept | None, write: Callable[[bytes], Any]) -> int:
    """Write, with ``write``, the results-file records of the values that the journal's records
    of format ``fmt`` carry: every record from ``first_seq`` on (this run's), and of the earlier
    ones what ``kept`` (a journal.Kept, or None) says a resume kept, at the positions it says.
    Returns the number of records written."""
    from . import journal as journal_mod

    n = 0
    pending = {d: collections.deque(ps) for d, ps in kept.by_digest.items()} if kept is not None else {}
    for seq, rec in journal_mod.ok_records(journal_path):
        if rec.get("f") != fmt:
            continue
        if seq >= first_seq or (kept is not None and seq in kept.whole):
            data = journal_mod.record_values(rec)
            write(data)  # type: ignore[arg-type]  # (a record of format fmt carries values)
            n += sum(run[1] for run in rec["pos"])
            continue
        if kept is None:
            continue
        some = kept.some.get(seq)
        if some:
            for pos, item in _split(journal_mod.record_values(rec), fmt):  # type: ignore[arg-type]
                if pos in some:
                    write(item)
                    n += 1
        elif pending and rec.get("d"):
            d = bytes.fromhex(rec["d"])
            for k, (pos, item) in enumerate(_split(journal_mod.record_values(rec), fmt)):  # type: ignore[arg-type]
                q = pending.get(d[8 * k:8 * k + 8])
                if q:
                    write(_moved(item, q.popleft(), fmt))
                    n += 1
    return n


# --- reading -------------------------------------------------------------------------------------

class TornRecords(UserWarning):
    """A results file held records that could not be read (torn, or not a record)."""


def _journal_records(path: str) -> Iterator[Tuple[int, object]]:
    """The values a journal's records carry, at the positions their calls had when they ran."""
    from . import journal as journal_mod

    for _, rec in journal_mod.ok_records(path):
        data = journal_mod.record_values(rec)
        if data:
            if rec["f"] == "jsonl":
                for line in data.split(b"\n")[:-1]:
                    r = json.loads(line)
                    yield r["pos"], r["value"]
            else:
                buf = io.BytesIO(data)
                while buf.tell() < len(data):
                    yield pickle.load(buf)


def read_records(path: str) -> Iterator[Tuple[int, object]]:
    """``(position, value)`` of one results file (or journal), in file order."""
    from . import journal as journal_mod

    try:
        is_journal = journal_mod.identify(path)[0] is not None
    except OSError:
        is_journal = False
    if is_journal:
        yield from _journal_records(path)
        return
    fmt = format_of(path[:-len(".prev")] if path.endswith(".prev") else path)
    bad = 0
    with open(path, "rb") as f:
        if fmt == "jsonl":
            for line in f:
                try:
                    rec = json.loads(line)
                    if not (isinstance(rec, dict) and type(rec.get("pos")) is int and rec["pos"] >= 0 and "value" in rec):
                        raise ValueError
                    if not line.endswith(b"\n"):
                        raise ValueError
                except (ValueError, UnicodeDecodeError, RecursionError):  # (RecursionError: nested too deep)
                    bad += 1
                    continue
                yield rec["pos"], rec["value"]
        else:
            data = f.read()
            buf = io.BytesIO(data)
            while buf.tell() < len(data):
                try:
                    rec = pickle.load(buf)
                    if not (isinstance(rec, tuple) and len(rec) == 2 and type(rec[0]) is int and rec[0] >= 0):
                        raise ValueError
                except Exception:  # noqa: BLE001 - a torn or foreign pickle: what follows cannot be framed
                    bad += 1
                    break
                yield rec
    if bad:
        import warnings

        warnings.warn(f"{path}: skipped {bad} record(s) that could not be read (torn by a crash or a full disk, "
                      f"or not a record){'; the rest of the file could not be read' if fmt == 'pkl' else ''}. "
                      f"The run's journal still has the values: 'clum SCRIPT --resume --results {path}' "
                      f"writes the file again.", TornRecords, stacklevel=3)


def result_files(path: str) -> list[str]:
    """The results files that ``path`` stands for: itself, or those of a cluf jobs dir."""
    if os.path.isdir(path):
        return sorted(glob.glob(os.path.join(glob.escape(path), "*.results.jsonl"))
                      + glob.glob(os.path.join(glob.escape(path), "*.results.pkl")))
    return [path]


def read_results(*paths: Union[str, Iterable[str]]) -> Iterator[Tuple[int, object]]:
    """Yield ``(position, value)`` in position order, one per position (the last written),
    from results files (``.jsonl`` or ``.pkl``), several of them (the ``--bins`` runs of
    several machines), or a cluf jobs dir.  Records that cannot be read are skipped, with a
    :class:`TornRecords` warning that says how many.  A run's journal may be given too (for a
    run killed before it wrote its results file): it yields the values its records carry, at
    the positions their calls had when they ran (``clum --resume`` checks them against the
    current ``args``; this does not)."""
    files = []
    for p in paths:
        for one in ([p] if isinstance(p, (str, os.PathLike)) else list(p)):
            one = os.fspath(one)
            if not os.path.exists(one):
                raise FileNotFoundError(f"no results file or jobs dir at {one}")
            files += result_files(one)
    values = {}
    for path in files:
        for pos, value in read_records(path):
            values[pos] = value
    for pos in sorted(values):
        yield pos, values[pos]


def write_records(path: str, items: Iterable[Tuple[int, object]]) -> int:
    """Write ``(position, value)`` items to a new results file (for ``cluf --gather``)."""
    encode = encoder(format_of(path))
    n = 0
    with replaced(path, "wb", sync=True) as f:
        for pos, value in items:
            f.write(encode(pos, value))
            n += 1
    return n
