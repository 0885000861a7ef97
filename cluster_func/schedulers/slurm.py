"""Slurm: ``#SBATCH`` directives, ``sbatch --parsable``."""

import re
import subprocess

from .base import DONE, FAILED, QUEUED, RUNNING, Scheduler, hms


class Slurm(Scheduler):
    name = "slurm"
    extension = ".slurm"
    prefix = "#SBATCH"
    submit_command = "sbatch"
    array_index_var = "SLURM_ARRAY_TASK_ID"
    array_first_index = 0

    def job_name(self, name):
        return re.sub(r"[^A-Za-z0-9_.-]", "_", name)

    def directives(self, job):
        d = [f"--job-name={job.name}", f"--output={job.stdout}", f"--error={job.stderr}",
             "--export=NONE", "--nodes=1", "--ntasks=1"]
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
        if not job_ids:
            return {}
        p = subprocess.run(["squeue", "-h", "-o", "%i %T", "-j", ",".join(job_ids)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        states = {}
        for line in p.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2:
                job, state = parts
                states[job] = RUNNING if state in ("RUNNING", "COMPLETING", "CONFIGURING") else \
                    QUEUED if state in ("PENDING", "REQUEUED", "SUSPENDED") else \
                    DONE if state == "COMPLETED" else FAILED
        return states

    def cancel_argv(self, job_ids):
        return ["scancel", *job_ids]
