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

Each format is one class in :mod:`cluster_func.record.formats` (a new format is one new file).

Where the values live.  Workers turn values into records (the main process only moves bytes
and never holds a value); the records of a batch travel inside the journal record that says
the batch completed (see :mod:`cluster_func.record.journal`): one writer, one write, one lock, one
torn-record rule, so a call counts as completed exactly when its value is in the journal.  The
results file is an export of the journal, written whole (a temporary file fsync'ed and renamed
over it) when the run ends, however it ends short of ``kill -9`` (the temporary file is unnamed
and fills as the journal's records are written: :class:`_LiveExport`): this run's values and the
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
import os
import pickle
import zlib
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

from ..core.errors import UserError
from ..core.files import replaced
from . import formats
from .formats import ValueNotWritable  # noqa: F401 - where it has always been found
from .formats.base import Report

if TYPE_CHECKING:
    from .resume import Kept
    from .writer import Buffer, Journal, JournalLock

FORMATS = tuple(formats.extensions())


def format_of(path: str) -> str:
    fmt = formats.of_path(path)
    if fmt is None:
        raise UserError(f"--results {path}: the file name must end in .jsonl (JSON Lines, one "
                        f"{{\"pos\": N, \"value\": ...}} a line) or .pkl (pickled (pos, value) records, for "
                        f"values JSON cannot hold). Example: --results scores.jsonl")
    return fmt.name


# --- in the worker ---------------------------------------------------------------------

# pack(positions, values, failed, report): a batch's records at once (see Encoder)
Pack = Callable[[Sequence[int], List[Any], Sequence[int], Optional[Report]], bytes]


class Encoder:
    """(position, value) -> the bytes of one record; ``pack(positions, values, failed, report)``
    makes a batch's records at once (see worker.run_batches).  ``checked``: the journal carries
    the records, with their CRC-32 (which the worker computes, beside the records)."""

    def __init__(self, encode: Callable[[int, Any], bytes], pack: Pack, checked: bool = False) -> None:
        self.encode = encode
        self.pack = pack
        self.checked = checked

    def __call__(self, pos: int, value: Any) -> bytes:
        return self.encode(pos, value)


def encoder(fmt: str) -> Encoder:
    """The workers' :class:`Encoder` of the format ``fmt`` (or of ``values``: see value_encoder)."""
    if fmt == "values":  # cluster_func.map without a file: the values go to the caller in memory
        return value_encoder()
    form = formats.get(fmt)

    def pack(positions: Sequence[int], values: List[Any], failed: Sequence[int],
             report: Optional[Report] = None) -> bytes:
        return form.encode_batch(positions, values, failed, report)

    return Encoder(form.encode, pack, checked=True)


def pack_values(positions: Sequence[int], values: List[Any], failed: Sequence[int],
                report: Optional[Report] = None) -> bytes:
    """A batch's values as one pickle of ``(positions, values, bad)``: ``positions`` is the
    first position when they run on by one (the usual case, so that this process stores the
    values with one slice assignment), else the list of them; ``bad`` lists ``(position, type
    name, error)`` for the values that cannot be pickled (None at their place in ``values``):
    those calls fail.  ``values`` holds one value per call started, None for a failed call
    (``failed`` has their indices), which is left out.  (``report`` is for the file formats' packs.)"""
    if not values:
        return b""
    n = len(values)
    where: Union[int, Tuple[int, ...]]
    if failed or type(positions) is not range or positions.step != 1:
        gone = set(failed)
        keep = [k for k in range(n) if k not in gone]
        kept_at = [positions[k] for k in keep]
        values = [values[k] for k in keep]
        if not kept_at:
            return b""
        if kept_at != list(range(kept_at[0], kept_at[0] + len(kept_at))):
            where = tuple(kept_at)
        else:
            where = kept_at[0]
    else:
        where = positions[0]
    try:
        return pickle.dumps((where, values, None), 4)
    except Exception:  # noqa: BLE001 - find the values that cannot travel; the others do
        kept, bad = [], []
        pos = range(where, where + len(values)) if isinstance(where, int) else where
        for p, value in zip(pos, values):
            try:
                pickle.dumps(value, 4)
                kept.append(value)
            except Exception as e:  # noqa: BLE001
                kept.append(None)
                bad.append((p, type(value).__qualname__, f"{type(e).__name__}: {e}"))
        return pickle.dumps((where, kept, bad), 4)


def value_encoder() -> Encoder:
    """The workers' encoder for the ``values`` format (cluster_func.map without a journal): the worker hands it
    a batch's values whole (``pack``, see worker.run_batches), which travel as one pickle."""
    def encode(pos: int, value: Any) -> bytes:  # (one call at a time: not used by the worker, which uses pack)
        return pickle.dumps((pos, value), 4)

    return Encoder(encode, pack_values)



# --- in the main process -----------------------------------------------------------------

def _stat_key(st: os.stat_result) -> Tuple[int, int, int]:
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


def _journals(journal_path: str) -> List[str]:
    return [p for p in (journal_path, journal_path + ".prev") if os.path.isfile(p)]


def _exports(journal_path: str) -> List[Dict[str, Any]]:
    """The "results" records of the journal at ``journal_path`` (and its ``.prev``): the results
    files its runs wrote."""
    from . import journal as journal_mod

    found: List[Dict[str, Any]] = []
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
    form = formats.get(fmt)
    mine: Dict[int, Set[bytes]] = collections.defaultdict(set)
    for jpath in _journals(journal_path):
        try:
            for _, rec in journal_mod.ok_records(jpath):
                if rec.get("f") == fmt:
                    for pos, item in form.split(journal_mod.record_values(rec)):
                        mine[pos].add(item)
        except (OSError, ValueError):
            continue
    if not mine:
        return False
    seen = 0
    for found in form.records_of_file(data):
        if found is None:
            continue  # a torn record
        pos, item = found
        if type(pos) is not int or item not in mine.get(pos, ()):
            return False
        seen += 1
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


def collected_into(journal_path: str) -> Optional[str]:
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

    lock: Optional[JournalLock]

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

    def start(self, journal: Optional[Journal] = None) -> None:
        """A new run (not --resume): keep the previous file as PATH.prev, so that a run killed
        before its export leaves no values of another run under the name.  With the run's
        ``journal``, the export is written as the run goes (see :class:`_LiveExport`)."""
        if not self.resume and os.path.lexists(self.path):
            try:
                os.replace(self.path, self.path + ".prev")
            except OSError as e:
                raise UserError(f"Cannot move the previous results {self.given} to {self.given}.prev: "
                                f"{e.strerror}. Name another file with --results PATH.") from None
        if journal is not None:
            self.live = _LiveExport.open(os.path.dirname(self.path))
            if self.live is not None:
                journal.on_values = self.live.write

    live: Optional[_LiveExport] = None

    def export(self, journal: Journal, kept: Optional[Kept]) -> int:
        """Write the file whole: this run's values and those its resume kept.  Returns the number
        of values.  OSError (a full disk) leaves the previous file as it was."""
        journal.flush()  # (the last values reach the live export too)
        live, self.live = self.live, None
        journal.on_values = None
        if live is not None:
            try:
                if live.error is None:
                    n = self._export_live(live, journal, kept)
                    if n is not None:
                        return n
            finally:
                live.close()
        return self._export_from_journal(journal, kept)

    def _export_live(self, live: _LiveExport, journal: Journal, kept: Optional[Kept]) -> Optional[int]:
        """Put the live export in place, the values a resume kept added (read from the journal's
        earlier records); None when it cannot be named (then the export is made from the journal)."""
        from ..core.errors import signals_held

        with signals_held():
            n = live.count
            if kept is not None:
                n += export(journal.path, self.format, journal.first_seq, kept, live.write, this_run=False)
            if live.error is not None:
                raise live.error
            fd = live.fd
            assert fd is not None  # (closed only by an error, raised just above)
            os.fsync(fd)
            tmp = live.link(self.path)
            if tmp is None:
                return None
            try:  # the record reaches the journal before the file is renamed into place (see below)
                journal.exported(self.path, os.fstat(fd), live.crc, live.digest.hexdigest())
                journal.flush()
                os.replace(tmp, self.path)
            except BaseException:
                _unlink(tmp)
                raise
        return n

    def _export_from_journal(self, journal: Journal, kept: Optional[Kept]) -> int:
        """Write the file whole from the journal's records (when it could not be written as the run went)."""
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
        if self.live is not None:
            self.live.close()
            self.live = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class _LiveExport:
    """The export, written as the run goes: an unnamed file (``O_TMPFILE``) in the results file's
    folder, to which the journal hands the values of each record once its line is written (so it
    holds exactly this run's values that the journal holds), and the sha256 and CRC-32 of what it
    holds.  At the end it gets a name and is renamed over PATH, as the export from the journal
    would be; a run killed before leaves nothing behind.  A write that fails (a full disk) is
    noted, the file dropped, and the export is then made from the journal at the end."""

    fd: Optional[int]

    def __init__(self, fd: int) -> None:
        import hashlib

        from .writer import WriteBehind

        self.fd = fd
        self.behind = WriteBehind(fd)  # (its fsync at the end finds the values on their way to the disk)
        self.digest = hashlib.sha256()
        self.crc = 0
        self.count = 0  # the values written
        self.error: Optional[OSError] = None

    @classmethod
    def open(cls, folder: str) -> Optional[_LiveExport]:
        """None where the file system (or the OS) has no unnamed files."""
        try:
            return cls(os.open(folder or ".", os.O_TMPFILE | os.O_WRONLY, 0o666))
        except (AttributeError, OSError):
            return None

    def write(self, data: Buffer, count: Optional[int] = None) -> None:
        """Add a record's values (``count`` of them; counted from the data when not given)."""
        if self.fd is None:
            return
        try:
            view, done = memoryview(data), 0
            while done < len(data):
                done += os.write(self.fd, view[done:])
        except OSError as e:
            self.error = e
            self.close()
            return
        self.behind.wrote(len(data))
        self.digest.update(data)
        self.crc = zlib.crc32(data, self.crc)
        self.count += count if count is not None else 0

    def link(self, path: str) -> Optional[str]:
        """Give the file a temporary name beside ``path``; that name, or None when it cannot be named."""
        tmp = f"{path}.tmp-{os.getpid()}"
        _unlink(tmp)
        try:  # linkat(AT_SYMLINK_FOLLOW), which a dir fd makes os.link use: the file, not /proc's link
            folder = os.open(os.path.dirname(tmp) or ".", os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.link(f"/proc/self/fd/{self.fd}", os.path.basename(tmp), dst_dir_fd=folder)
            finally:
                os.close(folder)
        except OSError:
            return None
        return tmp

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _split(data: bytes, fmt: str) -> Iterator[Tuple[int, bytes]]:
    """(position, record bytes) of each record of results-file bytes."""
    return formats.get(fmt).split(data)


def export(journal_path: str, fmt: str, first_seq: int, kept: Optional[Kept], write: Callable[[bytes], None],
           this_run: bool = True) -> int:
    """Write, with ``write``, the results-file records of the values that the journal's records
    of format ``fmt`` carry: every record from ``first_seq`` on (this run's; not with
    ``this_run`` false: their values are written already), and of the earlier ones what
    ``kept`` (a journal.Kept, or None) says a resume kept, at the positions it says.  Returns
    the number of records written."""
    from . import journal as journal_mod

    n = 0
    form = formats.get(fmt)
    pending = {d: collections.deque(ps) for d, ps in kept.by_digest.items()} if kept is not None else {}
    for seq, rec in journal_mod.ok_records(journal_path):
        if seq >= first_seq and not this_run:
            break
        if rec.get("f") != fmt:
            continue
        if seq >= first_seq or (kept is not None and seq in kept.whole):
            data = journal_mod.record_values(rec)
            write(data)
            n += sum(run[1] for run in rec["pos"])
            continue
        if kept is None:
            continue
        some = kept.some.get(seq)
        if some:
            for pos, item in form.split(journal_mod.record_values(rec)):
                if pos in some:
                    write(item)
                    n += 1
        elif pending and rec.get("d"):
            d = bytes.fromhex(rec["d"])
            for k, (pos, item) in enumerate(form.split(journal_mod.record_values(rec))):
                q = pending.get(d[8 * k:8 * k + 8])
                if q:
                    write(form.moved(item, q.popleft()))
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
            yield from formats.get(rec["f"]).decode(data)


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
    form = formats.get(format_of(path[:-len(".prev")] if path.endswith(".prev") else path))
    bad = 0
    with open(path, "rb") as f:
        for rec in form.read(f):
            if rec is None:
                bad += 1
            else:
                yield rec
    if bad:
        import warnings

        warnings.warn(f"{path}: skipped {bad} record(s) that could not be read (torn by a crash or a full disk, "
                      f"or not a record){'; the rest of the file could not be read' if form.unframed_after_torn else ''}. "
                      f"The run's journal still has the values: 'clum SCRIPT --resume --results {path}' "
                      f"writes the file again.", TornRecords, stacklevel=3)


def result_files(path: str) -> List[str]:
    """The results files that ``path`` stands for: itself, or those of a cluf jobs dir."""
    if os.path.isdir(path):
        return sorted(p for ext in formats.extensions() for p in glob.glob(os.path.join(glob.escape(path), "*.results" + ext)))
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
