"""Bins that continue past their walltime: a new job, with ``--resume``, for a bin whose job
stopped at its walltime with work left; and why a job was stopped from outside.

A cluf job script runs clum with ``--walltime``; clum stops a grace period before it and exits
75 (``EXIT_WALLTIME``).  The job script then runs ``python -m cluster_func.cluster.continuation
MANIFEST BIN``, which submits the bin again from the compute node.  Where the site refuses
that, ``cluf --wait`` (status.py) calls :func:`continue_bin` from the submitting side instead.
Either way the decision is taken under the manifest's lock, on a fresh read, so that a bin
continues once however many jobs end at the same moment:

- a bin that ``cluf --cancel`` cancelled never continues;
- a job that completed no call (a single call longer than the walltime) does not continue:
  the bin is failed, with the reason in ``cluf --status``;
- at most ``--max-restarts`` continuations (default 20), then the bin is failed;
- failed calls are not retried by continuing (that is ``--retries`` and ``--resubmit``).

The decision is taken under the bin's own lock and recorded in the bin's record
(``manifest.update_bin``), not by rewriting the manifest: bins that stop together do not wait
for each other (benchmarks/continuation_bench.py).  The new job is written, submitted and
recorded by ``dispatch.dispatch`` under that same lock.

Why a job stopped (a walltime, a preemption, a requeue or a cancel) is decided in the job by
:mod:`cluster_func.local.stops`; a cancelled bin is marked here and never continues.

**Exit status (the scheduler's accounting).**  A job that handed its bin to a new job exits 0:
its part of the work is done and recorded, and nothing about it needs a person; exit 75 would
show every long run as a string of failed jobs, and hide real failures among them.  A job
whose bin could not continue (failed, cancelled, the submission refused) exits non-zero.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Optional

from . import dispatch, jobs, manifest
from ..record import journal as journal_mod
from ..core.errors import EXIT_WALLTIME
from ..schedulers.job import CANCELLED, REQUEUED, recorded_verdict, scheduler_verdict, why_stopped

DEFAULT_MAX_RESTARTS = 20


def _plan_times(plan: jobs.RunPlan) -> tuple[int | None, float | None]:
    """(walltime, grace) of a plan's jobs, as clum counts them."""
    from ..core.walltime import grace_seconds

    walltime = plan.resources.get("walltime")
    args, grace = plan.clum_args, None
    if "--grace" in args and args.index("--grace") + 1 < len(args):
        grace = float(args[args.index("--grace") + 1])
    return walltime, (grace_seconds(walltime, grace) if walltime else None)


def mark_cancelled(manifest_path: str, i: int, stopped_id: str | None, words: str) -> str:
    """Bin i's job ``stopped_id`` was cancelled by the scheduler: the bin never continues."""
    def change(m: dict) -> str:
        job = manifest.job(m, i)
        if job is None or (stopped_id is not None and job.id != stopped_id):
            return "already continued: not marked"
        job.mark_cancelled(words, keep_earlier=True)  # 'cluf --cancel' said it first: its words stay
        return f"cancelled: {job.cancelled_by or words}"

    return manifest.update_bin(manifest_path, i, change)


@dataclass(frozen=True)
class Continuation:
    """What :func:`continue_bin` did: in words, whether a job (new, or another's) now holds the
    bin, and whether that job is another's (its own job continued it first: nothing was done)."""
    words: str
    held: bool = False
    by_another: bool = False

    def __str__(self) -> str:
        return self.words


def continue_bin(manifest_path: str, i: int, stopped_id: Optional[str] = None) -> "Continuation":
    """Continue bin i if it should; returns what happened (its words are for the log and --wait).

    ``stopped_id``: the job that stopped (the one the manifest must still name for bin i, or
    another job continued the bin already).  The new job is written, submitted and recorded
    (dispatch.dispatch) under the bin's lock, on the manifest read under it."""
    def decide(m: dict) -> Continuation:
        plan = jobs.plan_from_dict(m["plan"])
        job = manifest.job(m, i)
        if job is None:
            return Continuation("not a submitted bin")
        if stopped_id is not None and job.id != stopped_id:
            return Continuation(f"already continued as job {job.id}", held=True, by_another=True)
        if job.cancelled:
            return Continuation("cancelled: not continuing")
        if job.failed_reason:
            return Continuation(f"failed: {job.failed_reason}")
        st = journal_mod.read(plan.path(i, ".journal"))
        if st.last_status != "walltime":
            return Continuation("nothing to continue")
        restarts = job.restarts
        limit = m["plan"].get("max_restarts")
        limit = DEFAULT_MAX_RESTARTS if limit is None else limit
        if st.last_done == 0:
            job.failed_reason = ("its job stopped at the walltime without completing a call (is one call "
                                 "longer than the walltime?)")
            return Continuation(f"failed: {job.failed_reason}")
        if restarts >= limit:
            job.failed_reason = f"stopped at the walltime {restarts + 1} times (--max-restarts {limit})"
            return Continuation(f"failed: {job.failed_reason}")
        try:
            [(_, new_id)] = dispatch.dispatch(plan, dispatch.singles([i]), lambda change, bins=None: change(m),
                                              resume=True, calls={i: job.calls})
        except dispatch.Refused as e:
            job.continue_failed = str(e.error)
            return Continuation(f"could not submit the continuation ({e.error}); 'cluf --wait' or 'cluf --resubmit' "
                                f"continues it")
        job.restarts = restarts + 1
        return Continuation(f"continued as job {new_id} (restart {restarts + 1} of at most {limit})", held=True)

    return manifest.update_bin(manifest_path, i, decide)


def main(argv: list[str] | None = None) -> int:
    """``python -m cluster_func.cluster.continuation MANIFEST BIN [STATUS]`` (from a job script, with
    clum's exit status: 75 stopped at the walltime, 130/143 stopped by a signal).  Returns the
    job's exit status: 0 once a new job holds the bin, else non-zero."""
    argv = sys.argv[1:] if argv is None else argv
    manifest_path, i = argv[0], int(argv[1])
    status = int(argv[2]) if len(argv) > 2 else EXIT_WALLTIME
    try:
        m = manifest.load_manifest(manifest_path, bins=[i]) or {}
    except manifest.ManifestError as e:  # the job ends either way; say why it does not continue
        print(f"cluf: bin {i} stopped with work left; could not continue: {e}", file=sys.stderr)
        return status
    folder = m.get("plan", {}).get("scheduler_path")
    if folder:  # the submit command cluf used, not another scheduler's of the same name
        os.environ["PATH"] = folder + os.pathsep + os.environ.get("PATH", "")
    job = manifest.job(m, i)
    stopped = job.id if job is not None else None
    if status != EXIT_WALLTIME:
        try:
            plan = jobs.plan_from_dict(m["plan"])
            said = recorded_verdict(plan.path(i, ".journal")) if status == 143 else None
            if said is not None and said.kind == CANCELLED:  # asked again now that the scheduler has moved on:
                again = scheduler_verdict()                   # a rerun it had not yet shown is not a cancel
                if again is not None and again.kind == REQUEUED:
                    said = again
            verdict = said or why_stopped(*_plan_times(plan), signal_name="SIGINT" if status == 130 else "SIGTERM")
            kind, words = verdict.kind, verdict.words
            if kind == REQUEUED:
                print(f"cluf: bin {i}: {words}; the rerun of this job resumes the bin", file=sys.stderr)
                return status
            if kind != CANCELLED:  # clum took it for an interruption; asked again, the scheduler differs
                print(f"cluf: bin {i} was interrupted ({kind}: {words}); 'cluf --resubmit' resumes it",
                      file=sys.stderr)
                return status
            said = mark_cancelled(manifest_path, i, stopped, words)  # type: ignore[assignment]
        except Exception as e:  # noqa: BLE001 - the job ends either way
            said = f"could not record the cancel: {type(e).__name__}: {e}"  # type: ignore[assignment]
        print(f"cluf: bin {i} was stopped from outside; {said}; it does not continue ('cluf --resubmit' "
              f"resumes it)", file=sys.stderr)
        return status
    try:
        done = continue_bin(manifest_path, i, stopped)
    except Exception as e:  # noqa: BLE001 - the job ends either way; --wait can still continue it
        done = Continuation(f"could not continue: {type(e).__name__}: {e}")
    print(f"cluf: bin {i} stopped at its walltime with work left; {done}", file=sys.stderr)
    return 0 if done.held else EXIT_WALLTIME


if __name__ == "__main__":
    sys.exit(main())
