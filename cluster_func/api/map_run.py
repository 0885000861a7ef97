"""One run of map or imap: clum's runner and journal for the plan, its reporter, and what clum
would report as an error raised in Python's terms."""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, NoReturn, Optional, Set, Tuple

from ..core.errors import Interrupted, UserError
from ..core.script import short_repr
from ..local.reporter import Reporter
from .collector import _Collector, _previous_values
from .failures import Failure
from .map_args import PROG, _for_python, _Plan, _usage

if TYPE_CHECKING:
    from ..core.bins import RangeWork, Work
    from ..local.accounting import Outcome
    from ..local.runner import Runner
    from ..record.writer import Journal


# --- failures and messages -------------------------------------------------------------------

class _Silent:
    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


class _MapReporter(Reporter):
    """clum's reporter (failures as they happen, the progress line), which also keeps every
    final failure for :class:`MapError`."""

    def __init__(self, quiet: bool, progress: bool, total: Optional[int]) -> None:
        super().__init__(stream=_Silent() if quiet else None, progress=progress and not quiet, total=total,
                         prog=PROG)
        self.failed_calls: Dict[int, Failure] = {}

    def failure(self, position: int, element: Any, exc_type: str, message: Any, tb: str, attempt: int = 0,
                will_retry: bool = False) -> None:
        if not will_retry:
            self.failed_calls[position] = Failure(position, short_repr(element), exc_type, str(message), tb)
        super().failure(position, element, exc_type, message, tb, attempt, will_retry)


_IN_USE: Set[str] = set()  # journals that a map of this process is using (the journal's OS lock is per process)
_IN_USE_LOCK = threading.Lock()


@dataclass
class _Result:
    n: int
    values: List[Any]  # by position (_HOLE where there is none); empty for imap
    previous: Dict[int, Any]  # the values of the calls a resumed run skipped
    failures: Dict[int, Failure]


def _watched(args: Iterable[Any], box: List[BaseException]) -> Iterator[Any]:
    """args, with the exception it raises kept in ``box`` (the runner reports it; map then
    raises it).  (A generator: ``yield from`` costs next to nothing per element.)"""
    try:
        yield from args
    except BaseException as e:
        box.append(e)
        raise


def _claim(path: str) -> str:
    """Mark the journal ``path`` as used by a map of this process (refused when another is)."""
    with _IN_USE_LOCK:
        if path in _IN_USE:
            raise _usage(f"cluster_func.map: another map of this process is using the journal "
                         f"{path}: two runs on one journal would run calls twice. Wait for it to "
                         f"end, or give this one a journal of its own (journal=PATH).")
        _IN_USE.add(path)
    return path


def _open_journal(plan: _Plan, path: str, in_main: bool) -> Journal:
    """The plan's journal at ``path``, opened (the caller claimed it); clum's errors said for Python."""
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
            return Journal(path, label, "0/1", "round-robin", plan.resume, warn,
                           identity=identity, values="pkl")
    except UserError as e:
        raise _usage(f"cluster_func.map: {_for_python(str(e))}") from None


def _runner(plan: _Plan, reporter: _MapReporter, work: Any, journal: Optional[Journal], collector: _Collector) -> Runner:
    """clum's runner for the plan, from the one engine builder."""
    from .. import engine

    source = (engine.inherited(plan.target, plan.init_worker) if plan.method == "fork"
              else _Importable(plan.target, plan.init_worker))
    settings = engine.Settings(source, plan.processes, plan.method, retries=plan.retries, timeout=plan.timeout,
                               values=collector.format)
    return engine.build(settings, work, reporter, journal=journal, collect=collector.write)


def _raise_for(plan: _Plan, outcome: Outcome, journal: Optional[Journal], args_error: List[BaseException]) -> None:
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


def _result(base: Work | RangeWork, reporter: _MapReporter, collector: _Collector, journal: Optional[Journal],
            resumed: Any) -> _Result:
    """The values of a complete run: the collector's, and a resumed run's earlier ones from the journal."""
    n = base.produced()
    assert n is not None  # (map's work counts from position 0: a Work given its start)
    failures = dict(reporter.failed_calls)
    failures.update(collector.unpicklable)
    holes = collector.finish(n)
    missing = [p for p in range(n) if not collector.has(p) and p not in failures] if holes else []
    previous = (_previous_values(journal, resumed.kept, missing)
                if resumed is not None and journal is not None and missing else {})
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
    args_error: List[BaseException] = []
    # (A list, a tuple or a range cannot raise: no wrapper, which costs this process per element.)
    source_args = plan.args if type(plan.args) in (list, tuple, range) else _watched(plan.args, args_error)
    base: Work | RangeWork
    work: Any  # the selection, or a resume filter over it
    if type(plan.args) is range and plan.journal is None and plan.total is not None:
        base = work = bins.RangeWork(plan.args)  # batches sent as slices of the range
    else:
        base = work = bins.select(source_args, bins.BinSpec((0,), 1))
    in_main = threading.current_thread() is threading.main_thread()
    journal: Optional[Journal] = None
    claimed: Optional[str] = None
    resumed: Any = None  # a record.resume.ResumeWork
    collector = _Collector("values", keep=plan.keep, sink=plan.sink, size=plan.total)
    status = "aborted"
    outcome: Optional[Outcome] = None
    try:
        if plan.journal is not None:
            claimed = _claim(plan.journal)
            journal = _open_journal(plan, claimed, in_main)
            collector = _Collector("pkl", keep=plan.keep, sink=plan.sink, size=plan.total)
            resumed = engine.resume_work(work, journal, "round-robin") if plan.resume else None
            if resumed is not None:
                work = resumed
                if reporter.total is not None and journal.previous is not None:  # (a resume: it has one)
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

    def __init__(self, target: Callable[..., Any], init_worker: Optional[Callable[[], Any]] = None) -> None:
        self.target, self.init_worker = target, init_worker

    def load(self) -> Tuple[Callable[..., Any], Optional[Callable[[], Any]]]:
        return self.target, self.init_worker


def _reraise_interrupt(signum: int) -> NoReturn:
    """The run stopped on SIGINT or SIGTERM: the workers are gone and the journal is closed.
    Hand the signal to the caller's own handler (KeyboardInterrupt for Ctrl-C by default)."""
    if threading.current_thread() is threading.main_thread():
        handler = signal.getsignal(signum)
        if handler not in (signal.SIG_IGN, None):
            signal.raise_signal(signum)  # SIG_DFL for SIGTERM ends the process, as without map
    raise KeyboardInterrupt
