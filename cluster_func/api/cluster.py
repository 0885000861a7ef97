"""The cluster from Python: :func:`submit`, :class:`Run` and ``map(..., nodes=N)``.

``submit(target, args, nodes=N)`` writes the run as files a cluf job can run (see
:mod:`.payload`) and submits them with cluf's own submission (cluster/submission.py), so that the
jobs are cluf's: job scripts runnable by hand, the manifest, a journal per bin with the values
in it (``--results pkl``), walltime continuation, requeue resumes, the scheduler's cancel obeyed,
GPUs per job; and ``cluf --status/--wait/--gather/--cancel/--resubmit DIR`` work on it.  Each
job runs clum with ``--resume``: the payload never changes within a jobs dir, so a job's bin
resumes from its own journal whenever it runs again.

:class:`Run` attaches to a run by its jobs dir (after a kernel restart, from another notebook):
``status()``, ``wait()``, ``results()``, ``cancel()``, ``resubmit()``.  The values come from each
bin's journal, whose records carry them with a checksum (record/journal.py): a position is
taken only from the bin it belongs to; the failures, with their tracebacks, from the journals'
last runs.  Nothing is kept in this process that the jobs dir does not hold.

The keyword options are cluf's option table (options/table.py), in Python's spelling
(``walltime="2h"``, ``slurm_options={"qos": "long"}``), with the same meanings, defaults and
checks; ~/.clufrc applies as for cluf.  Bad values raise ``ValueError``/``TypeError`` with cluf's
words in Python's terms.
"""

from __future__ import annotations

import contextlib
import glob
import inspect
import io
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional

from .. import options as options_mod
from ..core.errors import SchedulerError, UserError
from . import payload
from .failures import MISSING, Failure, MapError

__all__ = ["submit", "Run", "RunStatus", "cluster_map", "PYTHON_OPTIONS"]

PROG = "cluster_func.submit"
DEFAULT_JOBS_ROOT = "cluf-jobs"
# cluf's options that the call itself decides (or takes as its own parameters) rather than keywords
_DECIDED = {"nodes", "iterations", "jobs-dir", "no-q", "target", "args", "results", "wait", "resume", "bins"}
PYTHON_OPTIONS = [o for o in options_mod.OPTIONS if "cluf" in o.commands.split() and o.name not in _DECIDED]
_BY_ATTR = {options_mod.attr(o.name): o for o in PYTHON_OPTIONS}


# --- messages in Python's words -------------------------------------------------------------------

def python_words(text: str) -> str:
    """cluf's message in Python's terms: ``-n/--nodes N`` -> ``nodes=N``, ``--walltime`` -> ``walltime=``."""
    text = re.sub(r"(?<![\w-])-\w/--([a-z][a-z0-9-]*)", lambda m: options_mod.attr(m.group(1)) + "=", text)
    text = re.sub(r"(?<![\w-])--([a-z][a-z0-9-]*)",
                  lambda m: options_mod.attr(m.group(1)) + "=" if options_mod.canonical(m.group(1))
                  in options_mod.BY_NAME else m.group(0), text)
    return text.replace("cluf_options", "the keyword arguments").replace("-j DIR", "jobs_dir=DIR")


def _value_error(e: Exception) -> ValueError:
    return ValueError(f"{PROG}: {python_words(str(e))}")


def _jobs_dir_path(who: str, jobs_dir: Any) -> str:
    """``jobs_dir`` as a str path, or a TypeError saying what to give."""
    if not isinstance(jobs_dir, (str, os.PathLike)):
        raise TypeError(f"{who}: jobs_dir must be a path (a str or a pathlib.Path), not a {type(jobs_dir).__name__}: "
                        f"the folder that cluster_func.submit or map(nodes=...) printed.")
    return os.fsdecode(os.fspath(jobs_dir))


def _as_said_by(who: str, e: BaseException) -> BaseException:
    """A bad-input error that :func:`submit` raised, in the words of ``who`` (``cluster_func.map``),
    the function the user called."""
    text = str(e)
    if type(e) not in (TypeError, ValueError) or PROG not in text:
        return e
    return type(e)(text.replace(f"{PROG}()", f"{who}()").replace(PROG, who))


# --- checking what was given ------------------------------------------------------------------------

def _check_target_and_args(target: Any, args: Any) -> List[Any]:
    """The arguments as a list, after clum's own rules for a target and an args (core/script.py)."""
    from ..core.script import args_problem, target_problem

    if not callable(target):
        raise TypeError(f"{PROG}: target must be a function (it is called once per element of args), not a "
                        f"{type(target).__name__}. Example: cluster_func.submit(score, [1, 2, 3], nodes=4).")
    problem = target_problem(target)
    if problem:
        raise TypeError(f"{PROG}: the target {python_words(problem)}")
    try:
        iter(args)
    except TypeError:
        raise TypeError(f"{PROG}: args must be an iterable of arguments (a list, a range, a generator), not a "
                        f"{type(args).__name__}.") from None
    problem = args_problem(args)
    if problem:
        raise TypeError(f"{PROG}: args {python_words(problem)}")
    return list(args)


def _options(given: Dict[str, Any]) -> Dict[str, Any]:
    """The keyword options, checked as cluf checks its options: {canonical name: value}."""
    unknown = [k for k in given if k not in _BY_ATTR]
    if unknown:
        raise TypeError(f"{PROG}() got an unexpected keyword argument {unknown[0]!r}. Its options are: "
                        f"{', '.join(sorted(_BY_ATTR))} (besides nodes, iterations and jobs_dir).")
    try:
        return options_mod.from_dict({k: v for k, v in given.items() if v is not None}, "cluf", PROG)
    except UserError as e:  # (its message names PROG itself: "In cluster_func.submit, option ...")
        raise ValueError(python_words(str(e))) from None


def _count(nodes: Optional[int], iterations: Optional[int], n: int) -> int:
    for name, value in (("nodes", nodes), ("iterations", iterations)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{PROG}: {name}={value!r}: give a whole number of at least 1.")
    if nodes is not None and iterations is not None:
        raise ValueError(f"{PROG}: give either nodes (how many jobs) or iterations (calls per job), not both.")
    if nodes is None and iterations is None:
        raise ValueError(f"{PROG}: say how to split the work: nodes=N for N jobs, or iterations=K for about K "
                         f"calls per job. Example: cluster_func.submit(score, xs, nodes=10).")
    if n == 0:
        raise ValueError(f"{PROG}: args is empty: there is nothing to submit.")
    if nodes is not None:
        if nodes > options_mod.MAX_NODES:
            raise ValueError(f"{PROG}: nodes={nodes} is more than the {options_mod.MAX_NODES:,} jobs one run may have.")
        return nodes
    return max(1, -(-n // iterations))  # type: ignore[operator]  # (nodes or iterations: checked)


# --- the run's files -----------------------------------------------------------------------------

def _run_files(jobs_dir: str) -> List[str]:
    return sorted(glob.glob(os.path.join(glob.escape(jobs_dir), "*" + payload.RUN_SUFFIX)))


def _differences(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    said = []
    if old["target"]["digest"] != new["target"]["digest"]:
        said.append(f"the target ({old['target'].get('name')!r} there, {new['target']['name']!r} now, or the "
                    f"same name with other code, defaults or closure values)")
    if old["args"]["digest"] != new["args"]["digest"] or old["count"] != new["count"]:
        said.append(f"the args ({old['count']} elements there, {new['count']} now, or other values)")
    if old["nodes"] != new["nodes"]:
        said.append(f"the number of jobs ({old['nodes']} there, {new['nodes']} now)")
    return said


def _quietly(quiet: bool) -> contextlib.AbstractContextManager:
    return contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext()


def submit(target: Callable[..., Any], args: Iterable[Any], *, nodes: Optional[int] = None,
           iterations: Optional[int] = None, jobs_dir: Optional[str] = None, quiet: bool = False,
           init_worker: Optional[Callable[[], Any]] = None, **options: Any) -> "Run":
    """Submit ``target(*a)`` for every ``a`` in ``args`` to the cluster's scheduler, as ``cluf
    -n/-i`` does, and return the :class:`Run` at once (see the module docstring).

    :param nodes: how many jobs (bins); or ``iterations``: about how many calls per job.
    :param jobs_dir: where the job scripts, manifest, journals and payload go (default:
        ``cluf-jobs/<target name>-<digest of target and args>`` in the current directory, so that
        the same call made again finds its run).  A jobs dir holding this same run is attached to:
        bins that failed, vanished or were cancelled are resubmitted with resume, and no recorded
        call runs again; one holding another run is refused, saying what differs.
    :param quiet: print nothing (the per-job ``submitted`` lines are never printed from Python).
    :param init_worker: called once in each worker of each job before its first call (clum's
        ``init_worker``): open a connection, load a model.
    :param options: cluf's options in Python's spelling, with cluf's defaults: see
        :data:`PYTHON_OPTIONS` and ``help(cluster_func.submit)``.
    :raises TypeError, ValueError: a bad target, args or option (cluf's words, Python's terms).
    :raises cluster_func.core.errors.SchedulerError: the scheduler refused (its own words).
    """
    items = _check_target_and_args(target, args)
    if init_worker is not None and not callable(init_worker):
        raise TypeError(f"{PROG}: init_worker must be a function that each worker calls once before its first "
                        f"call, not a {type(init_worker).__name__}.")
    opts_given = _options(options)
    count = _count(nodes, iterations, len(items))
    name = payload.run_name(target)
    tdigest, adigest = payload.target_digest(target), payload.args_digest(items)
    if jobs_dir is None:
        jobs_dir = os.path.join(DEFAULT_JOBS_ROOT, f"{name}-{tdigest[:6]}{adigest[:6]}")
    jobs_dir = os.path.abspath(_jobs_dir_path(PROG, jobs_dir))
    script = os.path.join(jobs_dir, name + payload.SCRIPT_SUFFIX)
    ident = payload.identity(name, script, count, target, items, tdigest, adigest)
    manifest_path = os.path.join(jobs_dir, f"{name}-{count}.manifest.json")
    with contextlib.ExitStack() as held:
        if not _hold_submission(held, jobs_dir, manifest_path):
            # another process was submitting into this jobs dir, and has ended: begin again (attach to its run)
            return submit(target, items, nodes=nodes, iterations=iterations, jobs_dir=jobs_dir, quiet=quiet,
                          init_worker=init_worker, **options)
        if _claim(jobs_dir, name, ident) and os.path.exists(manifest_path):
            return _attach(jobs_dir, quiet)  # the same run, submitted before
        # (a new run; or the same whose earlier submission ended before its manifest: submit it)
        try:
            payload.write_payload(os.path.join(jobs_dir, name + payload.PAYLOAD_SUFFIX), target, items, init_worker)
            payload.write_script(script, target, len(items))
        except payload.PayloadError as e:
            raise ValueError(f"{PROG}: {e}") from None
        except OSError as e:
            raise OSError(f"{PROG}: cannot write the run's files in {jobs_dir}: {e.strerror or e}. Free some space "
                          f"or give another jobs_dir.") from None
        _submit_files(script, jobs_dir, count, opts_given, quiet)
    run = Run(jobs_dir)
    if not quiet:
        print(f"{PROG}: {len(items)} calls in {count} job{'s' * (count != 1)} on {run.scheduler}; jobs dir "
              f"{jobs_dir}. From anywhere: cluster_func.Run({jobs_dir!r}), or cluf --status {jobs_dir}")
    return run


def _hold_submission(held: contextlib.ExitStack, jobs_dir: str, manifest_path: str) -> bool:
    """Take the run's submission lock (the one cluf takes, cluster/manifest.py) into ``held``; when
    another process holds it, wait for it to end and return False (nothing held)."""
    from ..cluster import manifest

    if os.path.isdir(jobs_dir):
        _refuse_foreign(jobs_dir, os.path.basename(manifest_path))
    try:
        os.makedirs(jobs_dir, exist_ok=True)
    except OSError as e:
        raise OSError(f"{PROG}: cannot make the jobs dir {jobs_dir}: {e.strerror or e}. Give another jobs_dir.") \
            from None
    try:
        held.enter_context(manifest.submitting(manifest_path))
        return True
    except UserError as e:
        if "right now" not in str(e):
            raise _value_error(e) from None
    _wait_for_submitter(manifest_path)
    return False


def _attach(jobs_dir: str, quiet: bool) -> "Run":
    run = Run(jobs_dir)
    run._resubmit(brief=True, quiet=quiet)
    return run


def _claim(jobs_dir: str, name: str, ident: Dict[str, Any]) -> bool:
    """Make the jobs dir this run's, its identity written first (exclusively, so that of two
    processes submitting at once one submits and the other attaches).  Returns True when the jobs
    dir already held this same run; raises ValueError when it holds another."""
    existing = _run_files(jobs_dir) if os.path.isdir(jobs_dir) else []
    if not existing:
        try:
            if payload.create_identity(os.path.join(jobs_dir, name + payload.RUN_SUFFIX), ident):
                return False
        except payload.PayloadError as e:
            raise ValueError(f"{PROG}: {e}") from None
        except OSError as e:
            raise OSError(f"{PROG}: cannot write the run's files in {jobs_dir}: {e.strerror or e}. Free some "
                          f"space or give another jobs_dir.") from None
        existing = _run_files(jobs_dir)
    if len(existing) > 1:
        raise ValueError(f"{PROG}: {jobs_dir} holds {len(existing)} runs submitted from Python "
                         f"({', '.join(map(os.path.basename, existing))}); one jobs dir holds one run. Give another "
                         f"jobs_dir.")
    try:
        old = payload.read_identity(existing[0])
    except payload.PayloadError as e:
        raise ValueError(f"{PROG}: {e}") from None
    differs = _differences(old, ident)
    if differs:
        raise ValueError(f"{PROG}: {jobs_dir} holds another run: it differs in {' and '.join(differs)}. Its "
                         f"recorded calls would not be this run's. Give this run another jobs_dir, or attach to that "
                         f"one with cluster_func.Run({jobs_dir!r}).")
    return True


def _wait_for_submitter(manifest_path: str) -> None:
    """Wait while another process submits into this run (it holds the manifest's submission lock,
    cluster/manifest.py), so that attaching sees every job it recorded."""
    import fcntl

    from ..cluster.manifest import SUBMITTING_SUFFIX

    try:
        fd = os.open(manifest_path + SUBMITTING_SUFFIX, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        return  # no submission has started, or there is nothing to wait for
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)  # (released at once: we only wait for the other's end)
    except OSError:
        pass
    finally:
        os.close(fd)


def _refuse_foreign(jobs_dir: str, ours: str) -> None:
    from ..cluster.manifest import MANIFEST_SUFFIX

    manifests = glob.glob(os.path.join(glob.escape(jobs_dir), "*" + MANIFEST_SUFFIX))
    if manifests and not _run_files(jobs_dir) and [os.path.basename(m) for m in manifests] != [ours]:
        raise ValueError(f"{PROG}: {jobs_dir} holds a run that cluf submitted from a script, not one submitted "
                         f"from Python. Give this run a jobs_dir of its own.")


def _submit_files(script: str, jobs_dir: str, nodes: int, given: Dict[str, Any], quiet: bool) -> None:
    """cluf's submission of the script (the option table's merge and checks, then cluster/submission)."""
    from ..cluster import submission
    from ..core.script import load_script

    opts = options_mod.merge("cluf", options_mod.load_rc(), given,
                             {"nodes": nodes, "jobs-dir": jobs_dir, "results": "pkl", "resume": True})
    try:
        options_mod.check(opts)
    except UserError as e:
        raise _value_error(e) from None
    opts["script"], opts["passthrough"] = script, []
    env = dict(opts.get("env") or {})
    env.setdefault("PYTHONPATH", os.pathsep.join(payload.caller_path()))
    opts["env"] = env
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            module = load_script(script)
            submission.run(module, opts, options_mod.forwarded(opts))
    except SchedulerError as e:
        raise type(e)(f"{PROG}: {e}\n{out.getvalue()}".rstrip()) from None
    except UserError as e:
        raise _value_error(e) from None
    if not quiet:
        for line in out.getvalue().splitlines():
            if not line.startswith("submitted "):
                print(line)


def _signature() -> inspect.Signature:
    """submit's signature with every option of the table, for help() and Tab completion."""
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("target", inspect.Parameter.POSITIONAL_OR_KEYWORD),
              inspect.Parameter("args", inspect.Parameter.POSITIONAL_OR_KEYWORD),
              inspect.Parameter("nodes", kw, default=None), inspect.Parameter("iterations", kw, default=None),
              inspect.Parameter("jobs_dir", kw, default=None), inspect.Parameter("quiet", kw, default=False),
              inspect.Parameter("init_worker", kw, default=None)]
    params += [inspect.Parameter(a, kw, default=o.default) for a, o in _BY_ATTR.items()]
    return inspect.Signature(params)


def _options_doc() -> str:
    lines = ["", "Options (cluf's, in Python's spelling):", ""]
    for a, o in _BY_ATTR.items():
        text = o.text("help", "cluf")
        lines.append(f"    {a}: {python_words(text)}")
    return "\n".join(lines)


submit.__signature__ = _signature()  # type: ignore[attr-defined]
submit.__doc__ = (submit.__doc__ or "") + _options_doc()


# --- a submitted run ------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunStatus:
    """A run's state at one moment.

    ``bins``: ``{state: [bin, ...]}`` with the status table's words (queued, running, done,
    failed, vanished, cancelled, stopped at walltime); ``words``: ``{bin: what the scheduler or
    the journal said}`` for bins that are not simply queued, running or done; ``done``/``failed``
    calls of ``total``; ``finished``: nothing more will happen by itself."""

    bins: Dict[str, List[int]]
    words: Dict[int, str]
    done: int
    failed: int
    total: int
    finished: bool
    jobs: Dict[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.finished and set(self.bins) <= {"done"} and self.failed == 0 and self.done == self.total

    def __str__(self) -> str:
        states = ", ".join(f"{len(b)} {s}" for s, b in self.bins.items())
        return f"bins: {states}; calls {self.done} done, {self.failed} failed of {self.total}"


class Run:
    """A run submitted from Python, by its jobs dir: ``cluster_func.Run(jobs_dir)`` attaches to it
    from any process (after a kernel restart, from another notebook)."""

    def __init__(self, jobs_dir: str) -> None:
        jobs_dir = os.path.abspath(_jobs_dir_path("cluster_func.Run", jobs_dir))
        files = _run_files(jobs_dir) if os.path.isdir(jobs_dir) else []
        if len(files) != 1:
            what = (f"no run submitted from Python (no *{payload.RUN_SUFFIX})" if not files else
                    f"{len(files)} runs ({', '.join(map(os.path.basename, files))})")
            raise ValueError(f"cluster_func.Run: {jobs_dir} holds {what}. Give the jobs_dir that "
                             f"cluster_func.submit or map(nodes=...) used (it printed it); for a run cluf submitted "
                             f"from a script, use cluf --status/--wait/--gather on its jobs dir.")
        try:
            self._ident = payload.read_identity(files[0])
        except payload.PayloadError as e:
            raise ValueError(f"cluster_func.Run: {e}") from None
        self.jobs_dir = jobs_dir
        self.nodes: int = self._ident["nodes"]
        self.total: int = self._ident["count"]
        self.name: str = self._ident["name"]
        self.manifest_path = os.path.join(jobs_dir, f"{self.name}-{self.nodes}.manifest.json")

    def __repr__(self) -> str:
        return f"cluster_func.Run({self.jobs_dir!r})  # {self.total} calls of {self._ident['target']['name']} in {self.nodes} jobs"

    @property
    def scheduler(self) -> str:
        m = self._manifest()
        return str(m.get("scheduler", "?")) if m else "?"

    def _manifest(self) -> Dict[str, Any]:
        from ..cluster import manifest

        try:
            m = manifest.load_manifest(self.manifest_path)
        except UserError as e:
            raise ValueError(f"cluster_func.Run: {e}") from None
        if m is None:
            raise ValueError(f"cluster_func.Run: {self.jobs_dir} has no manifest ({self.manifest_path}): its jobs "
                             f"were never submitted, or the file was moved. Submit the run again.")
        return m

    def _states(self, cache: Optional[dict] = None) -> list:
        from ..cluster import status

        try:
            return status.bin_states(self._manifest(), cache)
        except UserError as e:
            raise RuntimeError(f"cluster_func.Run: {python_words(str(e))}") from None

    def _summary(self, states: list) -> RunStatus:
        bins: Dict[str, List[int]] = {}
        words: Dict[int, str] = {}
        for s in states:
            bins.setdefault(s.state, []).append(s.bin)
            said = s.cancelled_by or s.reason
            if said:
                words[s.bin] = str(said)
        seen = {s.bin for s in states}
        never = [i for i in range(self.nodes) if i not in seen]
        if never:
            bins["never submitted"] = never
        finished = all(s.final for s in states)
        return RunStatus(bins=dict(sorted(bins.items())), words=words, done=sum(s.done or 0 for s in states),
                         failed=sum(s.failed or 0 for s in states), total=self.total, finished=finished,
                         jobs={s.bin: s.id for s in states if s.id})

    def status(self) -> RunStatus:
        """The bins per state (the scheduler asked once), and calls done and failed of the total."""
        return self._summary(self._states())

    def wait(self, timeout: Optional[float] = None, progress: bool = True) -> RunStatus:
        """Wait as ``cluf --wait`` does: until nothing more will happen by itself, continuing the bins
        that stopped at their walltime where their own job could not; gentle polling (2 s, growing
        to a minute, and early when a bin's journal ends); one progress line (redrawn on a terminal and in Jupyter).  ``timeout``: give
        up after that many seconds (TimeoutError).  Ctrl-C stops the waiting, not the jobs."""
        from ..cluster import status

        out = sys.stderr
        redraw = (hasattr(out, "isatty") and out.isatty()) or "ipykernel" in sys.modules
        cache: dict = {}
        seen: dict = {}
        started, interval, first_done, shown = time.monotonic(), status.POLL_FIRST, None, 0.0
        try:
            while True:
                try:
                    runs = status.poll([self.manifest_path], cache,
                                       lambda t: out.write(("\r\033[K" if redraw else "") + t + "\n"))
                except UserError as e:
                    raise RuntimeError(f"cluster_func.Run.wait: {python_words(str(e))}") from None
                states = runs[0][1]
                now = time.monotonic()
                if status.all_final(runs):
                    if progress and redraw and shown:
                        out.write("\r\033[K")
                    return self._summary(states)
                if first_done is None:
                    first_done = (now, sum(s.done or 0 for s in states))
                if progress and (redraw or now - shown >= 60):
                    line = status.progress_line(runs, now - started, first_done).replace("cluf:", "cluster_func:", 1)
                    out.write(("\r\033[K" + line) if redraw else line + "\n")
                    out.flush()
                    shown = now
                if timeout is not None and now - started + interval > timeout:
                    raise TimeoutError(f"cluster_func.Run.wait: the run is not finished after {timeout:g} s "
                                       f"({self._summary(states)}); the jobs go on. Wait again with "
                                       f"cluster_func.Run({self.jobs_dir!r}).wait().")
                status.nap(runs, interval, seen)
                interval = min(status.POLL_MAX, interval * 1.5)
        except KeyboardInterrupt:
            out.write(("\r\033[K" if redraw else "\n") + f"cluster_func: stopped waiting; the jobs go on. Attach "
                      f"again with cluster_func.Run({self.jobs_dir!r}).wait(), or stop them with .cancel().\n")
            raise

    def results(self) -> List[Any]:
        """The values in the order of ``args``; or :class:`MapError` naming each failed call (with its
        traceback) and each position without a value, ``.values`` holding the rest."""
        from ..cluster import jobs
        from ..record import journal as journal_mod
        from ..record.results import read_results

        m = self._manifest()
        plan = jobs.plan_from_dict(m["plan"])
        values: List[Any] = [MISSING] * self.total
        have = bytearray(self.total)
        failures: Dict[int, Failure] = {}
        round_robin = not plan.clum_args or not any(a in ("--hash", "-x", "--key", "-k") for a in plan.clum_args)
        for i in range(self.nodes):
            path = plan.path(i, ".journal")
            if not os.path.isfile(path):
                continue
            for pos, value in read_results(path):
                if 0 <= pos < self.total and (not round_robin or pos % self.nodes == i):
                    values[pos], have[pos] = value, 1
            st = journal_mod.read(path)
            for rec in st.last_failed:
                p = rec.get("pos")
                if isinstance(p, int) and 0 <= p < self.total and not have[p]:
                    tb = rec.get("tb") or f"{rec.get('type')}: {rec.get('msg')}\n"
                    failures[p] = Failure(p, str(rec.get("args")), str(rec.get("type")), str(rec.get("msg")), tb)
        missing = [p for p in range(self.total) if not have[p] and p not in failures]
        if failures or missing:
            raise MapError(failures, values, self.total, missing)
        return values

    def cancel(self) -> None:
        """Cancel the run's queued and running jobs (``cluf --cancel``); their bins show as cancelled."""
        from ..cluster import status

        try:
            with contextlib.redirect_stdout(io.StringIO()) as out:
                code = status.cancel(self.jobs_dir)
        except UserError as e:
            raise RuntimeError(f"cluster_func.Run.cancel: {python_words(str(e))}") from None
        if code:
            raise RuntimeError(f"cluster_func.Run.cancel: {out.getvalue().strip()}")

    def resubmit(self) -> List[int]:
        """Submit again, with resume, the bins that failed, vanished, stopped or were cancelled
        (``cluf --resubmit``); returns them.  Recorded calls never run again."""
        return self._resubmit(brief=False, quiet=False)

    def _resubmit(self, brief: bool, quiet: bool) -> List[int]:
        """cluf --resubmit of this run when a bin needs it; its lines said (``brief``: only the
        one that names the bins), the bins returned."""
        from ..cluster import submission

        states = self._states()  # (one scheduler query)
        seen = {s.bin for s in states}
        redo = sorted({s.bin for s in states if s.needs_rerun} | {i for i in range(self.nodes) if i not in seen})
        if not redo:
            return []
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                submission.resubmit(self.jobs_dir)
        except SchedulerError as e:
            raise type(e)(f"cluster_func.Run.resubmit: {e}") from None
        except UserError as e:
            raise RuntimeError(f"cluster_func.Run.resubmit: {python_words(str(e))}") from None
        lines = [t for t in out.getvalue().splitlines() if not t.startswith("submitted ")]
        if brief:
            lines = [f"cluster_func: {self.jobs_dir}: " + t.replace("cluf: ", "") for t in lines if "resubmitting" in t]
        if not quiet:
            for t in lines:
                print(t)
        return redo


def cluster_map(target: Callable[..., Any], args: Iterable[Any], *, nodes: Optional[int] = None,
                iterations: Optional[int] = None, jobs_dir: Optional[str] = None, quiet: bool = False,
                progress: bool = True, **options: Any) -> List[Any]:
    """``submit(...).wait()`` then ``results()``; called again with the same target, args and
    jobs_dir (default: derived from them), it attaches to that run and runs no recorded call again."""
    try:
        run = submit(target, args, nodes=nodes, iterations=iterations, jobs_dir=jobs_dir, quiet=quiet, **options)
    except (TypeError, ValueError) as e:
        raise _as_said_by("cluster_func.map", e) from None
    run.wait(progress=progress and not quiet)
    return run.results()
