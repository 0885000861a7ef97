"""The manifest's locks: a whole rewrite of the manifest (:func:`manifest_lock`), a change of one
bin (:func:`bin_lock`), and the one cluf submitting into a run (:func:`submitting`); why each is
what it is: manifest.py's docstring."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
from typing import Iterator, Optional

from ..core.errors import UserError


def _lock(path: str, kind: int, start: int) -> int:
    lock = path + ".lock"
    try:  # never through a symbolic link: cluf makes none here
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        from .manifest import ManifestError

        what = {errno.ELOOP: "is a symbolic link", errno.EISDIR: "is a directory"}.get(
            e.errno or 0, f"cannot be opened ({e.strerror or e})")
        raise ManifestError(f"The lock file of the cluf manifest {path}, {lock}, {what}, so cluf cannot change the "
                            f"manifest. Move it away when no cluf is working on this run (cluf makes a new one), or "
                            f"fix its permissions, or run cluf as the user who submitted the run.") from None
    try:
        fcntl.lockf(fd, kind, 1, start)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def manifest_lock(path: str) -> Iterator[None]:
    """The exclusive lock of a whole read-change-write of the manifest: lockf on byte 0 of
    PATH.lock (:func:`bin_lock` holds it shared)."""
    fd = _lock(path, fcntl.LOCK_EX, 0)
    try:
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def bin_lock(path: str, i: int, count: int = 1) -> Iterator[None]:
    """The lock of a change to bin i alone (or to the ``count`` bins from i): byte 0 of
    PATH.lock shared (no whole rewrite meanwhile), byte 1 + i (to 1 + i + count - 1) exclusive
    (one change of this bin at a time).  Bins do not wait for each other."""
    fd = _lock(path, fcntl.LOCK_SH, 0)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX, count, 1 + i)
        yield
    finally:
        os.close(fd)  # (releases both)


SUBMITTING_SUFFIX = ".submitting"
_SUBMITTING_TEXT = re.compile(rb"\A(cluf pid \d+\n)?\Z")


@contextlib.contextmanager
def submitting(path: str) -> Iterator[None]:
    """Held by the one cluf submitting into the manifest at PATH (see the module docstring);
    a second is refused with a UserError naming the first's pid."""
    lock = path + SUBMITTING_SUFFIX
    folder = os.path.dirname(path) or "."
    if os.path.lexists(lock) and (os.path.islink(lock) or not os.path.isfile(lock)):
        raise UserError(f"{lock} is not a lock file of cluf (it is a symbolic link, a directory or a special "
                        f"file), and cluf will not touch it. Move it away, or write the jobs elsewhere with -j DIR.")
    fd = _open_submitting(lock, folder)
    if fd is None:  # cannot even create it: writing the job scripts there fails next, and says so
        yield
        return
    try:
        try:
            text = os.pread(fd, 200, 0)
        except OSError:
            text = b""
        if not _SUBMITTING_TEXT.match(text):
            raise UserError(f"{lock} exists and is not a lock file of cluf (it holds other text), so cluf will "
                            f"neither overwrite nor remove it. Move it away, or write the jobs elsewhere with -j DIR.")
        held = _try_lock(fd)
        if held is False:
            words = text.decode("ascii", "replace").split()
            who = f"cluf pid {words[-1]}" if words and words[-1].isdigit() else "another cluf"
            raise UserError(f"Another cluf ({who}) is submitting into {folder} right now (it holds {lock}). "
                            f"Submitting the same bins beside it would run their calls twice. Wait for it to "
                            f"end, then see what it submitted with 'cluf --status {folder}'; or write this run's "
                            f"jobs elsewhere with -j DIR.")
        if held:
            try:  # the pid is for the message a second cluf gets: a full disk does not stop us here
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"cluf pid {os.getpid()}\n".encode(), 0)
            except OSError:
                pass
        yield
    finally:
        os.close(fd)


def _open_submitting(lock: str, folder: str) -> Optional[int]:
    try:
        os.makedirs(folder, exist_ok=True)
        return os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EISDIR):
            raise UserError(f"{lock} is not a lock file of cluf, and cluf will not touch it. Move it away, or "
                            f"write the jobs elsewhere with -j DIR.") from None
        return None


def _try_lock(fd: int) -> Optional[bool]:
    """True: locked; False: another process holds it; None: this file system has no locks."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        return True
    except OSError as e:
        return False if e.errno in (errno.EACCES, errno.EAGAIN) else None
