"""A cluf submission: from the loaded script and merged options to job scripts written and
submitted, their ids in the run's manifest.

Top-down: decide how many jobs (``-n``, or ``-i`` by counting the calls), pick the scheduler,
refuse bins that are still queued or running, then write one job script per bin (or job
arrays) and submit them one by one through :func:`cluster_func.cluster.dispatch.dispatch`, which
records each job in the manifest as it is submitted, so that a failure part-way says exactly
what was and was not submitted (the messages are worded here).  ``cluf --resubmit``
(:func:`resubmit`, here) submits through :func:`submit` too.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from types import ModuleType
from typing import Any, Callable, Iterable, Iterator

from ..core import bins
from . import dispatch, jobs, manifest
from .. import schedulers
from .status import bin_states, live_bins, load_run, manifests_in
from .status import wait as wait_for_run
from ..core.errors import Interrupted, SchedulerError, SubmitError, UserError
from ..core.errors import warner
from ..schedulers.base import QUEUED, RUNNING, Scheduler
from ..core.script import (args_error_where, check_positions, get_args, get_target, split_passthrough,
                           user_traceback)

EXIT_OK = 0


def run(module: ModuleType, opts: dict, clum_args: list[str], argv_all: list[str] | None = None) -> int:
    """Write (and submit) the run's job scripts; ``clum_args``: the words each job's clum gets
    besides --bins and --journal (from the option table: options.forwarded); ``argv_all``: the
    command line, for the command printed when a submission fails part-way (None: from Python)."""
    get_target(module, opts["target"])
    args = get_args(module, opts["args"])
    count, nodes = _count_jobs(opts, args)
    submitting = not opts["no_q"]
    sched = schedulers.get(opts["scheduler"], submitting)
    if submitting and not shutil.which(sched.submit_command):
        raise UserError(f"Cannot submit to {sched.name}: its command {sched.submit_command!r} is not on "
                        f"PATH. Run cluf where the scheduler is installed, or write the scripts "
                        f"without submitting them with -q/--no-q.")
    chosen = _chosen_bins(opts, nodes, count)
    plan = _plan(opts, nodes, sched, clum_args)
    for warning in schedulers.ignored_options(sched, opts):
        warner("cluf")(warning)
    calls = _expected_calls(args, opts, nodes, chosen)
    resume = bool(opts["resume"])
    if opts["max_running"] and not (opts["array"] and len(chosen) > 1):
        warner("cluf")("--max-running only applies with --array; ignored.")
    if not submitting:
        if opts["array"] and len(chosen) > 1:
            return submit_arrays(plan, chosen, False, opts["max_running"], calls, resume)
        paths = dispatch.write(plan, dispatch.singles(chosen), resume, say_write_errors=True)
        print(f"cluf: wrote {len(paths)} {sched.name} job script{'s' * (len(paths) != 1)} in "
              f"{plan.jobs_dir} (not submitted: -q). Run one by hand with: bash {shlex.quote(paths[0])}")
        return EXIT_OK
    with manifest.submitting(plan.manifest_path()):  # from the check of live bins to the last record
        _refuse_live_bins(plan, chosen)
        if opts["array"] and len(chosen) > 1:
            status = submit_arrays(plan, chosen, True, opts["max_running"], calls, resume)
        else:
            status = submit(plan, chosen, argv_all, resume=resume, calls=calls, say_write_errors=True)
    return _then_wait(plan, status, opts["wait"])


def _count_jobs(opts: dict, args: Any) -> tuple[int | None, int]:
    """(the number of calls, or None when unknown; the number of jobs), from -n or -i (the
    command line's already won over cluf_options / ~/.clufrc).  The arguments are surveyed
    here: an empty or failing iterable, or a --hash/--key position beyond the first element's
    arguments, is refused before anything is written."""
    if opts["nodes"] is not None and opts["iterations"] is not None:
        raise UserError("Give either -n/--nodes (how many jobs) or -i/--iterations (calls per job), "
                        "not both (check cluf_options and ~/.clufrc too).")
    if opts["nodes"] is None and opts["iterations"] is None:
        raise UserError("Say how to split the work: -n/--nodes N for N jobs, or -i/--iterations K for "
                        "about K calls per job. Example: cluf script.py -n 12")
    count, first = survey_args(args, opts["args"], opts["script"], need_count=opts["iterations"] is not None,
                               need_first=opts["hash"] is not None or opts["key"] is not None)
    check_first_element(first, opts)
    if opts["iterations"] is None:
        return count, opts["nodes"]
    nodes = max(1, -(-count // opts["iterations"]))  # type: ignore[operator]  # (counted: need_count)
    print(f"cluf: {count} calls, {opts['iterations']} per job: {nodes} job{'s' * (nodes != 1)}.")
    return count, nodes


def _chosen_bins(opts: dict, nodes: int, count: int | None) -> list[int]:
    """The bins to write and submit: those of -b (its N must be the number of jobs), else all;
    a round-robin bin that would hold no call is refused."""
    spec = opts["bins"]
    if spec is not None and spec.total != nodes:
        raise UserError(f"--bins {spec} names {spec.total} bins, but there are {nodes} jobs: with cluf, "
                        f"--bins x/N selects which of the N jobs to write and submit, so N must equal "
                        f"the number of nodes (e.g. -n {nodes} -b 0/{nodes}).")
    chosen = list(spec.bins) if spec is not None else list(range(nodes))
    if count is not None and opts["hash"] is None and opts["key"] is None and nodes > count:
        empty = [i for i in chosen if i >= count]  # round-robin: bin i holds positions i, i+N, ...
        if empty:
            raise UserError(
                f"-n {nodes} makes {nodes} jobs, but {opts['args']!r} holds only {count} call"
                f"{'s' * (count != 1)}, so bin{'s' * (len(empty) != 1)} {bins.format_positions(empty)} of "
                f"{nodes} would have nothing to do. Use -n {count} or fewer, or -i K for about K calls per job.")
    return chosen


def _plan(opts: dict, nodes: int, sched: Scheduler, clum_args: list[str]) -> jobs.RunPlan:
    """The run's plan from the merged options: what each job asks the scheduler for, and its clum
    command (the option table says what each job's clum gets)."""
    gpus = job_gpus(opts)  # (checked against --gpus-per-worker and -p)
    return jobs.RunPlan(
        script=opts["script"], nodes=nodes, jobs_dir=opts["jobs_dir"] or os.getcwd(),
        submit_dir=os.getcwd(), scheduler=sched, clum_args=clum_args, passthrough=opts["passthrough"],
        env=opts["env"] or {}, prepend=opts["prepend_script"] or [], append=opts["append_script"] or [],
        resources={"walltime": opts["walltime"], "memory": opts["memory"], "queue": opts["queue"],
                   "account": opts["account"], "gpus": gpus,
                   "cpus": opts["cpus"] or opts["processes"] or (gpus and gpus // (opts["gpus_per_worker"] or 1))},
        raw=opts[f"{sched.name}_options"] or {},
        results=opts["results"],
        max_restarts=opts["max_restarts"],
        scheduler_path=os.path.dirname(shutil.which(sched.submit_command) or "") or None)


def _refuse_live_bins(plan: jobs.RunPlan, chosen: list[int]) -> None:
    """Bins whose recorded job is still queued or running are not submitted again."""
    busy = live_bins(plan.manifest_path(), chosen, plan.scheduler)
    if busy:
        listed = ", ".join(f"bin {i} (job {j}, {st})" for i, j, st in busy[:10])
        raise UserError(
            f"{len(busy)} of these bins are already queued or running: {listed}"
            f"{', ...' if len(busy) > 10 else ''}. Submitting them again would run their calls twice. "
            f"Wait for them, cancel them first (cluf --cancel {plan.jobs_dir}), or choose the other "
            f"bins with -b.")


def _expected_calls(args: Any, opts: dict, nodes: int, chosen: list[int]) -> dict[int, int]:
    """bin -> the number of calls it holds, for the bins where that is known without running them."""
    mode = "hash" if opts["hash"] is not None else "key" if opts["key"] is not None else "round-robin"
    calls: dict[int, int] = {}
    for i in chosen:
        n = bins.expected_count(args, bins.BinSpec((i,), nodes), mode)
        if n is not None:
            calls[i] = n
    return calls


def job_gpus(opts: dict) -> int | None:
    """cluf --gpus N: the GPUs per job (None without), checked against --gpus-per-worker and -p."""
    gpus, per_worker, processes = opts["gpus"], opts["gpus_per_worker"], opts["processes"]
    if gpus is None:
        if per_worker:
            raise UserError(f"--gpus-per-worker {per_worker} needs --gpus N, the GPUs each job asks the "
                            f"scheduler for. Example: --gpus {2 * per_worker} --gpus-per-worker {per_worker}")
        return None
    if per_worker and per_worker > gpus:
        raise UserError(f"--gpus-per-worker {per_worker} is more than the {gpus} GPUs per job (--gpus {gpus}): "
                        f"no worker could start. Ask for more GPUs per job or fewer per worker.")
    most = gpus // (per_worker or 1)
    if processes and processes > most:
        k = per_worker or 1
        raise UserError(f"-p {processes} workers per job with {k} GPU{'s' * (k != 1)} each need "
                        f"{processes * k} GPUs, but each job asks for {gpus} (--gpus {gpus}). "
                        f"Give -p {most} or less (or leave -p out: one worker per --gpus-per-worker GPUs), "
                        f"or more GPUs per job.")
    return gpus


def _then_wait(plan: jobs.RunPlan, status: int, wait: Any) -> int:
    """--wait on a submitting command: wait for the run (see status.wait)."""
    if not wait or status != EXIT_OK:
        return status

    return wait_for_run(plan.jobs_dir)


_NOTHING = object()


def survey_args(args: Any, name: str, path: str, need_count: bool, need_first: bool) -> tuple[int | None, Any]:
    """(the number of calls, or None when unknown; the first element, or _NOTHING).

    The count is len() where it exists, else (when ``need_count``) by iterating without keeping
    anything.  Without len(), or when ``need_first``, the first element is peeked at (cluf never
    runs the calls: consuming a generator here costs the jobs nothing).  An empty ``args`` is
    refused, and so is one that raises: the message says at which element, with the script's
    traceback.
    """
    try:
        count = len(args)
    except Exception:  # noqa: BLE001 - no len() (or a broken one): iterate
        count = None
    if count and not need_first:
        return count, _NOTHING
    position = 0
    try:
        it = iter(args)
        first = next(it, _NOTHING)
        if first is not _NOTHING:
            position = 1
            if count is None and need_count:
                seen = [1]
                try:
                    position = count = _count(it, name, path, seen)
                finally:
                    position = seen[0]  # where it raised, if it did
        elif count is None:
            count = 0
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the script's iterable failed
        raise UserError(f"The arguments iterable {name!r} of {path} raised {type(e).__name__} "
                        f"{args_error_where(position)}; nothing was written or submitted. Fix it and run "
                        f"cluf again. Its traceback:\n{user_traceback(e)}") from None
    if not count and first is _NOTHING:
        raise UserError(f"The arguments iterable {name!r} of {path} is empty: there are no calls to "
                        f"submit. Check how it is built (a generator can be used only once).")
    return count, first


COUNT_FIRST_WORD_TTY, COUNT_FIRST_WORD, COUNT_EVERY = 0.5, 10.0, 60.0  # seconds


def _count(it: Iterator[Any], name: str, path: str, seen: list[int]) -> int:
    """1 + the number of elements left in ``it`` (the first was taken), keeping none (also in
    ``seen[0]``, where it got to when ``it`` raises).  While it
    counts, a thread says how far it got: on a terminal a line redrawn twice a second, otherwise a
    line after 10 s and then every minute, each saying how to stop (an endless generator never
    ends).  Ctrl-C stops it with a message (exit 130)."""
    import itertools
    import threading

    counter = itertools.count(2)  # advanced by zip per element: costs nothing to read from the thread
    done = threading.Event()
    tty = sys.stderr.isatty()

    def so_far() -> int:
        return int(repr(counter)[len("count("):-1]) - 1

    first_word = COUNT_FIRST_WORD_TTY if tty else COUNT_FIRST_WORD
    try:  # (the tests' hook: a first line sooner)
        first_word = float(os.environ.get("CLUSTER_FUNC_COUNT_FIRST_WORD", first_word))
    except ValueError:
        pass

    def report() -> None:
        started = time.monotonic()
        wait = first_word
        while not done.wait(wait):
            text = (f"cluf: counting the calls of {name!r} for -i: {so_far():,} so far, "
                    f"{time.monotonic() - started:.0f} s (an endless generator never ends: Ctrl-C stops, "
                    f"then use -n N)")
            sys.stderr.write(f"\r\033[K{text}" if tty else text + "\n")
            sys.stderr.flush()
            wait = COUNT_FIRST_WORD_TTY if tty else COUNT_EVERY
        if tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()

    thread = threading.Thread(target=report, name="cluf-counting", daemon=True)
    thread.start()
    try:
        for _ in zip(it, counter):
            pass
    except (KeyboardInterrupt, Interrupted):
        done.set()
        thread.join()
        sys.stderr.write(f"cluf: stopped counting the calls of {name!r} in {path} after {so_far():,}; nothing was "
                         f"written or submitted. Give the number of jobs with -n N instead of -i, which needs "
                         f"the total.\n")
        raise
    finally:
        done.set()
        thread.join()
        seen[0] = so_far()
    return so_far()


def check_first_element(first: Any, opts: dict) -> None:
    """A --hash/--key position beyond the first element's arguments: refused before submitting
    (every job would fail those calls)."""
    if first is not _NOTHING:
        check_positions(first, opts)


def replace_bins(argv: Iterable[str], new_spec: str) -> list[str]:
    """argv (before '--') with any -b/--bins/--bin replaced by ``--bins new_spec`` at the end."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("-b", "--bins", "--bin"):
            skip = True
            continue
        if a.startswith(("--bins=", "--bin=")) or (a.startswith("-b") and not a.startswith("--")):
            continue
        out.append(a)
    return out + ["--bins", new_spec]


def _contiguous_runs(items: Iterable[int], limit: int) -> list[list[int]]:
    """Split sorted ints into runs of consecutive values, each at most ``limit`` long."""
    runs: list[list[int]] = []
    for i in items:
        if runs and i == runs[-1][0] + runs[-1][1] and runs[-1][1] < limit:
            runs[-1][1] += 1
        else:
            runs.append([i, 1])
    return runs


def submit_arrays(plan: jobs.RunPlan, chosen: list[int], submitting: bool, max_running: int | None,
                  calls: dict[int, int], resume: bool = False) -> int:
    sched = plan.scheduler
    say = warner("cluf")
    if max_running and sched.max_running_note:
        say(f"--max-running is ignored: {sched.max_running_note}.")
        max_running = None
    limit = (sched.max_array_size() if submitting else None) or len(chosen)
    runs = _contiguous_runs(sorted(chosen), limit)
    if len(runs) > 1 and limit < len(chosen):
        print(f"cluf: {sched.name} allows at most {limit} tasks per array here: splitting the "
              f"{len(chosen)} bins into {len(runs)} arrays.")
        if max_running:
            share = max(1, max_running // len(runs))
            note = "" if share * len(runs) <= max_running else \
                f" (at least 1 each, so up to {share * len(runs)} may run at once)"
            (say if note else print)(f"--max-running {max_running} is shared out between the "
                                     f"{len(runs)} arrays: at most {share} running tasks per array{note}.")
            max_running = share
    scripts = dispatch.arrays(runs)
    if not submitting:
        paths = dispatch.write(plan, scripts, resume, max_running, say_write_errors=True)
        print(f"cluf: wrote {len(paths)} {sched.name} array job script{'s' * (len(paths) != 1)} in "
              f"{plan.jobs_dir} (not submitted: -q). Run one bin by hand with: "
              f"{jobs.ARRAY_BIN_VAR}={runs[0][0]} bash {shlex.quote(paths[0])}")
        return EXIT_OK
    manifest_path = plan.manifest_path()

    def said(script: dispatch.Script, array_id: str) -> None:
        print(f"submitted {script.path} as job {array_id} (array of {script.count}: bins {script.first}-"
              f"{script.first + script.count - 1})")  # type: ignore[operator]

    try:
        with manifest.Recording(manifest_path, plan) as record_with:
            dispatch.dispatch(plan, scripts, record_with, resume=resume, calls=calls, planned=chosen,
                              max_running=max_running, say_write_errors=True, submitted=said)
    except dispatch.Refused as e:
        rest = [i for s in e.left for i in s.bins]
        raise SubmitError(
            (_unrecorded(e, plan, f"the array {e.script.path}") or
             f"submitting the array {e.script.path} failed: {e.error}.") + f" Arrays submitted before it are recorded in "
            f"{manifest_path}. Not submitted: bins {bins.format_positions(rest)} of {plan.nodes}; "
            f"to submit them (as single jobs) once the problem is fixed, run:\n    "
            f"cluf --resubmit {shlex.quote(plan.jobs_dir)}") from None
    return EXIT_OK


def _unrecorded(e: dispatch.Refused, plan: jobs.RunPlan, what: str) -> str:
    """For a job submitted but not recorded: what happened, and the command that cancels it."""
    if not isinstance(e, dispatch.Unrecorded):
        return ""
    cancel = " ".join(shlex.quote(w) for w in plan.scheduler.cancel_argv([e.job_id]))
    why = getattr(e.error, "strerror", None) or e.error
    return (f"{what} was submitted as job {e.job_id}, but cluf could not record it in the manifest ({why}), so "
            f"cluf cannot follow that job. Cancel it first, with:\n    {cancel}\nthen, once the problem is fixed, "
            f"submit it again with the rest as below.")


def submit(plan: jobs.RunPlan, chosen: list[int], argv_all: list[str] | None = None, resume: bool = False,
           calls: dict[int, int] | None = None, manifest_path: str | None = None, say_write_errors: bool = False,
           written: Callable[[list[dispatch.Script]], None] | None = None) -> int:
    """Write, submit and record the single jobs of the bins ``chosen`` (see dispatch.py); a refused
    submission says what was submitted and the command that submits the rest (the same cluf
    command with their -b when ``argv_all`` is given, else ``cluf --resubmit``)."""
    manifest_path = manifest_path or plan.manifest_path()
    try:
        with manifest.Recording(manifest_path, plan) as record_with:
            done = dispatch.dispatch(plan, dispatch.singles(chosen), record_with, resume=resume, calls=calls,
                                     planned=chosen, say_write_errors=say_write_errors, written=written,
                                     submitted=lambda script, job_id: print(f"submitted {script.path} as job "
                                                                            f"{job_id}"))
    except dispatch.Refused as e:
        rest = [s.first for s in e.left]
        if argv_all is not None:
            cmd_argv, passthrough = split_passthrough(argv_all)
            cmd = ["cluf", *replace_bins(cmd_argv, f"{bins.format_positions(rest)}/{plan.nodes}")]
            if passthrough:
                cmd += ["--", *passthrough]
        else:
            cmd = ["cluf", "--resubmit", plan.jobs_dir]
        submitted = ", ".join(f"bin {s.first} as job {j}" for s, j in e.done) or "none"
        raise SubmitError(
            (_unrecorded(e, plan, f"bin {e.script.first}") or f"submitting bin {e.script.first} failed: {e.error}.")
            + f"\n  submitted: {submitted}\n  not submitted: bins "
            f"{bins.format_positions(rest)} of {plan.nodes}\n  to submit the rest once the problem is "
            f"fixed, run:\n    {' '.join(shlex.quote(w) for w in cmd)}") from None
    print(f"cluf: submitted {len(done)} job{'s' * (len(done) != 1)} to {plan.scheduler.name}; "
          f"manifest: {manifest_path}")
    return EXIT_OK


def resubmit(jobs_dir: str | None) -> int:
    """Submit again, with --resume, the bins that are failed, vanished or done with failed calls."""
    status_code = 0
    for path in manifests_in(jobs_dir):
        with manifest.submitting(path):  # one cluf submitting into a run at a time
            status_code = max(status_code, _resubmit_run(path))
    return status_code


def _resubmit_run(path: str) -> int:
    """cluf --resubmit for the run of the manifest at PATH."""
    m = load_run(path)
    states = bin_states(m)
    redo = [s.bin for s in states if s.needs_rerun]
    planned, submitted = manifest.planned_bins(m), set(manifest.submitted_bins(m))
    redo += [i for i in sorted(planned) if i not in submitted]  # their submission failed
    never = [i for i in range(m["nodes"]) if i not in submitted and i not in planned]
    if never:
        print(f"cluf: bins {bins.format_positions(never)} of {m['nodes']} were never submitted, so they are not "
              f"resubmitted; 'cluf {m['plan']['script']} -n {m['nodes']} -b {bins.format_positions(never)}/{m['nodes']}' "
              f"(with your other options) submits them.")
    stuck = [s for s in states if s.stuck]
    if stuck:
        sched = schedulers.SCHEDULERS[m["scheduler"]]()
        ids = sorted({s.id for s in stuck})
        try:
            sched.cancel(ids)
            print(f"cluf: deleted {len(ids)} job(s) held in an error state: {' '.join(ids)}")
        except SchedulerError as e:
            print(f"cluf: warning: could not delete the job(s) held in an error state ({' '.join(ids)}): {e}",
                  file=sys.stderr)
    busy = [s for s in states if s.state in (QUEUED, RUNNING)]
    if busy:
        print(f"cluf: leaving {len(busy)} queued or running job(s) alone: bins "
              f"{', '.join(str(s.bin) for s in busy)}")
    if not redo:
        print(f"cluf: nothing to resubmit for {m['plan']['script']}: every bin is done or still queued/running.")
        return EXIT_OK
    plan = jobs.plan_from_dict(m["plan"])
    redo.sort()

    def said(scripts: list[dispatch.Script], redo: list[int] = redo) -> None:  # (written, not yet submitted)
        print(f"cluf: resubmitting {len(redo)} bin(s) with --resume: {', '.join(map(str, redo))}")

    return submit(plan, redo, resume=True, manifest_path=path, written=said)
