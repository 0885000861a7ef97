"""IBM Spectrum LSF: ``#BSUB`` directives, ``bsub < script``, ``bjobs``, ``bkill``.

Written from the LSF 10.1 documentation (no LSF runs on the test machines); see
tests/data/schedulers/lsf/README.md for the sources of each format.

* bsub reads ``#BSUB`` lines only from a script given on stdin (``bsub < script``) and
  prints ``Job <123> is submitted to (default) queue <normal>.``
* An array is ``-J "name[1-N]%K"``: indices from 1, the task's in ``LSB_JOBINDEX``;
  its elements are ``123[4]``, the whole array ``123``.
* ``bjobs -a -noheader -o "jobid jobindex stat" IDS`` prints ``123 0 RUN`` for a job,
  ``123 4 PEND`` for an array element; unknown ids: ``Job <9> is not found`` on stderr.
* ``-W`` is in minutes (``[hours:]minutes``); ``-M`` and ``rusage[mem=]`` take a unit
  (``4096MB``) since LSF 10.1.0.2, else they are in ``LSF_UNIT_FOR_LIMITS`` (KB by default).
"""

from __future__ import annotations

import re
import shlex
from typing import Optional

from ..core.errors import SchedulerError
from .base import CONFIG_TIMEOUT, QUEUED, RUNNING, CommandFailed, JobSpec, Scheduler, lines_all_match, register, run

_GONE = {"DONE", "EXIT", "ZOMBI"}  # finished, or lost with its host: not in the queue any more
_RUNNING = {"RUN", "UNKWN"}  # UNKWN: mbatchd lost contact with the host; it may well still run
DEFAULT_MAX_JOB_ARRAY_SIZE = 1000  # lsb.params MAX_JOB_ARRAY_SIZE


def parse_max_array_size(text: str) -> Optional[int]:
    """``MAX_JOB_ARRAY_SIZE`` from ``bparams -a`` (LSF's default when it is not there)."""
    m = re.search(r"\bMAX_JOB_ARRAY_SIZE\s*=\s*(\d+)", text)
    return int(m.group(1)) if m else DEFAULT_MAX_JOB_ARRAY_SIZE


def parse_bjobs(text: str) -> dict:
    """{job id: STAT} from ``bjobs -noheader -o "jobid jobindex stat"``: ``123`` for a job
    (index 0), ``123[4]`` for an array element."""
    states = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
            states[parts[0] if parts[1] == "0" else f"{parts[0]}[{parts[1]}]"] = parts[2]
    return states


def _minutes(seconds: int) -> str:
    minutes = -(-seconds // 60)  # LSF's run limit is in minutes: round up
    return f"{minutes // 60}:{minutes % 60:02d}"


@register
class LSF(Scheduler):
    name = "lsf"
    title = "LSF"
    extension = ".lsf"
    prefix = "#BSUB"
    submit_command = "bsub"
    options_help = ("raw LSF directives: each becomes '#BSUB -K V' ('#BSUB -K' for a bare K). "
                    "Example: --lsf-options app=fluent,x")
    detect_order = 40
    detect_hint = "bsub on PATH means lsf"
    array_index_var = "LSB_JOBINDEX"
    array_first_index = 1
    job_id_var = "LSB_JOBID"

    def array_index_expr(self) -> str:
        # Array indices start at 1; outside an array LSB_JOBINDEX is unset or 0.
        return '$( [ "${LSB_JOBINDEX:-0}" != 0 ] && echo "$LSB_JOBINDEX" )'

    def task_id(self, array_id: str, index: int) -> str:
        return f"{array_id}[{index}]"

    def max_array_size(self) -> int | None:
        try:
            return parse_max_array_size(run(["bparams", "-a"], timeout=CONFIG_TIMEOUT))
        except SchedulerError:
            return DEFAULT_MAX_JOB_ARRAY_SIZE

    def directives(self, job: JobSpec) -> list[str]:
        name = job.name
        if job.array:
            name += f"[1-{job.array}]" if job.array > 1 else "[1]"
            name += f"%{job.max_running}" if job.max_running else ""
        # -o/-e append (-oo/-eo would replace); -r: rerun on another host after a host failure.
        d = [f'-J "{name}"', f"-o {shlex.quote(job.stdout)}", f"-e {shlex.quote(job.stderr)}", "-r"]
        if job.walltime:
            d.append(f"-W {_minutes(job.walltime)}")
        requirements = []
        if job.memory:
            d.append(f"-M {job.memory}MB")
            requirements.append(f"rusage[mem={job.memory}MB]")
        if job.cpus:
            d.append(f"-n {job.cpus}")
            requirements.append("span[hosts=1]")  # all the job's slots on one host
        if requirements:
            d.append(f'-R "{" ".join(requirements)}"')
        if job.gpus:
            d.append(f'-gpu "num={job.gpus}"')  # LSF sets CUDA_VISIBLE_DEVICES to the job's GPUs
        if job.queue:
            d.append(f"-q {job.queue}")
        if job.account:
            d.append(f"-P {job.account}")
        for k, v in job.raw.items():
            k = k.lstrip("-")
            d.append(f"-{k}" if v is None else f"-{k} {v}")
        return d

    def submit_argv(self, script_path: str) -> list[str]:
        return ["bsub"]

    def submit_input(self, script_path: str) -> str | None:
        # bsub reads the #BSUB lines of a script given on stdin only.
        with open(script_path, encoding="utf-8") as f:
            return f.read()

    def parse_job_id(self, stdout: str) -> str | None:
        m = re.search(r"^Job <(\d+)> is submitted", stdout, re.M)
        return m.group(1) if m else None

    def query_argv(self, job_ids: list[str]) -> list[str]:
        # -a: finished jobs too (DONE, EXIT) for a while; an array's id lists its elements.
        parents = dict.fromkeys(j.split("[", 1)[0] for j in job_ids)
        return ["bjobs", "-a", "-noheader", "-o", "jobid jobindex stat", *parents]

    def query_failure_ok(self, error: CommandFailed) -> bool:
        # An id LSF has forgotten: "Job <9> is not found" on stderr, the others on stdout.
        return lines_all_match(error.stderr, [], [r"is not found", r"No (?:unfinished )?job found"])

    def parse_query(self, text: str, job_ids: list[str]) -> dict[str, str]:
        listed = parse_bjobs(text)
        states = {}
        for j in job_ids:
            stats = [listed[j]] if j in listed else [s for k, s in listed.items() if k.startswith(f"{j}[")]
            live = [s for s in stats if s not in _GONE]
            if live:
                states[j] = RUNNING if any(s in _RUNNING for s in live) else QUEUED
        return states

    def cancel_argv(self, job_ids: list[str]) -> list[str]:
        return ["bkill", *job_ids]

    def cancel_finished(self, text: str) -> bool:
        return lines_all_match(text, [r"is being (?:terminated|signaled)"],
                               [r"Job has already finished", r"No matching job found"])
