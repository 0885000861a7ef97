"""The one command runner: every external command the package runs (the schedulers' ``sbatch``,
``qstat``, ``scontrol`` ..., and ``nvidia-smi``) goes through :func:`run`, which turns every
way a command can fail into one typed :class:`~cluster_func.core.errors.SchedulerError`
(:class:`CommandFailed` with the command, its status and its own words; :class:`CommandNotFound`;
:class:`CommandTimedOut`).  Output that is not UTF-8 is decoded with replacement characters,
so that a command's bytes never end the tool with a UnicodeDecodeError.
"""

import shlex
from typing import Mapping, Optional, Sequence

from .errors import SchedulerError

QUERY_TIMEOUT = 120  # seconds

class CommandFailed(SchedulerError):
    """A scheduler command exited with a non-zero status."""

    def __init__(self, argv: Sequence[str], status: int, stdout: str, stderr: str) -> None:
        self.argv, self.status, self.stdout, self.stderr = list(argv), status, stdout, stderr
        said = (stderr.strip() or stdout.strip() or "nothing").replace("\n", " ")
        super().__init__(f"{shlex.join(self.argv)} exited with status {status} and said: {said}")

    @property
    def output(self) -> str:
        """All it said, stdout then stderr (Grid Engine writes some errors to stdout)."""
        return "\n".join(t for t in (self.stdout, self.stderr) if t.strip())


class CommandNotFound(SchedulerError):
    """The scheduler command is not on PATH."""


class CommandTimedOut(SchedulerError):
    """The scheduler command did not answer in time."""


def run(argv: Sequence[str], timeout: float = QUERY_TIMEOUT, cwd: Optional[str] = None,
        input: Optional[str] = None, merge_stderr: bool = False, env: Optional[Mapping[str, str]] = None) -> str:
    """Run one scheduler command; return its stdout (with ``merge_stderr``, stdout and
    stderr as one text).

    ``input`` is written to its stdin (LSF's ``bsub < script``); otherwise stdin is
    /dev/null.  Raises :class:`CommandFailed` (with the command, its exit status and
    the scheduler's own words), :class:`CommandNotFound` or :class:`CommandTimedOut`,
    all :class:`SchedulerError`.
    """
    import subprocess  # here: plain clum never runs a command, and does not pay for the import

    argv = [str(a) for a in argv]
    command = shlex.join(argv)
    try:
        p = subprocess.run(argv, cwd=cwd, input=input, stdin=subprocess.DEVNULL if input is None else None,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                           text=True, encoding="utf-8", errors="replace", env=env, timeout=timeout)
    except FileNotFoundError as e:
        if cwd is not None and e.filename == cwd:
            raise SchedulerError(f"Cannot run {command}: the directory {cwd} does not exist.") from None
        raise CommandNotFound(
            f"{argv[0]} is not on PATH (needed to run {command}). Run cluf where the scheduler's "
            f"commands are installed, or put their directory on PATH.") from None
    except PermissionError:
        raise CommandNotFound(f"{argv[0]} cannot be run (permission denied) for {command}.") from None
    except OSError as e:
        raise SchedulerError(f"Cannot run {command}: {e.strerror or e}.") from None
    except subprocess.TimeoutExpired:
        raise CommandTimedOut(f"{command} did not answer within {timeout:g} s: the scheduler may be down "
                              f"or overloaded; try again later.") from None
    if p.returncode != 0:
        raise CommandFailed(argv, p.returncode, p.stdout, p.stderr or "")
    return p.stdout


