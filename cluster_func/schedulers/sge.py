"""Grid Engine (SGE, Son of Grid Engine, OGS): ``#$`` directives, ``qsub -terse``."""

import re
import subprocess

from .base import QUEUED, RUNNING, Scheduler, hms


class GridEngine(Scheduler):
    name = "sge"
    extension = ".sge"
    prefix = "#$"
    submit_command = "qsub"
    array_index_var = "SGE_TASK_ID"
    array_first_index = 1

    def job_name(self, name):
        # No ': @ /', no spaces, and it may not start with a digit.
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        return name if name[:1].isalpha() or name[:1] == "_" else "j" + name

    def directives(self, job):
        # No -V: the submitting environment is not exported.  -S: the queue's shell may be csh.
        d = [f"-N {job.name}", f"-o {job.stdout}", f"-e {job.stderr}", "-S /bin/bash"]
        if job.walltime:
            d.append(f"-l h_rt={hms(job.walltime)}")
        if job.memory:
            d.append(f"-l h_vmem={job.memory}M")
        if job.cpus and job.cpus > 1:
            d.append(f"-pe smp {job.cpus}")
        if job.queue:
            d.append(f"-q {job.queue}")
        if job.account:
            d.append(f"-A {job.account}")
        if job.array:
            d.append(f"-t 1-{job.array}")
            if job.max_running:
                d.append(f"-tc {job.max_running}")
        for k, v in job.raw.items():
            d.append(f"-l {k}" if v is None else f"-l {k}={v}")
        return d

    def submit_argv(self, script_path):
        return ["qsub", "-terse", script_path]

    def parse_job_id(self, stdout):
        # -terse prints "123", or "123.1-4:1" for an array.
        m = re.search(r"^(\d+)(?:\.\S+)?\s*$", stdout.strip(), re.M) or re.search(r"Your job(?:-array)? (\d+)", stdout)
        return m.group(1) if m else None

    def query(self, job_ids):
        if not job_ids:
            return {}
        p = subprocess.run(["qstat", "-u", "*"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True)
        wanted, states = set(job_ids), {}
        for line in p.stdout.splitlines()[2:]:
            parts = line.split()
            if len(parts) >= 5 and parts[0] in wanted:
                state = parts[4]
                states[parts[0]] = RUNNING if "r" in state or "t" in state else QUEUED
        return states

    def cancel_argv(self, job_ids):
        return ["qdel", *job_ids]
