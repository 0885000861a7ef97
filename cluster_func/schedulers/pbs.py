"""PBS Professional / OpenPBS and Torque: ``#PBS`` directives, ``qsub``."""

import re
import subprocess

from .base import QUEUED, RUNNING, Scheduler, hms

# pbs_options names that are not "-l" resources.
_SPECIAL = {"name": "-N", "stdout": "-o", "stderr": "-e", "queue": "-q"}


class PBS(Scheduler):
    name = "pbs"
    extension = ".pbs"
    prefix = "#PBS"
    submit_command = "qsub"
    # PBS Professional sets PBS_ARRAY_INDEX, Torque PBS_ARRAYID; the script reads either.
    array_index_var = "PBS_ARRAY_INDEX"
    array_first_index = 0

    def job_name(self, name):
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        return name if name[:1].isalpha() else "j" + name

    def directives(self, job):
        # No -V: the submitting environment is not exported (only PBS_O_* variables).
        d = [f"-N {job.name}", f"-o {job.stdout}", f"-e {job.stderr}", "-S /bin/bash"]
        if job.walltime:
            d.append(f"-l walltime={hms(job.walltime)}")
        if job.memory:
            d.append(f"-l mem={job.memory}mb")
        if job.cpus:
            d.append(f"-l nodes=1:ppn={job.cpus}")
        if job.queue:
            d.append(f"-q {job.queue}")
        if job.account:
            d.append(f"-A {job.account}")
        if job.array:
            # PBS Professional: -J 0-N (a range of at least two); Torque: -t 0-N%K.
            d.append(f"-J 0-{max(job.array - 1, 1)}" if self.flavour == "pro" else
                     f"-t 0-{job.array - 1}" + (f"%{job.max_running}" if job.max_running else ""))
        for k, v in job.raw.items():
            if k in _SPECIAL:
                d.append(f"{_SPECIAL[k]} {v}")
            elif k == "ppn":
                d.append(f"-l nodes=1:ppn={v}")
            else:
                d.append(f"-l {k}" if v is None else f"-l {k}={v}")
        return d

    flavour = "pro"

    def parse_job_id(self, stdout):
        # "1234.server" (PBS Pro, Torque), "1234[].server" for an array.
        m = re.search(r"^(\d+(?:\[\])?(?:\.[\w.-]+)?)\s*$", stdout.strip(), re.M)
        return m.group(1) if m else None

    def query(self, job_ids):
        if not job_ids:
            return {}
        p = subprocess.run(["qstat", *job_ids], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True)
        states = {}
        for line in p.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 5:
                for job in job_ids:
                    if parts[0] == job or job.startswith(parts[0].rstrip(".")):
                        states[job] = RUNNING if parts[4] in ("R", "E", "B") else QUEUED
        return states

    def cancel_argv(self, job_ids):
        return ["qdel", *job_ids]
