"""The workers' own output, carried to the terminal that shows the progress line.

The progress line is redrawn in place on the terminal (stderr).  Workers that wrote straight
to that terminal would mix their text into it (``ETA 0:01processed item 14``), and nothing can
clear a line before another process writes.  So while the progress line is shown, the workers'
stdout (when it is that terminal too) and stderr are a pseudo-terminal whose other end the
runner reads: it clears the progress line, writes what came, and draws the line again only
when the terminal is at the start of a line.  A pseudo-terminal rather than a pipe, so that
the target still sees a terminal (``isatty()``, colours, its width, line buffering).

When stderr is not a terminal, or with ``--quiet``, none of this happens: the workers write
straight to the inherited stdout and stderr.
"""

from __future__ import annotations

import fcntl
import os
import pty
import termios
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    from .reporter import Reporter


def shared_fds(stream: Any) -> list[int]:
    """Of fds 1 and 2, those that are the same terminal as ``stream`` (the progress line's)."""
    try:
        ref = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return []
    out = []
    for fd in (1, 2):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if os.isatty(fd) and (st.st_dev, st.st_ino, st.st_rdev) == (ref.st_dev, ref.st_ino, ref.st_rdev):
            out.append(fd)
    return out


class Relay:
    """A pseudo-terminal for the workers' fds ``fds``; :meth:`pump` hands what they wrote to
    ``reporter.passthrough``."""

    def __init__(self, reporter: Reporter, fds: Iterable[int]) -> None:
        self.reporter = reporter
        self.fds = tuple(fds)
        self.master, slave = pty.openpty()
        try:  # bytes pass unchanged (no \n -> \r\n), and the target sees the terminal's size
            attrs = termios.tcgetattr(slave)
            attrs[1] &= ~termios.OPOST
            termios.tcsetattr(slave, termios.TCSANOW, attrs)
            size = fcntl.ioctl(reporter.stream.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(slave, termios.TIOCSWINSZ, size)
        except (OSError, ValueError, AttributeError):
            pass
        os.set_blocking(self.master, False)
        # A Connection, so that it reaches spawned workers too (duplicated as they start).
        self.slave = Connection(slave, readable=False)

    def wrap(self, source: Any) -> Relayed:
        """The workers' ``source`` (see runner.Runner), which first points their fds here."""
        return Relayed(source, self.slave, self.fds, self.master)

    def pump(self) -> None:
        """Pass on what the workers wrote, without waiting."""
        while True:
            try:
                data = os.read(self.master, 1 << 16)
            except OSError:  # nothing more now (EAGAIN), or no writer left (EIO)
                return
            if not data:
                return
            self.reporter.passthrough(data)

    def close(self) -> None:
        self.pump()
        self.slave.close()
        os.close(self.master)


class Relayed:
    """A worker's source whose ``load()`` first points the worker's fds at the relay."""

    def __init__(self, source: Any, slave: Connection, fds: tuple[int, ...], master: int | None) -> None:
        self.source, self.slave, self.fds, self.master = source, slave, fds, master

    def __getstate__(self) -> dict:  # pickled for a spawned worker: the runner's master fd means nothing there
        return {**self.__dict__, "master": None}

    def load(self) -> tuple[Callable[..., Any], Callable[[], Any] | None]:
        for fd in self.fds:
            os.dup2(self.slave.fileno(), fd)
        self.slave.close()
        if self.master is not None:  # forked: the runner's end is not the worker's
            try:
                os.close(self.master)
            except OSError:
                pass
        return self.source.load()
