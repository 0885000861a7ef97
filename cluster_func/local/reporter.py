"""What a run says on the terminal: failures, messages, warnings and the progress line.

The runner calls the reporter; the reporter never calls back.  The progress line is drawn
only on a terminal and is always cleared before anything else is written to it, the workers'
own output included (it reaches the terminal through :meth:`Reporter.passthrough`, see
relay.py); it is drawn only when that output has left the terminal at the start of a line.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any

from ..core.errors import warner  # noqa: F401 (re-exported for clum's modules)
from ..core.script import short_repr

if TYPE_CHECKING:
    from .accounting import Outcome


def in_jupyter(stream: Any) -> bool:
    """Is ``stream`` a Jupyter kernel's output stream (shown in the notebook)?"""
    return "ipykernel" in sys.modules and type(stream).__module__.startswith("ipykernel")


def again_options(opts: dict, spec: Any, journal_path: str) -> list[str]:
    """The options of a clum command that runs this run again (for the commands a run advises):
    every one that shapes it: which calls (bins, binning, target, args), where it records them
    (journal, results file) and how a call fails (retries, timeout).  The script's own arguments
    (after ``--``) are for the caller to put last."""
    from ..core import bins

    words = (["--bins", str(spec)] if opts.get("bins") else []) \
        + (["-x", bins.format_positions(opts["hash"])] if opts.get("hash") is not None else []) \
        + (["-k", str(opts["key"])] if opts.get("key") is not None else []) \
        + (["-t", opts["target"]] if opts.get("target", "target") != "target" else []) \
        + (["-a", opts["args"]] if opts.get("args", "args") != "args" else []) \
        + (["--journal", journal_path] if opts.get("journal") else []) \
        + (["--results", opts["results"]] if opts.get("results") else []) \
        + (["--retries", str(opts["retries"])] if opts.get("retries") else []) \
        + (["--timeout", f"{opts['timeout']:g}"] if opts.get("timeout") else [])
    return words


class Reporter:
    """Prints failures and the progress line; the runner calls it, never the other way.

    A flood of failures stays readable: the first ``FULL`` failed calls are printed with their
    traceback, the next ones up to ``BRIEF`` with one line each, the rest only counted;
    :meth:`failure_summary` groups them all by exception type.  (``--failed`` lists every one.)
    """

    FULL = 5
    BRIEF = 50

    def __init__(self, stream: Any = None, progress: bool = True, total: int | None = None, prog: str = "clum") -> None:
        self.stream = stream or sys.stderr
        self.terminal = hasattr(self.stream, "isatty") and self.stream.isatty()
        # Jupyter redraws a line ending in \r as a terminal does: the progress line shows there too
        # (without the relay of the workers' output, whose fds are the kernel's, not the notebook's).
        self.progress = progress and (self.terminal or in_jupyter(self.stream))
        self.total = total
        self.prog = prog
        self.failed_hint: str | None = None  # e.g. "'clum s.py --failed' lists them all"
        self._last = 0.0
        self._shown = False
        self._line_open = False  # the workers' output ended mid-line: no progress line now
        self.failures = 0  # final failures reported
        self.retries_noted = 0
        self.by_type: dict[str, list[int]] = {}  # exception type name -> [count, first (lowest) position]

    def _clear(self) -> None:
        if self._shown:
            self.stream.write("\r\033[K")
            self._shown = False
        elif self._line_open:  # our own text starts on a line of its own
            self.stream.write("\n")
            self._line_open = False

    def passthrough(self, data: bytes) -> None:
        """The workers' own output (through the relay): clear the progress line, write it."""
        if self._shown:
            self.stream.write("\r\033[K")
            self._shown = False
        self.stream.flush()
        try:
            fd = self.stream.fileno()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except (OSError, ValueError):
            return  # the terminal is gone
        self._line_open = not data.endswith(b"\n")

    def failure(self, position: int, element: Any, exc_type: str, message: Any, tb: str, attempt: int = 0,
                will_retry: bool = False) -> None:
        what = f"call at position {position} with args {short_repr(element)}"
        if will_retry:
            self.retries_noted += 1
            if self.retries_noted <= self.BRIEF:
                self._write(f"{self.prog}: {what} failed ({exc_type}: {_one_line(message)}); trying again "
                            f"(attempt {attempt + 2}).\n")
            elif self.retries_noted == self.BRIEF + 1:
                self._write(f"{self.prog}: more calls are being retried; not listed one by one.\n")
            return
        self.failures += 1
        group = self.by_type.setdefault(exc_type, [0, position])
        group[0] += 1
        group[1] = min(group[1], position)
        tries = f" (after {attempt + 1} attempts)" if attempt else ""
        if self.failures <= self.FULL:
            self._write(f"{self.prog}: {what} failed{tries}:\n{tb.rstrip()}\n")
        elif self.failures <= self.BRIEF:
            self._write(f"{self.prog}: {what} failed{tries}: {exc_type}: {_one_line(message)}\n")
        elif self.failures == self.BRIEF + 1:
            hint = f"; {self.failed_hint}" if self.failed_hint else ""
            self._write(f"{self.prog}: more than {self.BRIEF} calls failed: the others are only counted "
                        f"(the summary at the end groups them by type{hint}).\n")

    def failure_summary(self, limit: int = 5) -> str:
        """'980 ValueError (first at position 3), 20 KeyError (first at position 0)', most first."""
        groups = sorted(self.by_type.items(), key=lambda kv: (-kv[1][0], kv[1][1]))
        parts = [f"{n} {name} (first at position {first})" for name, (n, first) in groups[:limit]]
        rest = sum(n for _, (n, _) in groups[limit:])
        if rest:
            parts.append(f"{rest} of {len(groups) - limit} other types")
        text = ", ".join(parts)
        if "BrokenPipeError" in self.by_type:
            text += (". BrokenPipeError: the target wrote to a pipe whose reader had exited (as in "
                     "'clum s.py | head'); redirect the output to a file instead")
        return text

    def _write(self, text: str) -> None:
        self._clear()
        self.stream.write(text)
        self.stream.flush()

    def message(self, text: str) -> None:
        self._clear()
        self.stream.write(f"{self.prog}: {text}\n")
        self.stream.flush()

    def tick(self, outcome: Outcome, force: bool = False) -> None:
        if not self.progress or self._line_open:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        elapsed = now - outcome.started
        n = outcome.total
        rate = n / elapsed if elapsed > 0 else 0.0
        line = f"{self.prog}: {outcome.done} done, {outcome.failed} failed"
        if self.total is not None:
            line += f" of {self.total}"
        line += f", {rate:,.1f}/s, elapsed {_hms(elapsed)}"
        if self.total and rate > 0 and n < self.total:
            line += f", ETA {_hms((self.total - n) / rate)}"
        self.stream.write("\r\033[K" + line)
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        self._clear()
        self.stream.flush()


def _one_line(message: Any, limit: int = 200) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
