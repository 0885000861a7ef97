"""The one interface a scheduler fills in.

A scheduler turns a portable :class:`JobSpec` into directive lines for the top of
a job script, says how to submit a script and read the job id back, and how to
ask about and cancel jobs.  Adding LSF should mean adding one file like
``slurm.py`` and one line in ``__init__.py``.
"""

import re
import shlex
import subprocess
from dataclasses import dataclass, field
from typing import Dict, List, Optional



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
    raw: Dict[str, Optional[str]] = field(default_factory=dict)  # scheduler-specific key=value
    array: Optional[int] = None  # number of tasks, for a job array
    max_running: Optional[int] = None


def hms(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# States a query reports, shared by all schedulers.
QUEUED, RUNNING, ERROR = "queued", "running", "error"  # ERROR: held by the scheduler in an error state


class Scheduler:
    name = "base"
    extension = ".sh"
    prefix = "#"
    submit_command = "true"
    # The variable holding a job array task's index, and the first index.
    array_index_var = ""
    array_first_index = 0

    def array_index_expr(self) -> str:
        """Shell expression for the task index of an array task ('' outside an array)."""
        return f"${{{self.array_index_var}:-}}"

    def task_id(self, array_id: str, index: int) -> str:
        """The id of one task of an array job, as query() reports it."""
        return f"{array_id}_{index}"

    def max_array_size(self) -> Optional[int]:
        """Most tasks one array may have here (None: no limit known)."""
        return None

    # What --max-running does here; None means it is supported.
    max_running_note: Optional[str] = None

    def job_name(self, name: str) -> str:
        """A job name the scheduler accepts."""
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        if not name[:1].isalpha():
            name = "j" + name
        return name

    def directives(self, job: JobSpec) -> List[str]:
        raise NotImplementedError

    def lines(self, job: JobSpec) -> List[str]:
        return [f"{self.prefix} {d}" for d in self.directives(job)]

    def submit_argv(self, script_path: str) -> List[str]:
        return [self.submit_command, script_path]

    def parse_job_id(self, stdout: str) -> Optional[str]:
        raise NotImplementedError

    def submit(self, script_path: str, cwd: str) -> str:
        """Submit; return the job id or raise RuntimeError with the scheduler's words."""
        argv = self.submit_argv(script_path)
        try:
            p = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               universal_newlines=True, timeout=120)
        except FileNotFoundError:
            raise RuntimeError(f"{argv[0]} was not found on PATH") from None
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{shlex.join(argv)} did not answer within 120 s") from None
        job_id = self.parse_job_id(p.stdout) if p.returncode == 0 else None
        if p.returncode != 0 or not job_id:
            said = (p.stderr.strip() or p.stdout.strip() or "nothing").replace("\n", " ")
            raise RuntimeError(f"{shlex.join(argv)} exited with status {p.returncode} and said: {said}")
        return job_id

    # --- issue 7: status and cancel ---------------------------------------------
    def query(self, job_ids: List[str]) -> Dict[str, str]:
        """State of each job id the scheduler still knows (one call); unknown ids are absent."""
        return {}

    def cancel_argv(self, job_ids: List[str]) -> List[str]:
        raise NotImplementedError

