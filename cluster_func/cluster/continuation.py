"""Bins that continue past their walltime: a new job, with ``--resume``, for a bin whose job
stopped at its walltime with work left.

A cluf job script runs clum with ``--walltime``; clum stops a grace period before it and exits
75 (``local_run.EXIT_WALLTIME``).  The job script then runs ``python -m cluster_func.cluster.continuation
MANIFEST BIN``, which submits the bin again from the compute node.  Where the site refuses
that, ``cluf --wait`` (status.py) calls :func:`continue_bin` from the submitting side instead.
Either way the decision is taken under the manifest's lock, on a fresh read, so that a bin
continues once however many jobs end at the same moment:

- a bin that ``cluf --cancel`` cancelled never continues;
- a job that completed no call (a single call longer than the walltime) does not continue:
  the bin is failed, with the reason in ``cluf --status``;
- at most ``--max-restarts`` continuations (default 20), then the bin is failed;
- failed calls are not retried by continuing (that is ``--retries`` and ``--resubmit``).
"""

import os
import sys

from . import jobs
from ..record import journal as journal_mod
from ..core.errors import SchedulerError

DEFAULT_MAX_RESTARTS = 20


def continue_bin(manifest_path: str, i: int, stopped_id=None) -> str:
    """Continue bin i if it should; returns what happened, in words (for the log and --wait).

    ``stopped_id``: the job that stopped (the one the manifest must still name for bin i, or
    another job continued the bin already)."""
    def decide(m):
        plan = jobs.plan_from_dict(m["plan"])
        job = m["jobs"].get(str(i))
        if job is None:
            return "not a submitted bin"
        if stopped_id is not None and job.get("id") != stopped_id:
            return f"already continued as job {job.get('id')}"
        if job.get("cancelled"):
            return "cancelled: not continuing"
        if job.get("failed_reason"):
            return f"failed: {job['failed_reason']}"
        st = journal_mod.read(plan.path(i, ".journal"))
        if st.last_status != "walltime":
            return "nothing to continue"
        restarts = job.get("restarts", 0)
        limit = m["plan"].get("max_restarts")
        limit = DEFAULT_MAX_RESTARTS if limit is None else limit
        if st.last_done == 0:
            job["failed_reason"] = ("its job stopped at the walltime without completing a call (is one call "
                                    "longer than the walltime?)")
            return f"failed: {job['failed_reason']}"
        if restarts >= limit:
            job["failed_reason"] = f"stopped at the walltime {restarts + 1} times (--max-restarts {limit})"
            return f"failed: {job['failed_reason']}"
        path = jobs.write(plan, [i], resume=True)[0]
        try:
            new_id = plan.scheduler.submit(path, plan.submit_dir)
        except (SchedulerError, RuntimeError) as e:
            job["continue_failed"] = str(e)
            return f"could not submit the continuation ({e}); 'cluf --wait' or 'cluf --resubmit' continues it"
        jobs.record(m, i, path, new_id, resume=True, calls=job.get("calls"))
        job["restarts"] = restarts + 1
        return f"continued as job {new_id} (restart {restarts + 1} of at most {limit})"

    return jobs.update_manifest(manifest_path, None, decide)


def main(argv=None):
    """``python -m cluster_func.cluster.continuation MANIFEST BIN`` (from a job script)."""
    argv = sys.argv[1:] if argv is None else argv
    manifest_path, i = argv[0], int(argv[1])
    try:
        m = jobs.load_manifest(manifest_path) or {}
    except jobs.ManifestError as e:  # the job ends either way; say why it does not continue
        print(f"cluf: bin {i} stopped at its walltime with work left; could not continue: {e}", file=sys.stderr)
        return 0
    folder = m.get("plan", {}).get("scheduler_path")
    if folder:  # the submit command cluf used, not another scheduler's of the same name
        os.environ["PATH"] = folder + os.pathsep + os.environ.get("PATH", "")
    stopped = (m.get("jobs", {}).get(str(i)) or {}).get("id")
    try:
        said = continue_bin(manifest_path, i, stopped)
    except Exception as e:  # noqa: BLE001 - the job ends either way; --wait can still continue it
        said = f"could not continue: {type(e).__name__}: {e}"
    print(f"cluf: bin {i} stopped at its walltime with work left; {said}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
