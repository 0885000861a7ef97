"""What a cluf job learns of itself: why it was stopped from outside, as its scheduler tells it.

A SIGTERM (or LSF's SIGINT) reaching clum in a cluf job is one of four things, told apart by
:func:`why_stopped` (clum asks when the signal comes and writes its verdict to
``<base>.stopped``, which the job script's continuation step reads; without it, as after a
SIGINT, the step asks itself):

- ``walltime``: it came after clum's own grace point (the scheduler's walltime is near), or the
  scheduler says so (Slurm ``JobState=TIMEOUT``, PBS ``Exit_status=-29``): clum stops as at its
  walltime (exit 75) and the bin continues;
- ``preempted``: the scheduler says the job was preempted and will not run again itself: the
  same, the bin continues;
- ``requeued``: the scheduler will run the same job again: nothing is submitted, the rerun of
  the job script resumes the bin (cluster/jobs.py);
- ``cancelled``: anything else well before the walltime (``scancel``, ``qdel``, ``bkill``): the
  bin is marked cancelled (with what the scheduler said) and never continues.  Grid Engine's
  ``qdel`` and ``qmod -rj`` send SIGKILL, so no job sees them: a qdel'd bin's journal has no end
  ("vanished" in the status) and its rerun resumes by the job script's mark.

What each scheduler says is its own file's :meth:`Scheduler.stop_verdict
<cluster_func.schedulers.base.Scheduler.stop_verdict>`; this module only finds the scheduler
of the job (:meth:`Scheduler.in_job`) and keeps the verdict for the continuation step.  It is
imported only when a signal reaches clum inside a job: plain clum imports no scheduler module.

The verdict file ``<base>.stopped`` is JSON ``{"kind", "words", "job"}`` (``job``: the job's
``$CLUF_JOB_START``, so that a verdict of an earlier job of the bin is not taken for this one's);
it is written whole (a temporary file renamed over it) and never through a symbolic link.
"""

import json
import os
import time
from typing import List, Mapping, Optional

from ..core.errors import JOB_START_VAR, SchedulerError
from .base import ASK_TIMEOUT, CANCELLED, PREEMPTED, REQUEUED, WALLTIME, StopVerdict  # noqa: F401 (re-exported)

__all__ = ["ASK_TIMEOUT", "CANCELLED", "PREEMPTED", "REQUEUED", "WALLTIME", "StopVerdict", "scheduler_verdict",
           "why_stopped", "record_verdict", "recorded_verdict", "verdict_path"]


def scheduler_verdict(env: Optional[Mapping[str, str]] = None, unanswered: Optional[List[str]] = None
                      ) -> Optional[StopVerdict]:
    """What the scheduler of this job says about why it is being stopped, or None (not in a job
    of a scheduler that says; or it did not answer: then why is appended to ``unanswered``)."""
    from . import in_detection_order

    env = os.environ if env is None else env
    for cls in in_detection_order():
        if cls.in_job(env):
            try:
                return cls().stop_verdict(env)
            except SchedulerError as e:
                if unanswered is not None:
                    unanswered.append(str(e))
                return None
    return None


def why_stopped(walltime: Optional[float] = None, grace: Optional[float] = None, signal_name: str = "SIGTERM",
                env: Optional[Mapping[str, str]] = None, now: Optional[float] = None) -> StopVerdict:
    """Why a signal from outside stopped this cluf job (see the module docstring)."""
    env = os.environ if env is None else env
    now = time.time() if now is None else now
    try:
        started = float(env.get(JOB_START_VAR) or now)
    except ValueError:
        started = now
    left = started + walltime - now if walltime else None
    if left is not None and grace is not None and left <= grace:
        return StopVerdict(WALLTIME, f"{signal_name} {max(0, left):.0f} s before the walltime")
    unanswered: List[str] = []
    said = scheduler_verdict(env, unanswered)
    if said is not None:
        return said
    before = f" {left:.0f} s before the walltime" if left is not None else ""
    why = f" ({unanswered[0]})" if unanswered else ""
    return StopVerdict(CANCELLED, f"{signal_name}{before}, and the scheduler does not say it is a preemption or "
                                  f"a rerun{why}")


def verdict_path(journal_path: str) -> str:
    """``<base>.stopped``: clum's verdict on the signal that stopped it, for the job script's
    continuation step (asking the scheduler again may fail while it is killing the job)."""
    base = journal_path[:-len(".journal")] if journal_path.endswith(".journal") else journal_path
    return base + ".stopped"


def record_verdict(journal_path: str, verdict: StopVerdict) -> None:
    """Write the verdict whole; on any failure the continuation step asks the scheduler itself."""
    path = verdict_path(journal_path)
    tmp = f"{path}.{os.getpid()}.tmp"
    data = json.dumps({"kind": verdict.kind, "words": verdict.words, "job": os.environ.get(JOB_START_VAR)})
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)
        if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
            os.unlink(tmp)  # not ours to replace
            return
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def recorded_verdict(journal_path: str) -> Optional[StopVerdict]:
    """clum's verdict in this job, or None; the file is removed."""
    path = verdict_path(journal_path)
    try:
        if os.path.islink(path):
            return None
        with open(path, encoding="utf-8") as f:
            said = json.load(f)
        os.unlink(path)
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(said, dict) or said.get("job") != os.environ.get(JOB_START_VAR):
        return None  # another job's
    kind, words = said.get("kind"), said.get("words")
    if kind not in (WALLTIME, PREEMPTED, REQUEUED, CANCELLED) or not isinstance(words, str):
        return None
    return StopVerdict(kind, words)
