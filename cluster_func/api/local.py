"""clum's engine from Python: :func:`map` and :func:`imap`.

``cluster_func.map(target, args)`` is ``[target(*a) for a in args]`` on local worker processes,
run by the same :class:`cluster_func.local.runner.Runner` as ``clum``: adaptive batches, dying workers
replaced, ``retries`` and ``timeout``, the progress line on a terminal, and, with
``journal=PATH``, a journal that a killed or failed run resumes from (``resume=True``).

How it is put together (nothing here is a second engine):

- the values travel as clum's ``--results`` records do: the workers encode them, and the runner
  hands each batch's records to the journal (inside the record that says the batch completed)
  and to a :class:`_Collector`, which decodes them in this process.  Without a journal the
  workers pickle a batch's values whole, with its first position (the ``values`` format, see
  cluster_func.record.results.value_encoder), which this process stores with one slice
  assignment; with one, they write clum's ``.pkl`` records, and a resumed run gets the values
  of the calls it skips from the journal's records (:func:`_previous_values`).
- the target reaches the workers as clum's does: under ``fork`` they inherit it (so a closure
  or a lambda works), under ``spawn``/``forkserver`` it is pickled, so it must be importable.
- a :class:`_MapReporter` keeps each failed call's exception and traceback for :class:`MapError`.
"""

import contextlib
import io
import os
import pickle
import queue
import signal
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from ..core.arguments import Arguments
from ..core.errors import Interrupted, UserError
from ..core.script import args_problem, short_repr, target_problem
from ..local.reporter import Reporter
from ..options import MAX_WALLTIME, MIN_TIMEOUT
from .failures import MISSING, Failure, MapError

__all__ = ["MapError", "Failure", "MISSING", "Arguments"]  # (not map: a star import must not hide the builtin)

PROG = "cluster_func.map"
MAX_PROCESSES = 10_000


# --- the values' way back -----------------------------------------------------------------

def _pickle_stream(data) -> Iterator[Tuple[int, Any]]:
    """The ``(position, value)`` records of clum's ``.pkl`` format in ``data``."""
    f = io.BytesIO(data)
    end = len(data)
    while f.tell() < end:
        yield pickle.load(f)


_HOLE = object()  # no value (yet) at this position


class _Collector:
    """What the runner takes for a results file: it keeps the values (or, for imap, hands them
    on), and with a journal also writes the records to the values file beside it.

    ``values`` holds them by position (``_HOLE`` where there is none); ``filled`` says, a byte a
    position, which have one (so that the holes are counted in C at the end: ``list.count``
    would compare every value).  Both are sized from ``len(args)`` when there is one."""

    def __init__(self, fmt, keep=True, sink=None, size=None):
        self.format = fmt  # "values" (in memory only) or "pkl" (the journal keeps them too)
        self.keep = keep
        self.sink = sink
        size = size or 0
        self.values: List[Any] = [_HOLE] * size if keep else []
        self.filled = bytearray(size)
        self.unpicklable: Dict[int, Failure] = {}

    def write(self, data):
        if not data:
            return
        if self.format == "values":
            positions, values, bad = pickle.loads(data)
        else:
            positions, values = zip(*_pickle_stream(data))
            bad = None
        self._store(positions, values)
        for p, type_name, error in bad or ():
            msg = (f"the value returned, a {type_name}, cannot be pickled to come back from its worker "
                   f"process ({error})")
            self.unpicklable[p] = Failure(p, "?", "TypeError", msg, f"TypeError: {msg}\n")
            self.filled[p] = 0
            if self.keep:
                self.values[p] = _HOLE
        if self.sink is not None:
            if type(positions) is int:
                positions = range(positions, positions + len(values))
            pairs = list(zip(positions, values))
            if bad:
                gone = {p for p, _, _ in bad}
                pairs = [(p, v) for p, v in pairs if p not in gone]
            if pairs:
                self.sink(pairs)

    def _grow(self, last):
        have = len(self.filled)
        if last > have:
            more = max(last, 2 * have) - have
            self.filled.extend(bytes(more))
            if self.keep:
                self.values.extend([_HOLE] * more)

    def _store(self, positions, values):
        if type(positions) is int:
            first, last = positions, positions + len(values)
            self._grow(last)
            if self.keep:
                self.values[first:last] = values
            self.filled[first:last] = b"\x01" * (last - first)
            return
        self._grow(max(positions) + 1)
        out, filled, keep = self.values, self.filled, self.keep
        for p, v in zip(positions, values):
            if keep:
                out[p] = v
            filled[p] = 1

    def has(self, p):
        return p < len(self.filled) and self.filled[p] == 1

    def finish(self, n):
        """Exactly n positions; returns how many have no value."""
        self._grow(n)
        del self.filled[n:]
        if self.keep:
            del self.values[n:]
        return self.filled.count(0)


def _previous_values(journal, kept, positions: Iterable[int]) -> Dict[int, Any]:
    """The values of the calls at ``positions`` that an earlier run on this journal completed
    and this resumed run skipped (``kept``, a record.resume.Kept): they travel in the journal's
    own records, as clum's do (see cluster_func.record.results.export)."""
    from ..record.results import export

    wanted = set(positions)
    found = {}

    def take(data):
        for p, v in _pickle_stream(data):
            if p in wanted:
                found[p] = v

    if wanted:
        export(journal.path, "pkl", journal.first_seq, kept, take)
    return found


# --- failures and messages -------------------------------------------------------------------

class _Silent:
    def write(self, text):
        pass

    def flush(self):
        pass

    def isatty(self):
        return False


class _MapReporter(Reporter):
    """clum's reporter (failures as they happen, the progress line), which also keeps every
    final failure for :class:`MapError`."""

    def __init__(self, quiet, progress, total):
        super().__init__(stream=_Silent() if quiet else None, progress=progress and not quiet, total=total,
                         prog=PROG)
        self.failed_calls: Dict[int, Failure] = {}

    def failure(self, position, element, exc_type, message, tb, attempt=0, will_retry=False):
        if not will_retry:
            self.failed_calls[position] = Failure(position, short_repr(element), exc_type, str(message), tb)
        super().failure(position, element, exc_type, message, tb, attempt, will_retry)


def _usage(text, kind=ValueError):
    return kind(text)


_CLI_WORDS = (("--journal PATH", "journal=PATH"), ("--resume", "resume=True"), ("clum run", "run"),
              ("Another clum", "Another"), ("before loading the script", "before they had the target"),
              ("--start-method", "start_method"), ("--results", "journal=PATH"))


def _for_python(text: str) -> str:
    """A message of clum's (the journal's, the runner's) in the words of map's parameters."""
    import re

    text = re.sub(r"--journal (?!PATH)([^\s)]+?)([.,;]?(?:\s|\)|$))", r"journal='\1'\2", text)
    for cli, python in _CLI_WORDS:
        text = text.replace(cli, python)
    return text


_IN_USE = set()  # journals that a map of this process is using (the journal's OS lock is per process)
_IN_USE_LOCK = threading.Lock()


# --- one run ------------------------------------------------------------------------------------

@dataclass
class _Plan:
    target: Callable
    args: Iterable
    processes: int
    journal: Optional[str]
    resume: bool
    retries: int
    timeout: Optional[float]
    method: str
    quiet: bool
    progress: bool
    total: Optional[int]
    keep: bool = True
    sink: Optional[Callable] = None
    init_worker: Optional[Callable] = None
    runner: Any = None
    stop: bool = False  # imap's consumer is gone: do not start (or stop) the run


@dataclass
class _Result:
    n: int
    values: List[Any]  # by position (_HOLE where there is none); empty for imap
    previous: Dict[int, Any]  # the values of the calls a resumed run skipped
    failures: Dict[int, Failure]


def _check(target, args, processes, journal, resume, retries, timeout, start_method, quiet, progress,
           init_worker=None) -> _Plan:
    from .. import engine

    if not callable(target):
        raise _usage(f"cluster_func.map: target must be a function (it is called once per element of args), "
                     f"not a {type(target).__name__}. Example: cluster_func.map(score, [1, 2, 3]).", TypeError)
    problem = target_problem(target, getattr(target, "__name__", "target"))
    if problem:
        raise _usage(f"cluster_func.map: the target {short_repr(target, 80)} {problem}", TypeError)
    problem = args_problem(args)
    if problem:
        raise _usage(f"cluster_func.map: args {problem}", TypeError)
    try:
        iter(args)
    except TypeError:
        raise _usage(f"cluster_func.map: args must be an iterable of arguments (a list, a range, a generator), "
                     f"not a {type(args).__name__}.", TypeError) from None
    if processes is None:
        processes = engine.cpus()
    if isinstance(processes, bool) or not isinstance(processes, int) or not 1 <= processes <= MAX_PROCESSES:
        raise _usage(f"cluster_func.map: processes={processes!r} is not a number of worker processes: give an "
                     f"integer from 1 to {MAX_PROCESSES}, or None for the CPUs this process may use.")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise _usage(f"cluster_func.map: retries={retries!r}: give how many times a failing call runs again, "
                     f"an integer of 0 or more.")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))):
        raise _usage(f"cluster_func.map: timeout={timeout!r}: give the seconds a call may run (a number), or "
                     f"None for no limit.", TypeError)
    if timeout is not None and not MIN_TIMEOUT <= timeout <= MAX_WALLTIME:
        raise _usage(f"cluster_func.map: timeout={timeout!r}: give the seconds a call may run, from the floor of "
                     f"{MIN_TIMEOUT:g} (map looks at running calls at most that often) to {MAX_WALLTIME:,} (ten "
                     f"years), or None for no limit.")
    for name, value in (("resume", resume), ("quiet", quiet), ("progress", progress)):
        if not isinstance(value, bool):
            raise _usage(f"cluster_func.map: {name}={value!r}: give True or False.", TypeError)
    if journal is not None:
        if not isinstance(journal, (str, os.PathLike)):
            raise _usage(f"cluster_func.map: journal={journal!r}: give the journal's path (a str or a "
                         f"pathlib.Path), or None for no journal.", TypeError)
        journal = os.fspath(journal)
        if not isinstance(journal, str) or not journal:
            raise _usage(f"cluster_func.map: journal={journal!r}: give the journal file's path, e.g. "
                         f"journal='sweep.journal', or None for no journal.")
        journal = os.path.abspath(journal)
    if resume and journal is None:
        raise _usage("cluster_func.map: resume=True needs journal=PATH: the journal is what says which calls "
                     "completed. Give the journal of the run to resume, e.g. journal='sweep.journal'.")
    if start_method is not None and not isinstance(start_method, str):
        raise _usage(f"cluster_func.map: start_method={start_method!r}: give 'fork', 'spawn' or 'forkserver' (a "
                     f"str), or None for the default.", TypeError)
    try:
        method = engine.start_method(start_method)
    except ValueError:
        import multiprocessing

        given = (f"start_method={start_method!r}" if start_method else
                 f"$CLUSTER_FUNC_START_METHOD={os.environ.get('CLUSTER_FUNC_START_METHOD')!r} (start_method=None)")
        raise _usage(f"cluster_func.map: {given} is not available here: give one of "
                     f"{', '.join(repr(m) for m in multiprocessing.get_all_start_methods())}.") from None
    _refuse_nested()
    if method != "fork":
        _refuse_unguarded_main(method)
        try:
            pickle.dumps(target)
        except Exception as e:  # noqa: BLE001
            raise _usage(
                f"cluster_func.map: under start_method={method!r} every worker is a fresh interpreter that must "
                f"import the target, but {short_repr(target, 80)} cannot be pickled by reference ({e}). Define "
                f"it with def at the top level of a module (not a lambda, a closure or a function in a "
                f"notebook cell), or use start_method='fork', where workers inherit any function.",
                TypeError) from None
    if init_worker is not None and not callable(init_worker):
        raise _usage(f"cluster_func.map: init_worker must be a function that each worker calls once before its "
                     f"first call (to open a connection, load a model), not a {type(init_worker).__name__}.",
                     TypeError)
    if init_worker is not None and method != "fork":
        try:
            pickle.dumps(init_worker)
        except Exception as e:  # noqa: BLE001
            raise _usage(f"cluster_func.map: under start_method={method!r} init_worker must be importable like the "
                         f"target ({e}): define it with def at the top level of a module, or use "
                         f"start_method='fork'.", TypeError) from None
    try:
        total = len(args)
    except Exception:  # noqa: BLE001 - no len(): the progress line has no total
        total = None
    return _Plan(target, args, processes, journal, bool(resume), retries, timeout, method, bool(quiet),
                 bool(progress), total, init_worker=init_worker)


def _refuse_nested():
    """map inside a worker (of clum, cluf or another map): refused in one sentence, since a
    worker is a daemon process, which multiprocessing does not let start processes."""
    import multiprocessing

    if multiprocessing.current_process().daemon:
        raise RuntimeError(
            "cluster_func.map was called inside a worker process (of clum, cluf or another map), which cannot "
            "start worker processes of its own: a worker is a daemon process, ended with its run, and would "
            "leave its children behind. Loop in the target instead ([f(x) for x in xs]), or make the inner "
            "calls elements of the outer args.")


def _refuse_unguarded_main(method):
    """Under spawn or forkserver every worker imports the main script again: a map reached from
    its top level, outside ``if __name__ == "__main__":``, would start the run again in every
    worker (multiprocessing then fails each with a long traceback).  Found from the call stack
    and the script's own syntax tree; said in a few lines."""
    import ast
    import sys

    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    frame = sys._getframe(2)
    while frame is not None and not (frame.f_code.co_name == "<module>" and main is not None
                                     and frame.f_globals is vars(main)):
        frame = frame.f_back
    if frame is None or not path or not os.path.isfile(path):
        return
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return
    line = frame.f_lineno
    for node in tree.body:
        if isinstance(node, ast.If) and node.lineno <= line <= (node.end_lineno or node.lineno) \
                and "__main__" in ast.unparse(node.test) and "__name__" in ast.unparse(node.test):
            return
    raise RuntimeError(
        f"cluster_func.map with start_method={method!r} was called from the top level of {path} (line {line}), "
        f"outside `if __name__ == \"__main__\":`. Each {method} worker imports that script again, which "
        f"would start the run again in every worker. Put the call (and what only the main program does) "
        f"under `if __name__ == \"__main__\":`, or use start_method='fork'.")


def _watched(args, box: list):
    """args, with the exception it raises kept in ``box`` (the runner reports it; map then
    raises it).  (A generator: ``yield from`` costs next to nothing per element.)"""
    try:
        yield from args
    except BaseException as e:
        box.append(e)
        raise


def _claim(path) -> str:
    """Mark the journal ``path`` as used by a map of this process (refused when another is)."""
    with _IN_USE_LOCK:
        if path in _IN_USE:
            raise _usage(f"cluster_func.map: another map of this process is using the journal "
                         f"{path}: two runs on one journal would run calls twice. Wait for it to "
                         f"end, or give this one a journal of its own (journal=PATH).")
        _IN_USE.add(path)
    return path


def _open_journal(plan: _Plan, in_main: bool):
    """The plan's journal, opened (the caller claimed it); clum's errors said for Python."""
    from ..core.errors import signals_held
    from ..local.reporter import warner
    from ..record.writer import Journal

    # The journal names map as its script and the target's name as its target, so that a resume
    # with another function is refused (a function redefined in a notebook keeps its name).
    label, identity = PROG, {"target": str(getattr(plan.target, "__name__", "?"))}
    say = warner(PROG)
    warn = (lambda text: None) if plan.quiet else (lambda text: say(_for_python(text)))
    try:
        with signals_held() if in_main else contextlib.nullcontext():
            return Journal(plan.journal, label, "0/1", "round-robin", plan.resume, warn,
                           identity=identity, values="pkl")
    except UserError as e:
        raise _usage(f"cluster_func.map: {_for_python(str(e))}") from None


def _runner(plan: _Plan, reporter, work, journal, collector):
    """clum's runner for the plan, from the one engine builder."""
    from .. import engine

    source = (engine.inherited(plan.target, plan.init_worker) if plan.method == "fork"
              else _Importable(plan.target, plan.init_worker))
    settings = engine.Settings(source, plan.processes, plan.method, retries=plan.retries, timeout=plan.timeout,
                               values=collector.format)
    return engine.build(settings, work, reporter, journal=journal, collect=collector.write)


def _raise_for(plan: _Plan, outcome, journal, args_error: list):
    """Raise what clum would report as an error of the run that ended with ``outcome``."""
    broken = journal.broken if journal is not None else None
    if outcome.journal_error or broken is not None:
        raise OSError(f"{PROG} stopped: {outcome.journal_error or broken}. The calls recorded in the journal "
                      f"{plan.journal} are complete; free some space (or fix the file system), then run again "
                      f"with resume=True to do the rest.")
    if outcome.interrupted_by is not None:
        raise Interrupted(outcome.interrupted_by)
    if outcome.fatal:
        hint = ("" if plan.method == "fork" else
                f" Under start_method={plan.method!r} each worker imports the target's module: define the "
                f"target at the top level of an importable module (a function in __main__ of a notebook "
                f"cannot be found there), or use start_method='fork'.")
        raise RuntimeError(f"{PROG} stopped: {_for_python(outcome.fatal)}. {outcome.done} calls completed before "
                           f"that.{hint}")
    if args_error:
        e = args_error[0]
        if hasattr(e, "add_note"):
            e.add_note(f"({PROG}: raised by the args iterable; the {outcome.done} calls started before it "
                       f"completed" + (f" and are in the journal {plan.journal}" if plan.journal else "") + ".)")
        raise e


def _result(base, reporter, collector, journal, resumed) -> _Result:
    """The values of a complete run: the collector's, and a resumed run's earlier ones from the journal."""
    n = base.produced()
    failures = dict(reporter.failed_calls)
    failures.update(collector.unpicklable)
    holes = collector.finish(n)
    missing = [p for p in range(n) if not collector.has(p) and p not in failures] if holes else []
    previous = _previous_values(journal, resumed.kept, missing) if resumed is not None and missing else {}
    lost = [p for p in missing if p not in previous]
    if lost:
        raise RuntimeError(
            f"{PROG}: {len(lost)} calls (first at position {lost[0]}) have no value, although none of them "
            f"failed: this is a bug in cluster-func. Run again with resume=False to compute every value afresh.")
    return _Result(n, collector.values, previous, failures)


def _execute(plan: _Plan) -> _Result:
    """Run the plan with clum's runner; raise what clum would report as an error."""
    from .. import engine
    from ..core import bins

    reporter = _MapReporter(plan.quiet, plan.progress, plan.total)
    args_error = []
    # (A list, a tuple or a range cannot raise: no wrapper, which costs this process per element.)
    source_args = plan.args if type(plan.args) in (list, tuple, range) else _watched(plan.args, args_error)
    if type(plan.args) is range and plan.journal is None and plan.total is not None:
        base = work = bins.RangeWork(plan.args)  # batches sent as slices of the range
    else:
        base = work = bins.select(source_args, bins.BinSpec((0,), 1))
    in_main = threading.current_thread() is threading.main_thread()
    journal = claimed = resumed = None
    collector = _Collector("values", keep=plan.keep, sink=plan.sink, size=plan.total)
    status = "aborted"
    outcome = None
    try:
        if plan.journal is not None:
            claimed = _claim(plan.journal)
            journal = _open_journal(plan, in_main)
            collector = _Collector("pkl", keep=plan.keep, sink=plan.sink, size=plan.total)
            resumed = engine.resume_work(work, journal, "round-robin") if plan.resume else None
            if resumed is not None:
                work = resumed
                if reporter.total is not None:
                    reporter.total = max(0, reporter.total - journal.previous.recorded)
        runner = _runner(plan, reporter, work, journal, collector)
        plan.runner = runner
        if plan.stop:
            runner.request_stop()
        outcome = runner.run()
        status = engine.end_status(outcome)
    except KeyboardInterrupt:  # Ctrl-C before the runner took the signals over
        status = "interrupted"
        raise
    finally:
        if journal is not None:
            journal.close(outcome.done if outcome else 0, outcome.failed if outcome else 0, status)
        if claimed is not None:
            with _IN_USE_LOCK:
                _IN_USE.discard(claimed)
    _raise_for(plan, outcome, journal, args_error)
    return _result(base, reporter, collector, journal, resumed)


class _Importable:
    """The target for spawn/forkserver workers: pickled by reference, so importable."""

    def __init__(self, target, init_worker=None):
        self.target, self.init_worker = target, init_worker

    def load(self):
        return self.target, self.init_worker


def _reraise_interrupt(signum):
    """The run stopped on SIGINT or SIGTERM: the workers are gone and the journal is closed.
    Hand the signal to the caller's own handler (KeyboardInterrupt for Ctrl-C by default)."""
    if threading.current_thread() is threading.main_thread():
        handler = signal.getsignal(signum)
        if handler not in (signal.SIG_IGN, None):
            signal.raise_signal(signum)  # SIG_DFL for SIGTERM ends the process, as without map
    raise KeyboardInterrupt


# --- the functions --------------------------------------------------------------------------------

def map(target: Callable[..., Any], args: Iterable[Any], *, processes: Optional[int] = None,
        journal: Optional[str] = None, resume: bool = False, retries: int = 0, timeout: Optional[float] = None,
        start_method: Optional[str] = None, quiet: bool = False, progress: bool = True,
        init_worker: Optional[Callable[[], Any]] = None, nodes: Optional[int] = None,
        iterations: Optional[int] = None, jobs_dir: Optional[str] = None, **cluster_options: Any) -> List[Any]:
    """Call ``target`` for every element of ``args`` on worker processes; return the values in
    the order of ``args``.

    With ``nodes`` (or ``iterations``, or ``jobs_dir``) the calls run on the cluster instead, as
    cluf's jobs: ``cluster_func.submit(...)``, then ``.wait()`` and ``.results()`` (see
    :func:`cluster_func.api.cluster.submit` for ``cluster_options``, cluf's options such as
    ``walltime``, ``memory``, ``queue``); ``processes``, ``retries``, ``timeout``,
    ``start_method``, ``init_worker``, ``quiet`` and ``progress`` keep their meaning there, each
    job's clum running its bin's calls.

    An element that is a tuple is unpacked (``target(*a)``), a :class:`cluster_func.Arguments`
    gives keyword arguments too (``target(*a.args, **a.kwargs)``), anything else is the one
    argument (``target(a)``), as with clum.

    :param processes: worker processes (default: the CPUs this process may use); never more are
        started than there are calls.
    :param journal: a journal file: every completed and failed call is recorded there (and the
        values of the completed calls inside its own records), so that ``resume=True`` can skip them.
    :param resume: skip the calls the journal records as completed, run the rest, and still return
        every value (those of the skipped calls come from the values file).
    :param retries: run a failing call again up to this many times before it counts as failed.
    :param timeout: seconds a call may run; a longer call is stopped (its worker is replaced) and
        counts as failed (``TimedOut``).
    :param start_method: ``"fork"`` (the default on Linux: workers inherit ``target``, so a
        closure or a lambda works), ``"spawn"`` or ``"forkserver"`` (``target`` must then be a
        function defined at the top level of an importable module).
    :param quiet: print nothing (no failures as they happen, no progress line, no warnings).
    :param progress: the progress line on stderr when it is a terminal (or a Jupyter notebook).
    :param init_worker: called once in each worker process before its first call (clum's
        ``init_worker``): open a connection, load a model; a failure stops the run with its traceback.
    :raises MapError: once every call has run, if some failed: ``.failures`` names each failed
        position with its exception and traceback, ``.values`` holds the values of the rest.
    :raises KeyboardInterrupt: on Ctrl-C (SIGINT): the workers are stopped first, and the journal
        records what completed.

    Called from a thread other than the main one, map cannot set signal handlers: Ctrl-C then
    raises KeyboardInterrupt in the main thread only, and the run goes on (its workers end with
    it, or when the process exits).
    """
    if nodes is not None or iterations is not None or jobs_dir is not None:
        return _on_the_cluster(target, args, processes, journal, resume, retries, timeout, start_method, quiet,
                               progress, init_worker, nodes, iterations, jobs_dir, cluster_options)
    if cluster_options:
        raise TypeError(f"cluster_func.map() got an unexpected keyword argument {next(iter(cluster_options))!r} "
                        f"(cluf's options, such as walltime or memory, apply on the cluster: with nodes=N).")
    plan = _check(target, args, processes, journal, resume, retries, timeout, start_method, quiet, progress,
                  init_worker)
    try:
        result = _execute(plan)
    except Interrupted as e:
        _reraise_interrupt(e.signum)
        raise AssertionError("unreachable")  # pragma: no cover
    values = result.values
    for p, v in result.previous.items():
        values[p] = v
    if result.failures:
        for p in result.failures:
            values[p] = MISSING
        raise MapError(result.failures, values, result.n)
    return values


def _on_the_cluster(target, args, processes, journal, resume, retries, timeout, start_method, quiet, progress,
                    init_worker, nodes, iterations, jobs_dir, cluster_options) -> List[Any]:
    """map(nodes=N): submit, wait, results (api/cluster.py)."""
    from .cluster import cluster_map

    if journal is not None or resume:
        raise _usage("cluster_func.map: journal= and resume= are for a run on this machine; on the cluster each "
                     "bin keeps its own journal in the jobs dir, and calling map again with the same target and "
                     "args resumes it. Leave them out with nodes=.")
    given = {"processes": processes, "retries": retries or None, "timeout": timeout, "start_method": start_method}
    return cluster_map(target, args, nodes=nodes, iterations=iterations, jobs_dir=jobs_dir, quiet=quiet,
                       progress=progress, init_worker=init_worker,
                       **{k: v for k, v in given.items() if v is not None}, **cluster_options)


_END = object()


def imap(target: Callable[..., Any], args: Iterable[Any], *, processes: Optional[int] = None,
         journal: Optional[str] = None, resume: bool = False, retries: int = 0, timeout: Optional[float] = None,
         start_method: Optional[str] = None, quiet: bool = False, progress: bool = True,
         init_worker: Optional[Callable[[], Any]] = None) -> Iterator[Tuple[int, Any]]:
    """Like :func:`map`, but yield ``(position, value)`` as the calls complete, in no set order,
    without keeping the values.

    The run starts with the first ``next()``, in a helper thread (the caller may do anything
    between two values).  With ``resume=True`` the values of the calls the journal let it skip
    come last.  Failed calls raise :class:`MapError` after every value has been yielded (its
    ``.values`` is empty).  Leaving the loop early (``break``), or Ctrl-C while waiting for a
    value, stops the run and its workers.  The arguments are checked at once: a wrong one raises
    here, not at the first ``next()``.
    """
    plan = _check(target, args, processes, journal, resume, retries, timeout, start_method, quiet, progress,
                  init_worker)
    return _imap(plan)


def _imap(plan: _Plan):
    q = queue.SimpleQueue()
    plan.keep = False
    plan.sink = q.put
    box = {}

    def body():
        try:
            box["result"] = _execute(plan)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            box["error"] = e
        finally:
            q.put(_END)

    thread = threading.Thread(target=body, name="cluster_func.imap", daemon=True)
    thread.start()
    finished = False
    try:
        while True:
            try:
                item = q.get(timeout=0.2)  # (a timeout, so that Ctrl-C is seen while waiting)
            except queue.Empty:
                continue
            if item is _END:
                break
            yield from item
        thread.join()
        finished = True
        if "error" in box:
            error = box["error"]
            if isinstance(error, Interrupted):
                raise KeyboardInterrupt
            raise error
        result = box["result"]
        yield from sorted(result.previous.items())
        if result.failures:
            raise MapError(result.failures, [], result.n)
    finally:
        if not finished:
            plan.stop = True
            if plan.runner is not None:
                plan.runner.request_stop()
            thread.join()
