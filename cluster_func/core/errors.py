"""Errors that the command line turns into a clear message and an exit status."""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable, Iterator
import os
import signal


class UserError(Exception):
    """Bad input from the user: printed as one paragraph, exit status 2."""

    exit_status = 2


class ScriptError(UserError):
    """The target script could not be loaded or does not provide what is needed."""


class SchedulerError(UserError, RuntimeError):
    """A scheduler command failed, is missing or did not answer: printed as one paragraph
    (the command, its exit status and the scheduler's own words), exit status 2.
    (A RuntimeError too: the submission code reports a failed qsub/sbatch as SubmitError.)"""


class SubmitError(Exception):
    """A job submission failed part way; the message says what was and was not submitted."""

    exit_status = 1


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived (not an Exception: user code must not swallow it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}

# Between a cluf job script and the clum it runs: the job's start (epoch seconds, which the
# walltime counts from), and clum's exit status for "stopped at the walltime, work left".
JOB_START_VAR = "CLUF_JOB_START"
EXIT_WALLTIME = 75  # EX_TEMPFAIL: the bin continues with --resume
# Set by a job script that finds it has run before (requeued or rerun by the scheduler): how
# many seconds clum waits for the stopped run of the same bin to let go of its journal (it may
# still be ending, on this node or, after a node failure, on another one whose lock the shared
# file system keeps until its lease runs out) before it gives up as on any other held journal.
LOCK_WAIT_VAR = "CLUF_LOCK_WAIT"
RERUN_LOCK_WAIT = 300


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block is over (a step that must not be cut in two).

    Blocking them at the OS level is not enough: a signal the OS delivered just before has its
    Python handler run at the next bytecode, possibly inside the block.  So the handlers only
    note the signal while the block runs, and the old handler gets it afterwards.
    """
    got: list[int] = []
    old_handlers: dict[int, Any] = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in STOP_SIGNALS}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)  # pending ones are noted now
        for s, handler in old_handlers.items():
            signal.signal(s, handler)
        for signum in got[:1]:
            handler = old_handlers[signum]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)


def warner(prog: str) -> Callable[[str], None]:
    """A function that prints ``prog: warning: TEXT`` on stderr."""
    def warn(text: str) -> None:
        sys.stderr.write(f"{prog}: warning: {text}\n")
    return warn
