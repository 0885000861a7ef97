"""Slurm: ``#SBATCH`` directives, ``sbatch --parsable``, ``squeue``, ``scancel``."""

from __future__ import annotations

import getpass
import re
import shlex
from typing import Mapping, Optional

from ..core.errors import SchedulerError
from .base import (ASK_TIMEOUT, CANCELLED, CONFIG_TIMEOUT, ERROR, PREEMPTED, QUEUED, REQUEUED, RUNNING, WALLTIME,
                   JobSpec, Scheduler, StopVerdict, hms, lines_all_match, register, run)

_QUEUED_STATES = {"PENDING", "REQUEUED", "SUSPENDED", "REQUEUE_HOLD"}
# A pending job with this reason will never run by itself: Slurm could not launch it (after a
# requeue, say) and holds it (Priority=0) until someone runs `scontrol release`.  As Grid
# Engine's Eqw, it is an error state: --status says "held: error", --resubmit replaces it.
_HELD_FOR_GOOD = ("launch failed requeued held",)


def parse_max_array_size(text: str) -> Optional[int]:
    """``MaxArraySize`` from ``scontrol show config``: array indices must be below it."""
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", text, re.M)
    return int(m.group(1)) if m else None


def parse_stop(text: str, restart_count: int) -> Optional[StopVerdict]:
    """Why a job that got SIGTERM is stopped, from ``scontrol show job -o ID``: requeued when
    ``Restarts`` is above the job's ``SLURM_RESTART_COUNT`` (or the state is REQUEUE*), walltime
    for TIMEOUT/DEADLINE, preempted for PREEMPTED or a Reason naming preemption, else cancelled."""
    fields = dict(re.findall(r"(\w+)=(\S*)", text))
    state, reason = fields.get("JobState", ""), fields.get("Reason", "")
    restarts = int(fields["Restarts"]) if fields.get("Restarts", "").isdigit() else None
    said = f"Slurm: JobState={state}, Reason={reason}, Restarts={restarts}"
    if (restarts is not None and restarts > restart_count) or state.startswith("REQUEUE"):
        return StopVerdict(REQUEUED, f"requeued by Slurm (scontrol requeue, a node failure or a preemption; {said})")
    if state in ("TIMEOUT", "DEADLINE"):
        return StopVerdict(WALLTIME, said)
    if state == "PREEMPTED" or "preempt" in reason.lower():
        return StopVerdict(PREEMPTED, f"preempted ({said})")
    if not state:
        return None
    return StopVerdict(CANCELLED, f"scancel or an administrator ({said}; Slurm does not say who)")


@register
class Slurm(Scheduler):
    name = "slurm"
    title = "Slurm"
    extension = ".slurm"
    prefix = "#SBATCH"
    submit_command = "sbatch"
    options_help = "raw Slurm directives: each becomes '#SBATCH --K=V'. Example: --slurm-options qos=long"
    detect_order = 10
    detect_hint = "sbatch on PATH means slurm"
    array_index_var = "SLURM_ARRAY_TASK_ID"
    array_first_index = 0
    job_id_var = "SLURM_JOB_ID"

    def stop_verdict(self, env: Mapping[str, str]) -> Optional[StopVerdict]:
        text = run(["scontrol", "show", "job", "-o", env[self.job_id_var]], timeout=ASK_TIMEOUT, env=env)
        count = env.get("SLURM_RESTART_COUNT", "0")
        return parse_stop(text, int(count) if count.isdigit() else 0)

    def max_array_size(self) -> int | None:
        try:
            return parse_max_array_size(run(["scontrol", "show", "config"], timeout=CONFIG_TIMEOUT))
        except SchedulerError:
            return None

    def job_name(self, name: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", name)

    def directives(self, job: JobSpec) -> list[str]:
        # Paths are shell-quoted: sbatch reads quoted directive words (a path with a space).
        d = [f"--job-name={job.name}", f"--output={shlex.quote(job.stdout)}",
             f"--error={shlex.quote(job.stderr)}",
             "--open-mode=append", "--export=NONE", "--nodes=1", "--ntasks=1",
             "--requeue"]  # a node failure or preemption requeues the job (its rerun resumes the bin)
        if job.walltime:
            d.append(f"--time={hms(job.walltime)}")
        if job.memory:
            d.append(f"--mem={job.memory}M")
        if job.cpus:
            d.append(f"--cpus-per-task={job.cpus}")
        if job.gpus:
            d.append(f"--gres=gpu:{job.gpus}")  # Slurm sets CUDA_VISIBLE_DEVICES to the job's GPUs
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

    def submit_argv(self, script_path: str) -> list[str]:
        return ["sbatch", "--parsable", script_path]

    def parse_job_id(self, stdout: str) -> str | None:
        # --parsable prints "id" or "id;cluster"; plain sbatch prints "Submitted batch job id".
        m = re.search(r"^(\d+)(?:;\S+)?\s*$", stdout.strip(), re.M) or re.search(r"Submitted batch job (\d+)", stdout)
        return m.group(1) if m else None

    def query_argv(self, job_ids: list[str]) -> list[str]:
        # All of this user's jobs, array tasks one per line (-r), with the reason of a pending
        # one: "4_0 PENDING Priority" (the reason may hold spaces).
        return ["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i %T %r"]

    def parse_query(self, text: str, job_ids: list[str]) -> dict[str, str]:
        wanted, states = set(job_ids), {}
        for line in text.splitlines():
            parts = line.split(None, 2)
            if len(parts) >= 2 and parts[0] in wanted:
                reason = parts[2].strip() if len(parts) == 3 else ""
                if parts[1] == "PENDING" and reason.startswith(_HELD_FOR_GOOD):
                    states[parts[0]] = ERROR
                else:
                    states[parts[0]] = QUEUED if parts[1] in _QUEUED_STATES else RUNNING
        return states

    def cancel_argv(self, job_ids: list[str]) -> list[str]:
        return ["scancel", *job_ids]

    def cancel_finished(self, text: str) -> bool:
        # scancel of a finished job says nothing and exits 0 (22.05); older versions say these.
        return lines_all_match(text, [], [r"already completing or completed", r"Invalid job id specified"])
