"""PBS Professional / OpenPBS and Torque: ``#PBS`` directives, ``qsub``."""

import getpass
import os
import re
import shutil
import subprocess

from .base import QUEUED, RUNNING, Scheduler, hms

# pbs_options names that are not "-l" resources.
_SPECIAL = {"name": "-N", "stdout": "-o", "stderr": "-e", "queue": "-q"}


def _is_torque() -> bool:
    """Torque's qstat says 'Version: 6.x'; PBS Professional's says 'pbs_version = ...'.
    With neither (writing scripts away from the cluster), PBS Professional."""
    if os.environ.get("CLUF_PBS_FLAVOUR"):
        return os.environ["CLUF_PBS_FLAVOUR"].lower() == "torque"
    if not shutil.which("qstat"):
        return False
    try:
        out = subprocess.run(["qstat", "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             universal_newlines=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "pbs_version" not in out and "Version:" in out


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
            # PBS Professional: -J 0-N; Torque: -t 0-N%K.
            d.append(f"-t 0-{job.array - 1}" + (f"%{job.max_running}" if job.max_running else "")
                     if self.torque else f"-J 0-{job.array - 1}")
        for k, v in job.raw.items():
            if k in _SPECIAL or k == "ppn":
                # These replace the line cluf writes itself: one -N, -o, -e, -q, nodes=1:ppn.
                head, line = (("-l nodes=", f"-l nodes=1:ppn={v}") if k == "ppn"
                              else (_SPECIAL[k] + " ", f"{_SPECIAL[k]} {v}"))
                at = next((n for n, x in enumerate(d) if x.startswith(head)), None)
                if at is None:
                    d.append(line)
                else:
                    d[at] = line
            else:
                d.append(f"-l {k}" if v is None else f"-l {k}={v}")
        return d

    _torque = None

    @property
    def torque(self):
        if self._torque is None:
            self._torque = _is_torque()
        return self._torque

    @property
    def max_running_note(self):
        return None if self.torque else "PBS Professional has no limit on the running subjobs of one array"

    def array_index_expr(self):
        return "${PBS_ARRAY_INDEX:-${PBS_ARRAYID:-}}"

    def task_id(self, array_id, index):
        return array_id.replace("[]", f"[{index}]", 1)

    def parse_job_id(self, stdout):
        # "1234.server" (PBS Pro, Torque), "1234[].server" for an array.
        m = re.search(r"^(\d+(?:\[\])?(?:\.[\w.-]+)?)\s*$", stdout.strip(), re.M)
        return m.group(1) if m else None

    def query(self, job_ids):
        """One qstat call (-t: array subjobs one per line) for all of this user's jobs."""
        if not job_ids:
            return {}
        p = subprocess.run(["qstat", "-t", "-u", getpass.getuser()], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True)
        if p.returncode != 0:
            # Not "no jobs" (that is status 0): every queued job would look vanished and be resubmitted.
            raise RuntimeError(f"qstat failed: {(p.stderr or p.stdout).strip()}")
        states = {}
        short = {j.split(".")[0]: j for j in job_ids}
        for line in p.stdout.splitlines():
            parts = line.split()
            if not parts or not parts[0][:1].isdigit():
                continue
            job = short.get(parts[0].split(".")[0])
            if job is None:
                continue
            # qstat -u: Job ID, Username, Queue, Jobname, SessID, NDS, TSK, Memory, Time, S, Time
            state = parts[-2] if len(parts) >= 10 else parts[4] if len(parts) > 4 else "Q"
            if state in ("C", "F", "X"):
                # Finished: Torque lists completed jobs (C) for a while, PBS Pro's -t lists
                # finished subjobs (X) while the array runs, -x finished jobs (F).
                continue
            states[job] = RUNNING if state in ("R", "E", "B") else QUEUED
        return states

    def cancel_argv(self, job_ids):
        return ["qdel", *job_ids]
