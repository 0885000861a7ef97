"""Writing a journal: the lock that makes one live run per journal, and the writer.

Only one live run may use a journal: it holds an OS lock (``lockf``) on ``PATH.lock`` for as
long as it runs; the lock ends however the process ends (a ``kill -9`` leaves the file, not the
lock).  The file holds the holder's pid, for the message a second run gets; the holder removes
it when it ends, and a run that locked a file that was removed meanwhile locks again.  The
same lock guards a run's results file.

Records are written as results arrive (one ``write`` per round of results, so a killed run loses
none that it had received) and fsync'ed about once a second; a write that fails (a full disk)
stops the run, and only the records that reached the file count.  A torn last line is ended
before anything is appended, so a torn record is never followed by another on its line.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import json
import os
import re
import sys
import time
import zlib
from typing import Any, Callable, Optional, Sequence, Tuple, Union

from ..core.errors import LOCK_WAIT_VAR, UserError
from ..core.files import replaced
from ..core.script import short_repr
from .fingerprints import call_digest, elements_check
from .journal import (FORMAT, HEADER_KEY, FLUSH_SECONDS, IDENTITY_DEFAULTS, JournalState, encode_positions, identify,
                      identity_differences, read)


TB_MAX = 8000  # characters of a failed call's traceback kept in the journal
Warn = Callable[[str], None]  # says something to the user (a warning)
Buffer = Union[bytes, bytearray]  # the bytes of a batch's values (as the worker sent them)
Line = Tuple[Tuple[bytes, ...], int, Optional[Buffer]]  # a line to write: see Journal.lines


KICK_BYTES = 1 << 22  # bytes written to a file between two starts of their writeback (see WriteBehind)


class WriteBehind:
    """Starts the disk writes of what was written to the file ``fd`` from ``start`` on, each time
    KICK_BYTES more were written, without waiting for them: ``posix_fadvise(DONTNEED)`` on the range
    just written makes Linux start writing those dirty pages back (and drop only pages already
    clean: these are not).  The fsync that ends a run of many values then finds them on their way,
    instead of waiting for all of them at the end.  Where there is no such call, nothing."""

    def __init__(self, fd: int, start: int = 0) -> None:
        self.fd = fd
        self.written = self.kicked = start

    def wrote(self, n: int) -> None:
        self.written += n
        if self.written - self.kicked >= KICK_BYTES:
            try:
                os.posix_fadvise(self.fd, self.kicked, self.written - self.kicked, os.POSIX_FADV_DONTNEED)
            except (AttributeError, OSError):  # (not Linux: the fsync does it all, as before)
                pass
            self.kicked = self.written


class JournalWriteError(Exception):
    """Writing the journal failed (a full disk, a lost file server): the run must stop."""

    def __init__(self, path: str, err: OSError, what: str = "the journal") -> None:
        self.path = path
        self.err = err
        self.what = what
        super().__init__(f"cannot write {what} {path}: {err.strerror or err}")


# --- the lock --------------------------------------------------------------------------

_LOCK_TEXT = re.compile(rb"^(clum pid [0-9]+\n)?$")


class JournalLock:
    """An OS lock on ``PATH.lock``, held for as long as a run uses the file at PATH (a journal,
    or a results file).  PATH is taken with its symbolic links resolved, so that one file is one
    lock however it is named.  A ``PATH.lock`` that is not a lock of clum's (empty, or
    ``clum pid N``) is never written or removed: the run stops and names it."""

    fd: Optional[int]

    def __init__(self, journal_path: str, what: str = "journal") -> None:
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

    def _option(self) -> str:
        return "--journal PATH" if self.what == "journal" else "--results PATH"

    def _lock(self, journal_path: str) -> int:
        if os.path.lexists(self.path) and (os.path.islink(self.path) or not os.path.isfile(self.path)):
            raise UserError(f"Cannot lock the {self.what} {journal_path}: {self.path} is not a lock file of clum "
                            f"(it is a {'symbolic link' if os.path.islink(self.path) else 'directory or special file'}), "
                            f"and clum will not touch it. Move it away, or choose another path.")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except IsADirectoryError:
            raise UserError(f"Cannot lock the {self.what} {journal_path}: {self.path} is a directory. "
                            f"Remove it, or choose another path with {self._option()}.") from None
        except OSError as e:
            raise UserError(f"Cannot lock the {self.what} {journal_path}: cannot open {self.path}: "
                            f"{e.strerror}. Choose a writable place with {self._option()}.") from None
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
            self._wait_for(fd, journal_path)
        except OSError as e:
            os.lseek(fd, 0, os.SEEK_SET)
            holder = os.read(fd, 100).decode("ascii", "replace").split()
            os.close(fd)
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise UserError(f"Cannot lock the {self.what} {journal_path}: {e.strerror}. Choose a "
                                f"file system that supports locks with {self._option()}.") from None
            who = f"pid {holder[-1]}" if holder and holder[-1].isdigit() else "another process"
            if self.waited:
                who += f", still after {self.waited:.0f} s"
            if self.what != "journal":
                raise UserError(
                    f"Another clum run ({who}) is using the {self.what} {journal_path}: two runs writing one file "
                    f"would mix their values. Wait for it to end (or stop it), or name another file.") from None
            raise UserError(
                f"Another clum run ({who}) is using the journal {journal_path}: two runs on one journal "
                f"would run calls twice. Wait for it to end (or stop it), or give this run a journal "
                f"of its own with --journal PATH.") from None
        return fd

    waited = 0.0

    def _wait_for(self, fd: int, journal_path: str) -> None:
        """Take the lock at once; in the rerun of a cluf job (``CLUF_LOCK_WAIT`` seconds, see
        core/errors.py) wait that long for the stopped run to let go, saying so once."""
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            try:
                wait = float(os.environ.get(LOCK_WAIT_VAR) or 0)
            except ValueError:
                wait = 0.0
            if wait <= 0:
                raise
        print(f"clum: the {self.what} {journal_path} is locked by another run; this job is a rerun, so that is "
              f"likely its stopped run still ending: waiting up to {wait:.0f} s for it.", file=sys.stderr, flush=True)
        started = time.monotonic()
        while True:
            time.sleep(0.2)
            self.waited = time.monotonic() - started
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                print(f"clum: got the lock on the {self.what} after {self.waited:.1f} s.", file=sys.stderr, flush=True)
                return
            except OSError as e:
                if e.errno not in (errno.EACCES, errno.EAGAIN) or self.waited >= wait:
                    raise

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.path)  # while still holding it (see __init__)
            except OSError:
                pass
            os.close(self.fd)  # closing it releases the lock
            self.fd = None


def _moved_with_its_folder(journal_path: str, recorded_script: Any, script_path: str) -> bool:
    """True when ``journal_path`` is in the ``.cluster_func`` folder beside ``script_path`` and the
    script it records has the same file name: the folder was moved or copied, script and journal
    together (two scripts of one folder cannot share a file name)."""
    if not isinstance(recorded_script, str) or os.path.basename(recorded_script) != os.path.basename(script_path):
        return False
    here = os.path.realpath(os.path.join(os.path.dirname(script_path), ".cluster_func"))
    return os.path.dirname(os.path.realpath(journal_path)) == here


# --- writing ---------------------------------------------------------------------------------

def _check_path(path: str) -> None:
    if os.path.isdir(path):
        raise UserError(f"The journal path {path} is a directory. Give the path of a file with "
                        f"--journal PATH (e.g. --journal {os.path.join(path, 'run.journal')}).")
    if os.path.exists(path) and not os.path.isfile(path):
        raise UserError(f"The journal path {path} is not a regular file. Give another path with --journal PATH.")


def _foreign(path: str, what: str) -> UserError:
    return UserError(f"{path} is not a clum journal ({what}), so clum will not move, overwrite or append "
                     f"to it. Give the run another journal with --journal PATH, or move the file away.")


class Journal:
    """The journal of one run.  Construct it to lock, check and open; ``close`` at the end.

    Writing errors raise :class:`JournalWriteError`; afterwards ``written_calls`` says how many
    completed calls reached the file.
    """

    previous: Optional[JournalState]  # resuming: the journal's records

    def __init__(self, path: str, script_path: str, bins_text: str, mode: str, resume: bool, warn: Warn,
                 identity: Optional[dict[str, Any]] = None, values: Optional[str] = None,
                 results_path: Optional[str] = None) -> None:
        """``results_path``: the results file the values are collected into (with ``values``)."""
        path = os.path.realpath(path)  # a link to a journal is that journal (one lock, one file)
        self.path = path
        self.results_path = results_path
        self.mode = mode
        self.identity = dict(IDENTITY_DEFAULTS, **(identity or {}))
        self.values = values  # "jsonl"/"pkl": completed records carry their calls' values
        self.first_seq = 0  # the sequence number of this run's first completed-calls record
        self.dropped_without_values = 0
        self.lines: list[Line] = []  # (the line's pieces of bytes, completed calls in it, the values it carries or None)
        # called with (the values, their number) of each record once its line is written
        self.on_values: Optional[Callable[[Buffer, int], None]] = None
        self.last_sync = time.monotonic()
        self.written_calls = 0
        self.broken: Optional[JournalWriteError] = None
        self.fd: Optional[int] = None
        self.behind: Optional[WriteBehind] = None  # (with values: a journal of many bytes)
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

    def _open(self, path: str, script_path: str, bins_text: str, mode: str, resume: bool, warn: Warn) -> None:
        self.previous = None
        exists = os.path.exists(path)
        if exists:
            self._check_header(path, script_path, bins_text, mode, resume, warn)
            if resume:
                self._read_previous(path, warn)
            else:
                self._start_over(path, warn)
                exists = False
        self._begin(path, exists, script_path, bins_text, mode, resume)

    def _check_header(self, path: str, script_path: str, bins_text: str, mode: str, resume: bool,
                      warn: Optional[Warn] = None) -> None:
        """The journal at ``path`` is a clum journal of this script (and, to resume from it, of this
        run's options, format and bins); a UserError says why not.  A default journal
        (``.cluster_func/`` beside the script) that names a script of the same file name elsewhere
        moved with its folder (copied, renamed, brought back from a cluster): it is this script's."""
        try:
            fmt, header = identify(path)
        except OSError as e:
            raise UserError(f"Cannot read the journal {path}: {e.strerror}. Choose another "
                            f"journal with --journal PATH.") from None
        if fmt is None:
            raise _foreign(path, "its first line is not a journal header")
        if fmt >= 2 and header.get("script") not in (None, script_path) and _moved_with_its_folder(
                path, header.get("script"), script_path):
            if warn is not None:
                warn(f"the journal {path} was written for {header.get('script')}; this script is "
                     f"{script_path}, in the same folder as the journal: taken as its journal (the folder moved).")
            header = dict(header, script=script_path)
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
                    f"The journal {path} is of format {fmt}, written by "
                    f"{'an earlier' if fmt < FORMAT else 'a later (or unknown)'} cluster-func (this one writes "
                    f"format {FORMAT}), which this one cannot resume from safely. Run without --resume to start over (the old "
                    f"journal is kept as {path}.prev).")
            if header.get("bins") != bins_text or header.get("mode") != mode:
                raise UserError(
                    f"The journal {path} is of a run with bins {header.get('bins')} and {header.get('mode')} "
                    f"binning, but this run has bins {bins_text} and {mode} binning: its records do not "
                    f"apply. Resume with the same --bins/--hash/--key, or use another --journal.")

    def _read_previous(self, path: str, warn: Warn) -> None:
        """Resuming: the journal's records (``previous``), those without this run's values left out."""
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

    def _start_over(self, path: str, warn: Warn) -> None:
        """Not resuming: say what the last run left undone, and keep its journal as ``path``.prev."""
        prev = read(path)
        if prev.last_status is None or prev.last_failed:
            state = "did not finish" if prev.last_status is None else "finished with failed calls"
            counts = ", ".join(filter(None, [f"{prev.last_done} calls completed" if prev.last_done else "",
                                             f"{len(prev.last_failed)} failed" if prev.last_failed else ""]))
            skips = "; --resume skips the completed ones" if prev.completed_total else ""
            warn(f"starting over: the last run {state}" + (f" ({counts}{skips})" if counts or skips else "")
                 + f"; its journal is kept as {path}.prev.")
        self._keep_previous(path)

    def _begin(self, path: str, exists: bool, script_path: str, bins_text: str, mode: str, resume: bool) -> None:
        """Open the journal to append to it (``exists``) or create it with its header, then write
        and flush this run's start record."""
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
        if self.values is not None and self.fd is not None:
            self.behind = WriteBehind(self.fd, os.fstat(self.fd).st_size)
        start = {"t": "start", "time": round(time.time(), 3), "pid": os.getpid(), "resume": bool(resume)}
        if self.results_path is not None:  # relative to the journal's folder: it holds in a copy of the folder
            start["results"] = os.path.relpath(os.path.realpath(self.results_path), os.path.dirname(path))
        self._add(json.dumps(start, separators=(",", ":")))
        try:
            self.flush()
        except JournalWriteError as e:
            raise _write_failed(UserError(f"{e}. Free some space or choose another place with --journal PATH."),
                                e.err) from None

    def _keep_previous(self, path: str) -> None:
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

    def _create(self, path: str, header: dict[str, Any]) -> None:
        """A new journal appears with its header, whole, or not at all."""
        with replaced(path, "wb") as f:
            f.write((json.dumps(header, separators=(",", ":")) + "\n").encode("utf-8", "surrogatepass"))
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    # --- records ---
    def _add(self, text: str, calls: int = 0) -> None:
        self.lines.append(((text.encode("utf-8", "surrogatepass"),), calls, None))

    def completed(self, positions: Sequence[int], elements: Sequence[Any], check: Optional[str] = None,
                  digests: Optional[bytes] = None, values: Optional[Buffer] = None,
                  values_crc: Optional[int] = None) -> None:
        """Calls at ``positions`` (holding ``elements``) completed.  From the worker: ``check``,
        its content check when they are a whole batch as sent; ``digests``, per call, if any;
        ``values``, the results-file bytes of their values (when the run collects them), and
        their CRC-32 (``values_crc``; computed here when None)."""
        rec = {"t": "ok", "pos": encode_positions(positions)}
        if self.mode == "round-robin":
            rec["c"] = check or elements_check(elements)
        elif digests is None:
            digests = b"".join(call_digest(e) for e in elements)
        if digests is not None:
            rec["d"] = digests.hex()
        if self.values is None:
            self._add(json.dumps(rec, separators=(",", ":")), len(elements))
            return
        values = values or b""
        rec["f"] = self.values
        # a value damaged on disk is a torn record, never a wrong value
        rec["vc"] = f"{zlib.crc32(values) if values_crc is None else values_crc:08x}"
        # "v" last, as json.dumps would write it, but spliced in: base64 needs no escaping, and
        # json.dumps would scan the whole (large) string for characters to escape
        text = json.dumps(rec, separators=(",", ":")).encode("utf-8", "surrogatepass")
        self.lines.append(((text[:-1], b',"v":"', base64.b64encode(values), b'"}'), len(elements), values))

    def exported(self, path: str, st: os.stat_result, crc: Optional[int] = None, sha256: Optional[str] = None) -> None:
        """The run wrote its results file: ``st`` is its os.stat, ``crc`` the CRC-32 of its bytes (so
        that cluf --gather knows them whole) and ``sha256`` their digest (so a later run knows the
        file is its own, where it is, or wherever it was copied)."""
        rec = {"t": "results", "path": path, "ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if crc is not None:
            rec["crc"] = f"{crc:08x}"
        if sha256 is not None:
            rec["sha256"] = sha256
        self._add(json.dumps(rec, separators=(",", ":")))

    def failed(self, position: int, element: Any, attempt: int, exc_type: str, message: Any, final: bool,
               tb: Optional[str] = None) -> None:
        rec = {"t": "fail", "pos": position, "attempt": attempt, "final": final,
               "type": exc_type, "msg": str(message)[:2000], "args": short_repr(element, 300)}
        if final and tb:  # the traceback of a final failure, for cluster_func.Run.results()'s MapError
            rec["tb"] = tb if len(tb) <= TB_MAX else tb[:TB_MAX // 4] + "\n...\n" + tb[-(TB_MAX * 3 // 4):]
        self._add(json.dumps(rec, separators=(",", ":")))

    def maybe_flush(self, now: float) -> None:
        """Write what is pending (one write: it survives the process being killed);
        fsync at most once every FLUSH_SECONDS (so a power loss loses at most that)."""
        if self.lines:
            self.flush(sync=now - self.last_sync >= FLUSH_SECONDS)

    def flush(self, sync: bool = True) -> None:
        if self.broken is not None:
            raise self.broken
        fd = self.fd
        assert fd is not None, "the journal is closed"
        if self.lines:
            lines, self.lines = self.lines, []
            pieces: list[bytes] = []  # (written with writev: a line's values are not copied into one string first)
            for line, _, _ in lines:
                pieces += line
                pieces.append(b"\n")
            try:
                written = _write_all(fd, pieces)
            except _PartialWrite as e:
                self._count_written(lines, e.written)
                self.broken = JournalWriteError(self.path, e.err)
                raise self.broken from None
            self.written_calls += sum(n for _, n, _ in lines)
            if self.behind is not None:
                self.behind.wrote(written)
            if self.on_values is not None:  # (the export, written as the run goes: see results.Results)
                for _, n, values in lines:
                    if values:
                        self.on_values(values, n)
        if sync:
            self.last_sync = time.monotonic()
            try:
                os.fsync(fd)
            except OSError as e:
                if e.errno in (errno.EINVAL, errno.EROFS):  # cannot be synced (a pipe, /dev/null)
                    return
                self.broken = JournalWriteError(self.path, e)
                raise self.broken from None

    def _count_written(self, lines: list[Line], nbytes: int) -> None:
        """Count the calls of the lines that reached the file whole before a write failed."""
        end = 0
        for line, n, _ in lines:
            end += sum(map(len, line)) + 1
            if end > nbytes:
                break
            self.written_calls += n

    def close(self, done: int, failed: int, status: str) -> None:
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
    def __init__(self, written: int, err: OSError) -> None:
        self.written = written
        self.err = err


_IOV_MAX = 1024  # pieces a writev takes at most (Linux's IOV_MAX)


def _write_all(fd: int, pieces: Sequence[bytes]) -> int:
    """Write the pieces of bytes in order (small ones joined first, so that the usual round is one
    write); _PartialWrite says how many bytes reached the file when a write fails."""
    if len(pieces) > 2 and sum(map(len, pieces)) < 1 << 16:
        pieces = [b"".join(pieces)]
    views = [memoryview(p) for p in pieces if p]
    done, i = 0, 0
    while i < len(views):
        try:
            n = os.writev(fd, views[i:i + _IOV_MAX])
        except OSError as e:
            raise _PartialWrite(done, e) from None
        done += n
        while i < len(views) and n >= len(views[i]):
            n -= len(views[i])
            i += 1
        if n:
            views[i] = views[i][n:]
    return done
