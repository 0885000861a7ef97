"""Why clum in a cluf job was stopped from outside, as the scheduler tells it.

A SIGTERM (or LSF's SIGINT) reaching clum in a cluf job is one of
four things, told apart by :func:`why_stopped` (clum asks when the signal comes and writes its
verdict to ``<base>.stopped``, which the job script's continuation step reads; without it, as
after a SIGINT, the step asks itself):

- ``walltime``: it came after clum's own grace point (the scheduler's walltime is near), or
  the scheduler says so (Slurm ``JobState=TIMEOUT``, PBS ``Exit_status=-29``): clum stops
  as at its walltime (exit 75) and the bin continues;
- ``preempted``: the scheduler says the job was preempted and will not run again itself
  (Slurm ``JobState=PREEMPTED`` or a ``Reason`` naming preemption): the same, the bin continues;
- ``requeued``: the scheduler will run the same job again (Slurm: ``Restarts`` in
  ``scontrol show job`` above the job's ``SLURM_RESTART_COUNT``; PBS: ``Exit_status=-11``,
  the rerun code of ``qrerun`` and of a node failure): nothing is submitted, the rerun of the
  job script resumes the bin (jobs.py);
- ``cancelled``: anything else well before the walltime (``scancel``, ``qdel``, ``bkill``):
  the bin is marked cancelled (with what the scheduler said) and never continues, neither
  from its job nor under ``cluf --wait``.  Grid Engine's ``qdel`` and ``qmod -rj`` send
  SIGKILL, so no job sees them: a qdel'd bin's journal has no end ("vanished" in the
  status) and its rerun resumes by the job script's mark.

"""

import json
import os
import re
import subprocess
import time

from ..core.errors import JOB_START_VAR

WALLTIME, PREEMPTED, REQUEUED, CANCELLED = "walltime", "preempted", "requeued", "cancelled"
ASK_TIMEOUT = 3  # seconds: the scheduler's SIGKILL follows its SIGTERM soon (Slurm's KillWait, PBS's kill_delay)


_unanswered = []  # why the last question to the scheduler got no answer (for the verdict's words)


def _ask(argv, env):
    del _unanswered[:]
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=ASK_TIMEOUT,
                           env=env)
    except subprocess.TimeoutExpired:
        _unanswered.append(f"{' '.join(argv)}: no answer within {ASK_TIMEOUT} s")
        return None
    except OSError as e:
        _unanswered.append(f"{' '.join(argv)}: {e.strerror or e}")
        return None
    if p.returncode != 0:
        said = (p.stderr.strip() or p.stdout.strip() or "nothing").replace("\n", " ")[:200]
        _unanswered.append(f"{' '.join(argv)}: exit {p.returncode}, {said}")
        return None
    return p.stdout


def slurm_verdict(text: str, restart_count: int):
    """(kind, words) from ``scontrol show job -o ID`` in a job that got SIGTERM, or None."""
    fields = dict(re.findall(r"(\w+)=(\S*)", text))
    state, reason = fields.get("JobState", ""), fields.get("Reason", "")
    restarts = int(fields["Restarts"]) if fields.get("Restarts", "").isdigit() else None
    said = f"Slurm: JobState={state}, Reason={reason}, Restarts={restarts}"
    if (restarts is not None and restarts > restart_count) or state.startswith("REQUEUE"):
        return REQUEUED, f"requeued by Slurm (scontrol requeue, a node failure or a preemption; {said})"
    if state in ("TIMEOUT", "DEADLINE"):
        return WALLTIME, said
    if state == "PREEMPTED" or "preempt" in reason.lower():
        return PREEMPTED, f"preempted ({said})"
    if not state:
        return None
    return CANCELLED, f"scancel or an administrator ({said}; Slurm does not say who)"


def pbs_verdict(text: str):
    """(kind, words) from ``qstat -f ID`` in a job that got SIGTERM, or None."""
    fields = dict(re.findall(r"^\s*([\w.]+) = (.*)$", text, re.M))
    if not fields:
        return None
    status, comment = fields.get("Exit_status"), fields.get("comment", "")
    said = f"PBS: job_state={fields.get('job_state')}, substate={fields.get('substate')}, Exit_status={status}"
    if status == "-11" or fields.get("substate") in ("60", "61", "62", "63"):
        # JOB_EXEC_RERUN: qrerun, a node failure, preemption by requeue; or the substates of a rerun
        # (JOB_SUBSTATE_RERUN..RERUN3 in PBS's job.h), seen before Exit_status is set
        return REQUEUED, f"rerun by PBS (qrerun, a node failure or a preemption; {said})"
    if status == "-29":  # JOB_EXEC_KILL_WALLTIME
        return WALLTIME, said
    if "preempt" in comment.lower():
        return PREEMPTED, f"preempted ({said}, comment: {comment})"
    return CANCELLED, f"qdel or an administrator ({said}; PBS does not say who)"


def _pbs_command(name):
    """The PBS command ``name`` from PBS_EXEC in /etc/pbs.conf (a job's PATH may find another
    scheduler's qstat first), else from PATH."""
    try:
        with open(os.environ.get("PBS_CONF_FILE") or "/etc/pbs.conf", encoding="utf-8") as f:
            m = re.search(r"^PBS_EXEC=(.+)$", f.read(), re.M)
        if m and os.access(os.path.join(m.group(1).strip(), "bin", name), os.X_OK):
            return os.path.join(m.group(1).strip(), "bin", name)
    except OSError:
        pass
    return name


def scheduler_verdict(env=None):
    """What the scheduler of this job says about why it is being stopped: (kind, words) or None."""
    env = os.environ if env is None else env
    if env.get("SLURM_JOB_ID"):
        text = _ask(["scontrol", "show", "job", "-o", env["SLURM_JOB_ID"]], env)
        count = env.get("SLURM_RESTART_COUNT", "0")
        return slurm_verdict(text, int(count) if count.isdigit() else 0) if text else None
    if env.get("PBS_JOBID"):
        qstat = _pbs_command("qstat")
        # a job being deleted may already be history ("Job has finished, use -x"): then ask with -x
        # (PBS Professional's history; Torque has none, and its -x means XML)
        text = _ask([qstat, "-f", env["PBS_JOBID"]], env) or _ask([qstat, "-x", "-f", env["PBS_JOBID"]], env)
        return pbs_verdict(text) if text else None
    return None  # Grid Engine kills without a SIGTERM; LSF: not known here


def why_stopped(walltime=None, grace=None, signal_name="SIGTERM", env=None, now=None):
    """(kind, words): why a signal from outside stopped this cluf job (see the module docstring)."""
    env = os.environ if env is None else env
    now = time.time() if now is None else now
    try:
        started = float(env.get(JOB_START_VAR) or now)
    except ValueError:
        started = now
    left = started + walltime - now if walltime else None
    if left is not None and grace is not None and left <= grace:
        return WALLTIME, f"{signal_name} {max(0, left):.0f} s before the walltime"
    said = scheduler_verdict(env)
    if said is not None:
        return said
    before = f" {left:.0f} s before the walltime" if left is not None else ""
    unanswered = f" ({_unanswered[0]})" if _unanswered else ""
    return CANCELLED, (f"{signal_name}{before}, and the scheduler does not say it is a preemption or a "
                       f"rerun{unanswered}")


def verdict_path(journal_path):
    """``<base>.stopped``: clum's verdict on the signal that stopped it, for the job script's
    continuation step (asking the scheduler again may fail while it is killing the job)."""
    base = journal_path[:-len(".journal")] if journal_path.endswith(".journal") else journal_path
    return base + ".stopped"


def record_verdict(journal_path, kind, words):
    try:
        with open(verdict_path(journal_path), "w", encoding="utf-8") as f:
            json.dump({"kind": kind, "words": words, "job": os.environ.get(JOB_START_VAR)}, f)
    except OSError:
        pass  # the continuation step asks the scheduler itself


def recorded_verdict(journal_path):
    """clum's verdict in this job (kind, words), or None; the file is removed."""
    path = verdict_path(journal_path)
    try:
        with open(path, encoding="utf-8") as f:
            said = json.load(f)
        os.unlink(path)
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(said, dict) or said.get("job") != os.environ.get(JOB_START_VAR):
        return None  # another job's
    return said.get("kind"), said.get("words")
