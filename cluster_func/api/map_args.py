"""map's and imap's arguments, checked before anything starts, into the plan of one run; clum's
messages in the words of map's parameters."""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Type

from ..core.script import args_problem, short_repr, target_problem
from ..options import MAX_WALLTIME, MIN_TIMEOUT

if TYPE_CHECKING:
    from types import FrameType

    from ..local.runner import Runner
    from .collector import Sink

PROG = "cluster_func.map"
MAX_PROCESSES = 10_000


def _usage(text: str, kind: Type[Exception] = ValueError) -> Exception:
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


@dataclass
class _Plan:
    target: Callable[..., Any]
    args: Iterable[Any]
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
    sink: Optional[Sink] = None  # imap's: takes the values as they come (keep is then False)
    init_worker: Optional[Callable[[], Any]] = None
    runner: Optional[Runner] = None  # once the run is built (imap's consumer may stop it)
    stop: bool = False  # imap's consumer is gone: do not start (or stop) the run


def _check(target: Any, args: Any, processes: Any, journal: Any, resume: Any, retries: Any, timeout: Any,
           start_method: Any, quiet: Any, progress: Any, init_worker: Any = None) -> _Plan:
    """map's and imap's arguments (as the caller gave them, of any type), checked in this order
    before anything starts, into the plan of one run."""
    _check_target_and_args(target, args)
    processes = _check_counts(processes, retries, timeout)
    for name, value in (("resume", resume), ("quiet", quiet), ("progress", progress)):
        if not isinstance(value, bool):
            raise _usage(f"cluster_func.map: {name}={value!r}: give True or False.", TypeError)
    journal = _journal_path(journal, resume)
    method = _start_method(start_method)
    _refuse_nested()
    if method != "fork":
        _refuse_unguarded_main(method)  # (from here: it looks for the script's frame from map's up)
    _check_importable(target, init_worker, method)
    try:
        total: Optional[int] = len(args)
    except Exception:  # noqa: BLE001 - no len(): the progress line has no total
        total = None
    return _Plan(target, args, processes, journal, bool(resume), retries, timeout, method, bool(quiet),
                 bool(progress), total, init_worker=init_worker)


def _check_target_and_args(target: Any, args: Any) -> None:
    """The target is a function, args an iterable of arguments."""
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


def _check_counts(processes: Any, retries: Any, timeout: Any) -> int:
    """processes, retries and timeout checked; returns the processes (None: the CPUs this process may use)."""
    from .. import engine

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
    return processes


def _journal_path(journal: Any, resume: bool) -> Optional[str]:
    """The journal's absolute path, or None (refused with resume=True, which needs one)."""
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
    return journal


def _start_method(start_method: Any) -> str:
    """The start method asked for (None: $CLUSTER_FUNC_START_METHOD, else the default), refused
    when it is not available here."""
    from .. import engine

    if start_method is not None and not isinstance(start_method, str):
        raise _usage(f"cluster_func.map: start_method={start_method!r}: give 'fork', 'spawn' or 'forkserver' (a "
                     f"str), or None for the default.", TypeError)
    try:
        return engine.start_method(start_method)
    except ValueError:
        import multiprocessing

        given = (f"start_method={start_method!r}" if start_method else
                 f"$CLUSTER_FUNC_START_METHOD={os.environ.get('CLUSTER_FUNC_START_METHOD')!r} (start_method=None)")
        raise _usage(f"cluster_func.map: {given} is not available here: give one of "
                     f"{', '.join(repr(m) for m in multiprocessing.get_all_start_methods())}.") from None


def _check_importable(target: Callable[..., Any], init_worker: Any, method: str) -> None:
    """init_worker is a function; under spawn or forkserver, it and the target can be pickled (by
    reference: each worker imports them)."""
    if method != "fork":
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


def _refuse_nested() -> None:
    """map inside a worker (of clum, cluf or another map): refused in one sentence, since a
    worker is a daemon process, which multiprocessing does not let start processes."""
    import multiprocessing

    if multiprocessing.current_process().daemon:
        raise RuntimeError(
            "cluster_func.map was called inside a worker process (of clum, cluf or another map), which cannot "
            "start worker processes of its own: a worker is a daemon process, ended with its run, and would "
            "leave its children behind. Loop in the target instead ([f(x) for x in xs]), or make the inner "
            "calls elements of the outer args.")


def _refuse_unguarded_main(method: str) -> None:
    """Under spawn or forkserver every worker imports the main script again: a map reached from
    its top level, outside ``if __name__ == "__main__":``, would start the run again in every
    worker (multiprocessing then fails each with a long traceback).  Found from the call stack
    and the script's own syntax tree; said in a few lines."""
    import ast
    import sys

    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    frame: Optional[FrameType] = sys._getframe(2)
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
