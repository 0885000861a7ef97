"""Slurm: ``#SBATCH`` directives, ``sbatch --parsable``."""

import getpass
import re
import shlex
import subprocess

from .base import QUEUED, RUNNING, Scheduler, hms


class Slurm(Scheduler):
    name = "slurm"
    extension = ".slurm"
    prefix = "#SBATCH"
    submit_command = "sbatch"
    array_index_var = "SLURM_ARRAY_TASK_ID"
    array_first_index = 0

    def max_array_size(self):
        try:
            out = subprocess.run(["scontrol", "show", "config"], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, universal_newlines=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.M)
        return int(m.group(1)) if m else None  # indices must be below it

    def job_name(self, name):
        return re.sub(r"[^A-Za-z0-9_.-]", "_", name)

    def directives(self, job):
        # Paths are shell-quoted: sbatch reads quoted directive words (a path with a space).
        d = [f"--job-name={job.name}", f"--output={shlex.quote(job.stdout)}",
             f"--error={shlex.quote(job.stderr)}",
             "--open-mode=append", "--export=NONE", "--nodes=1", "--ntasks=1"]
        if job.walltime:
            d.append(f"--time={hms(job.walltime)}")
        if job.memory:
            d.append(f"--mem={job.memory}M")
        if job.cpus:
            d.append(f"--cpus-per-task={job.cpus}")
        if job.queue:
            d.append(f"--partition={job.queue}")
        if job.account:
            d.append(f"--account={job.account}")
        if job.array:
            limit = f"%{job.max_running}" if job.max_running else ""
            d.append(f"--array=0-{job.array - 1}{limit}")
        for k, v in job.raw.items():
            k = k.lstrip("-")
            d.append(f"--{k}" if v is None else f"--{k}={v}")
        return d

    def submit_argv(self, script_path):
        return ["sbatch", "--parsable", script_path]

    def parse_job_id(self, stdout):
        # --parsable prints "id" or "id;cluster"; plain sbatch prints "Submitted batch job id".
        m = re.search(r"^(\d+)(?:;\S+)?\s*$", stdout.strip(), re.M) or re.search(r"Submitted batch job (\d+)", stdout)
        return m.group(1) if m else None

    def query(self, job_ids):
        """One squeue call for all of this user's jobs, array tasks one per line."""
        if not job_ids:
            return {}
        p = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i %T"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        if p.returncode != 0:
            raise RuntimeError(f"squeue failed: {p.stderr.strip()}")
        wanted, states = set(job_ids), {}
        for line in p.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] in wanted:
                state = parts[1]
                states[parts[0]] = (QUEUED if state in ("PENDING", "REQUEUED", "SUSPENDED", "REQUEUE_HOLD")
                                    else RUNNING)
        return states

    def cancel_argv(self, job_ids):
        return ["scancel", *job_ids]
