"""Writing, submitting and recording jobs: the one way a bin gets a job.

A first submission (single jobs or job arrays), ``cluf --resubmit`` and a continuation past
the walltime all go through :func:`dispatch`, which for a list of :class:`Script`:

1. writes every job script first (:func:`write`), so that a script that cannot be written
   stops the lot before anything is submitted;
2. with ``planned``, records the bins the submission means to submit (``manifest.plan_bins``);
3. submits the scripts one by one, and records each job in the manifest as soon as the
   scheduler has given its id (an array's tasks each get their own task id), so that a
   failure part way leaves the manifest saying exactly what was submitted.

**Locking.**  Each change of the manifest goes through ``record_with(change, bins=None)``
(``bins``: the consecutive bins whose jobs alone ``change`` changes), which the caller chooses:
a submission from cluf passes a ``manifest.Recording`` (a whole change under the manifest's
exclusive lock, a job's record under its bins' locks, in its per-bin records: each taken for
that change alone and never held while the scheduler is asked; folded into the manifest once at
the end); a continuation, already inside ``manifest.update_bin`` under the
bin's own lock, passes ``lambda change: change(m)`` on the manifest it holds, so that its
write, submission and record happen under that one lock while other bins continue at the same
moment.

**A refused submission** is :class:`Refused`, saying which script, the scheduler's error, and
what was and was not submitted; the caller words it (a first submission says how to submit the
rest, a continuation records it in the bin's job).  A job submitted but not recorded (a full
disk) is :class:`Unrecorded`, a Refused that also names the job, for the caller to say to cancel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..core.errors import UserError
from . import jobs, manifest


@dataclass
class Script:
    """One job script to write and submit: bin ``first``'s own job, or (with ``count``) the job
    array of bins ``first`` .. ``first + count - 1``.  ``path`` is set once it is written."""
    first: int
    count: Optional[int] = None
    path: Optional[str] = None

    @property
    def is_array(self) -> bool:
        return self.count is not None

    @property
    def bins(self) -> List[int]:
        return list(range(self.first, self.first + self.count)) if self.is_array else [self.first]  # type: ignore[operator]


def singles(bins: Iterable[int]) -> List[Script]:
    """One job script per bin, in the order given."""
    return [Script(i) for i in bins]


def arrays(runs: Iterable[Sequence[int]]) -> List[Script]:
    """One array script per ``(first, count)`` run of consecutive bins."""
    return [Script(first, count) for first, count in runs]


class Refused(Exception):
    """The scheduler refused ``script``: ``error`` is what it said (a RuntimeError, a
    SchedulerError included); ``done`` the ``(script, job id)`` submitted before it (and
    recorded); ``left`` the scripts not submitted, ``script`` first."""

    def __init__(self, script: Script, error: Exception, done: List[Tuple[Script, str]], left: List[Script]) -> None:
        super().__init__(str(error))
        self.script, self.error, self.done, self.left = script, error, done, left


class Unrecorded(Refused):
    """``script`` was submitted as ``job_id`` but its job could not be recorded (``error``, an
    OSError: a full disk, say): the scheduler runs a job the manifest does not name, which the
    caller must say to cancel.  ``left`` starts with ``script``."""

    def __init__(self, script: Script, job_id: str, error: Exception, done: List[Tuple[Script, str]],
                 left: List[Script]) -> None:
        super().__init__(script, error, done, left)
        self.job_id = job_id


def write(plan: jobs.RunPlan, scripts: List[Script], resume: bool = False, max_running: Optional[int] = None,
          say_write_errors: bool = False) -> List[str]:
    """Write the job scripts (replacing only cluf's own: ``jobs.check_ours``), setting each
    ``path``; returns the paths.  An OSError goes out as it is, or with ``say_write_errors`` as
    a UserError naming the jobs dir (cluf's first submission and ``-q``)."""
    try:
        if scripts and not scripts[0].is_array:
            paths = jobs.write(plan, [s.first for s in scripts], resume=resume)
        else:
            paths = [jobs.write_array(plan, s.first, s.count, max_running, resume) for s in scripts]  # type: ignore[arg-type]
    except OSError as e:
        if not say_write_errors:
            raise
        raise UserError(f"Cannot write the job scripts in {plan.jobs_dir}: {e.strerror}.") from None
    for s, path in zip(scripts, paths):
        s.path = path
    return paths


def _record(m: dict, plan: jobs.RunPlan, script: Script, job_id: str, resume: bool, calls: Dict[int, int],
            marks: Dict[int, Optional[dict]]) -> None:
    if not script.is_array:
        manifest.record(m, script.first, script.path, job_id, resume, calls=calls.get(script.first),  # type: ignore[arg-type]
                        journal=marks[script.first])
        return
    sched = plan.scheduler
    for i in script.bins:
        index = i - script.first + sched.array_first_index
        manifest.record(m, i, script.path, sched.task_id(job_id, index), resume, array_id=job_id, calls=calls.get(i),  # type: ignore[arg-type]
                        journal=marks[i])


def dispatch(plan: jobs.RunPlan, scripts: List[Script], record_with: Callable, *, resume: bool = False,
             calls: Optional[Dict[int, int]] = None, planned: Optional[Iterable[int]] = None,
             max_running: Optional[int] = None, say_write_errors: bool = False,
             written: Optional[Callable] = None,
             submitted: Optional[Callable] = None) -> List[Tuple[Script, str]]:
    """Write ``scripts``, submit each and record its job through ``record_with`` (see the module's
    docstring for the steps and the locking); returns ``[(script, job id)]``.

    ``resume``: the scripts always pass --resume (and the single jobs' records say so);
    ``calls``: bin -> its number of calls, recorded where known; ``planned``: the bins to
    record as meant to be submitted, before the first submission; ``max_running`` and
    ``say_write_errors``: see :func:`write`.  ``written(scripts)`` is called once they are
    all written, before anything is submitted; ``submitted(script, job_id)`` after each job
    is recorded.  A refused submission raises :class:`Refused`."""
    write(plan, scripts, resume, max_running, say_write_errors)
    if written is not None:
        written(scripts)
    if planned is not None:
        try:
            record_with(lambda m: manifest.plan_bins(m, planned))
        except OSError as e:
            raise UserError(f"Cannot write the manifest of the run in {plan.jobs_dir}: {e.strerror or e}. Nothing "
                            f"was submitted; run the same command again once that is fixed.") from None
    calls = calls or {}
    done: List[Tuple[Script, str]] = []
    for k, script in enumerate(scripts):
        # The bins' journals as they are before the job can start: what it writes is told apart
        # from what earlier jobs wrote (manifest.journal_is_current).
        marks = {i: manifest.journal_mark(plan.path(i, ".journal")) for i in script.bins}
        try:
            job_id = plan.scheduler.submit(script.path, plan.submit_dir)  # type: ignore[arg-type]
        except RuntimeError as e:
            raise Refused(script, e, list(done), scripts[k:]) from None
        try:
            record_with(lambda m, script=script, job_id=job_id, marks=marks:
                        _record(m, plan, script, job_id, resume, calls, marks), bins=script.bins)
        except OSError as e:
            raise Unrecorded(script, job_id, e, list(done), scripts[k:]) from None
        done.append((script, job_id))
        if submitted is not None:
            submitted(script, job_id)
    return done
