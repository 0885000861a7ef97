"""The one interface a scheduler fills in, the registry of schedulers, and the one
function that runs scheduler commands.

A scheduler turns a portable :class:`JobSpec` into directive lines for the top of
a job script, says how to submit a script and read the job id back, how to ask
about many jobs in one command and read the answer, and how to cancel jobs.
Each class registers itself with :func:`register`; ``--scheduler``'s choices, the
``--<name>-options`` flags and ``<name>_options`` keys, auto-detection and the
"ignored options" warning all come from the registry, so adding a scheduler is
adding one module to this package.

Parsers take text (the command's output) and return data, so they are tested on
recorded output (tests/data/schedulers/) without any scheduler running.
"""

import abc
import re
import shlex
import shutil
from dataclasses import dataclass, field
from typing import ClassVar, Dict, Iterable, List, Optional, Sequence, Type

from ...core.errors import SchedulerError, UserError


@dataclass
class JobSpec:
    name: str
    stdout: str
    stderr: str
    walltime: Optional[int] = None  # seconds
    memory: Optional[int] = None  # megabytes
    queue: Optional[str] = None
    account: Optional[str] = None
    cpus: Optional[int] = None
    gpus: Optional[int] = None  # GPUs for the job (on its one node)
    raw: Dict[str, Optional[str]] = field(default_factory=dict)  # scheduler-specific key=value
    array: Optional[int] = None  # number of tasks, for a job array
    max_running: Optional[int] = None


def hms(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# States a query reports, shared by all schedulers.
QUEUED, RUNNING, ERROR = "queued", "running", "error"  # ERROR: held by the scheduler in an error state

SUBMIT_TIMEOUT = 120  # seconds
QUERY_TIMEOUT = 120
CONFIG_TIMEOUT = 30


# --- the one command runner ---------------------------------------------------------

class CommandFailed(SchedulerError):
    """A scheduler command exited with a non-zero status."""

    def __init__(self, argv: Sequence[str], status: int, stdout: str, stderr: str):
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
        input: Optional[str] = None, merge_stderr: bool = False) -> str:
    """Run one scheduler command; return its stdout (with ``merge_stderr``, stdout and
    stderr as one text).

    ``input`` is written to its stdin (LSF's ``bsub < script``); otherwise stdin is
    /dev/null.  Raises :class:`CommandFailed` (with the command, its exit status and
    the scheduler's own words), :class:`CommandNotFound` or :class:`CommandTimedOut`,
    all :class:`SchedulerError`.
    """
    import subprocess  # here: clum, which imports this package through its options, never runs one

    argv = [str(a) for a in argv]
    command = shlex.join(argv)
    try:
        p = subprocess.run(argv, cwd=cwd, input=input, stdin=subprocess.DEVNULL if input is None else None,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                           universal_newlines=True, errors="replace",  # bytes not UTF-8: shown as �
                           timeout=timeout)
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


def lines_all_match(text: str, patterns: Iterable[str], needed: Iterable[str]) -> bool:
    """True when ``text`` has at least one line matching a ``needed`` pattern and every
    non-empty line matches one of ``patterns`` or ``needed`` (case-insensitive)."""
    needed, allowed = list(needed), list(patterns)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not any(re.search(p, line, re.I) for line in lines for p in needed):
        return False
    return all(any(re.search(p, line, re.I) for p in allowed + needed) for line in lines)


# --- the interface ------------------------------------------------------------------

class Scheduler(abc.ABC):
    """One batch scheduler.  Subclasses set the class attributes and fill in the
    abstract methods, and are registered with :func:`register`."""

    name: ClassVar[str]  # --scheduler NAME; --NAME-options; NAME_options
    title: ClassVar[str]  # for people: "Slurm"
    extension: ClassVar[str]  # of the job scripts: ".slurm"
    prefix: ClassVar[str]  # of directive lines: "#SBATCH"
    submit_command: ClassVar[str]  # the program that submits: "sbatch"
    # The --NAME-options flag: its help, and a short flag if any (PBS: -o).
    options_help: ClassVar[str]
    options_short: ClassVar[Optional[str]] = None
    # --scheduler auto asks the schedulers in this order (lowest first) whether they are here;
    # with nothing found and nothing to submit it picks the one with detect_fallback.
    detect_order: ClassVar[int] = 100
    detect_hint: ClassVar[str] = ""  # "sbatch on PATH means slurm"
    detect_fallback: ClassVar[bool] = False
    # The variable holding a job array task's index, and the first index.
    array_index_var: ClassVar[str] = ""
    array_first_index: ClassVar[int] = 0
    # What --max-running does here; None means it is supported.
    max_running_note: Optional[str] = None
    # The variable holding the job's id in a job (set by the scheduler, not by hand).
    job_id_var: ClassVar[str] = ""
    # Does the scheduler add to an existing -o/-e file (True), or replace it with each job?
    appends_output: ClassVar[bool] = True

    # --- detection
    @classmethod
    def detect(cls) -> bool:
        """Is this scheduler here?  (Default: its submit command is on PATH.)"""
        return bool(shutil.which(cls.submit_command))

    # --- job scripts
    def job_name(self, name: str) -> str:
        """A job name the scheduler accepts."""
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        if not name[:1].isalpha():
            name = "j" + name
        return name

    @abc.abstractmethod
    def directives(self, job: JobSpec) -> List[str]:
        """The directives for ``job`` (without the prefix)."""

    def lines(self, job: JobSpec) -> List[str]:
        """The directive lines.  One that would not stay one line (a newline or another control
        character in a value) is refused: the rest of it would become a command of the job."""
        out = []
        for d in self.directives(job):
            if re.search(r"[\x00-\x1f\x7f]", d):
                raise UserError(f"The {self.title} directive {d!r} holds a newline or another control character, "
                                f"so it cannot be one line of a job script (the rest would run as a command). "
                                f"Give the option that set it on one line.")
            out.append(f"{self.prefix} {d}")
        return out

    def array_index_expr(self) -> str:
        """Shell expression for the task index of an array task ('' outside an array)."""
        return f"${{{self.array_index_var}:-}}"

    def task_id(self, array_id: str, index: int) -> str:
        """The id of one task of an array job, as the query reports it."""
        return f"{array_id}_{index}"

    def max_array_size(self) -> Optional[int]:
        """Most tasks one array may have here (None: no limit known)."""
        return None

    # --- submission
    @abc.abstractmethod
    def submit_argv(self, script_path: str) -> List[str]:
        """The command that submits the job script at ``script_path``."""

    def submit_input(self, script_path: str) -> Optional[str]:
        """What the submit command reads on stdin (None: nothing)."""
        return None

    @abc.abstractmethod
    def parse_job_id(self, stdout: str) -> Optional[str]:
        """The job id in the submit command's output (None if there is none)."""

    def submit(self, script_path: str, cwd: str) -> str:
        """Submit; return the job id.  Raises SchedulerError with the scheduler's words."""
        argv = self.submit_argv(script_path)
        out = run(argv, timeout=SUBMIT_TIMEOUT, cwd=cwd, input=self.submit_input(script_path))
        job_id = self.parse_job_id(out)
        if not job_id:
            said = out.strip().replace("\n", " ") or "nothing"
            raise SchedulerError(f"{shlex.join(argv)} printed no job id that cluf understands: {said}")
        return job_id

    # --- status
    @abc.abstractmethod
    def query_argv(self, job_ids: List[str]) -> List[str]:
        """ONE command that reports the state of all these jobs."""

    @abc.abstractmethod
    def parse_query(self, text: str, job_ids: List[str]) -> Dict[str, str]:
        """{id: QUEUED | RUNNING | ERROR} for each of ``job_ids`` the scheduler still
        has queued or running, from the query's output; finished and unknown ids are absent."""

    def query_failure_ok(self, error: CommandFailed) -> bool:
        """True when the query's non-zero exit still came with a usable answer on stdout."""
        return False

    def query(self, job_ids: List[str]) -> Dict[str, str]:
        """State of each job id the scheduler still has queued or running (one command)."""
        ids = list(dict.fromkeys(j for j in job_ids if j))
        if not ids:
            return {}
        try:
            text = run(self.query_argv(ids), timeout=QUERY_TIMEOUT)
        except CommandFailed as e:
            if not self.query_failure_ok(e):
                raise
            text = e.stdout
        return self.parse_query(text, ids)

    # --- cancelling
    @abc.abstractmethod
    def cancel_argv(self, job_ids: List[str]) -> List[str]:
        """The command that cancels these jobs (whole arrays by their id)."""

    @abc.abstractmethod
    def cancel_finished(self, text: str) -> bool:
        """True when the cancel command's complaint ``text`` only says that jobs had
        already finished or are finishing (so there was nothing left to cancel)."""

    def cancel(self, job_ids: List[str]) -> bool:
        """Cancel the jobs; True when some had already finished (not an error).
        Raises SchedulerError otherwise."""
        try:
            run(self.cancel_argv(list(job_ids)), timeout=QUERY_TIMEOUT)
        except CommandFailed as e:
            if self.cancel_finished(e.output):
                return True
            raise
        return False


# --- the registry -------------------------------------------------------------------

REGISTRY: Dict[str, Type[Scheduler]] = {}


def register(cls: Type[Scheduler]) -> Type[Scheduler]:
    """Class decorator: make a scheduler known to cluf under ``cls.name``."""
    if not re.fullmatch(r"[a-z][a-z0-9]*", cls.name or ""):
        raise ValueError(f"scheduler name {cls.name!r}: use lower-case letters and digits")
    old = REGISTRY.get(cls.name, cls)
    if (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"two schedulers are called {cls.name!r}: {REGISTRY[cls.name]} and {cls}")
    REGISTRY[cls.name] = cls
    return cls
