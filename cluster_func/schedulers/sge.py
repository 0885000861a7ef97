"""Grid Engine (SGE, Son of Grid Engine, OGS): ``#$`` directives, ``qsub -terse``,
``qstat -g d``, ``qdel``."""

from __future__ import annotations

import getpass
import os
import re
import shlex
import shutil
from typing import Any, Mapping, Optional

from ..core.errors import SchedulerError
from .base import CONFIG_TIMEOUT, ERROR, QUEUED, RUNNING, JobSpec, Scheduler, hms, lines_all_match, register, run


def parse_max_array_size(text: str) -> Optional[int]:
    """``max_aj_tasks`` from ``qconf -sconf`` (0: no limit)."""
    m = re.search(r"^max_aj_tasks\s+(\d+)", text, re.M)
    return int(m.group(1)) or None if m else None


_GPU_RESOURCE_KEYS = ("gpu_resource", "gpu-resource")
_NOT_RESOURCES = ("pe", *_GPU_RESOURCE_KEYS)  # sge_options keys that name things, not -l resources


def gpu_resource(raw: Mapping[str, Any]) -> str:
    """The consumable that --gpus asks for: sge_options gpu_resource=NAME, else gpu."""
    return next((raw[k] for k in _GPU_RESOURCE_KEYS if raw.get(k)), "gpu")


@register
class GridEngine(Scheduler):
    name = "sge"
    title = "Grid Engine"
    extension = ".sge"
    prefix = "#$"
    submit_command = "qsub"
    options_help = ("raw Grid Engine directives: each becomes '#$ -l K=V', except pe (the parallel environment "
                    "for --cpus, default smp) and gpu_resource (the consumable for --gpus, default gpu). "
                    "Example: --sge-options h_vmem=4G,gpu_resource=gpus")
    detect_order = 20
    detect_hint = "qsub with SGE_ROOT set means sge"
    array_index_var = "SGE_TASK_ID"
    array_first_index = 1
    job_id_var = "JOB_ID"

    @classmethod
    def detect(cls) -> bool:
        return bool(shutil.which("qsub") and os.environ.get("SGE_ROOT"))

    def array_index_expr(self) -> str:
        # SGE sets SGE_TASK_ID=undefined in a job that is not an array.
        return '$( [ "${SGE_TASK_ID:-undefined}" != undefined ] && echo "$SGE_TASK_ID" )'

    def task_id(self, array_id: str, index: int) -> str:
        return f"{array_id}.{index}"

    def max_array_size(self) -> int | None:
        try:
            return parse_max_array_size(run(["qconf", "-sconf"], timeout=CONFIG_TIMEOUT))
        except SchedulerError:
            return None

    def job_name(self, name: str) -> str:
        # No ': @ /', no spaces, and it may not start with a digit.
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        return name if name[:1].isalpha() or name[:1] == "_" else "j" + name

    def directives(self, job: JobSpec) -> list[str]:
        # No -V: the submitting environment is not exported.  -S: the queue's shell may be csh.
        # Paths are shell-quoted: qsub reads quoted directive words (a path with a space).
        # -r y: rerun after a host failure, and qmod -rj may rerun it (the rerun resumes the bin).
        d = [f"-N {job.name}", f"-o {shlex.quote(job.stdout)}", f"-e {shlex.quote(job.stderr)}", "-S /bin/bash",
             "-r y"]
        if job.walltime:
            d.append(f"-l h_rt={hms(job.walltime)}")
        if job.memory:
            d.append(f"-l h_vmem={job.memory}M")
        if job.cpus and job.cpus > 1:
            # Slots on one host need a parallel environment; its name is site-specific
            # (sge_options pe=NAME), "smp" is the common one.
            d.append(f"-pe {job.raw.get('pe') or 'smp'} {job.cpus}")
        if job.gpus:
            # A consumable complex the site defines; its name is site-specific too.
            d.append(f"-l {gpu_resource(job.raw)}={job.gpus}")
        if job.queue:
            d.append(f"-q {job.queue}")
        if job.account:
            d.append(f"-A {job.account}")
        if job.array:
            d.append(f"-t 1-{job.array}")
            if job.max_running:
                d.append(f"-tc {job.max_running}")
        for k, v in job.raw.items():
            if k not in _NOT_RESOURCES:
                d.append(f"-l {k}" if v is None else f"-l {k}={v}")
        return d

    def submit_argv(self, script_path: str) -> list[str]:
        return ["qsub", "-terse", script_path]

    def parse_job_id(self, stdout: str) -> str | None:
        # -terse prints "123", or "123.1-4:1" for an array.
        m = re.search(r"^(\d+)(?:\.\S+)?\s*$", stdout.strip(), re.M) or re.search(r"Your job(?:-array)? (\d+)", stdout)
        return m.group(1) if m else None

    def query_argv(self, job_ids: list[str]) -> list[str]:
        # All of this user's jobs, array tasks one per line (-g d).
        return ["qstat", "-g", "d", "-u", getpass.getuser()]

    def parse_query(self, text: str, job_ids: list[str]) -> dict[str, str]:
        wanted, states = set(job_ids), {}
        for line in text.splitlines()[2:]:
            parts = line.split()
            if len(parts) < 5 or not parts[0].isdigit():
                continue
            state = parts[4]
            # The last column is the task id for array tasks (-g d: one per line).
            ids = [parts[0]]
            if parts[-1].isdigit() and len(parts) >= 9 - ("@" not in line):
                ids.insert(0, f"{parts[0]}.{parts[-1]}")
            s = ERROR if "E" in state else RUNNING if any(c in state for c in "rtR") else QUEUED
            for i in ids:
                if i in wanted:
                    states[i] = s
        return states

    def cancel_argv(self, job_ids: list[str]) -> list[str]:
        return ["qdel", *job_ids]

    def cancel_finished(self, text: str) -> bool:
        # qdel of a finished job: 'denied: job "3" does not exist' (on stdout), exit 1; the
        # jobs it did delete are listed as "root has deleted job 8".
        return lines_all_match(text, [r"has (?:deleted|registered) (?:the )?job"],
                               [r'job "?[\d.]+"? does not exist', r"already in deletion"])
