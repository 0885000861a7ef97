"""Errors that the command line turns into a clear message and an exit status."""

import contextlib
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

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def signals_held():
    """Hold SIGINT and SIGTERM until the block is over (a step that must not be cut in two)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
