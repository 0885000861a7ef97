"""What a run says on the terminal: failures, messages, warnings and the progress line.

The runner calls the reporter; the reporter never calls back.  The progress line is drawn
only on a terminal and is always cleared before anything else is written to it.
"""

import sys
import time

from .script import short_repr


def warner(prog):
    """A function that prints ``prog: warning: TEXT`` on stderr."""
    def warn(text):
        sys.stderr.write(f"{prog}: warning: {text}\n")
    return warn


class Reporter:
    """Prints failures and the progress line; the runner calls it, never the other way."""

    def __init__(self, stream=None, progress=True, total=None, prog="clum"):
        self.stream = stream or sys.stderr
        self.progress = progress and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.total = total
        self.prog = prog
        self._last = 0.0
        self._shown = False

    def _clear(self):
        if self._shown:
            self.stream.write("\r\033[K")
            self._shown = False

    def failure(self, position, element, exc_type, message, tb, attempt=0, will_retry=False):
        self._clear()
        what = f"call at position {position} with args {short_repr(element)}"
        if will_retry:
            self.stream.write(f"{self.prog}: {what} failed ({exc_type}: {message}); trying again "
                              f"(attempt {attempt + 2}).\n")
        else:
            tries = f" (after {attempt + 1} attempts)" if attempt else ""
            self.stream.write(f"{self.prog}: {what} failed{tries}:\n{tb.rstrip()}\n")
        self.stream.flush()

    def message(self, text):
        self._clear()
        self.stream.write(f"{self.prog}: {text}\n")
        self.stream.flush()

    def tick(self, outcome, force=False):
        if not self.progress:
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

    def close(self):
        self._clear()
        self.stream.flush()


def _hms(seconds):
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
