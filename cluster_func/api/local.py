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


import queue
import threading
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from ..core.arguments import Arguments
from ..core.errors import Interrupted
from .failures import MISSING, Failure, MapError
from .map_args import PROG as PROG, _check, _Plan, _usage
from .map_run import _execute, _reraise_interrupt, _Result

__all__ = ["MapError", "Failure", "MISSING", "Arguments"]  # (not map: a star import must not hide the builtin)


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
    return _values(_run(plan))


def _run(plan: _Plan) -> _Result:
    """map's run on this machine; the signal that stopped it raised as the caller's handler has it."""
    try:
        return _execute(plan)
    except Interrupted as e:
        _reraise_interrupt(e.signum)


def _values(result: _Result) -> List[Any]:
    """The values in the order of args, those a resumed run skipped included; MapError if a call failed."""
    values = result.values
    for p, v in result.previous.items():
        values[p] = v
    if result.failures:
        for p in result.failures:
            values[p] = MISSING
        raise MapError(result.failures, values, result.n)
    return values


def _on_the_cluster(target: Callable[..., Any], args: Iterable[Any], processes: Optional[int], journal: Optional[str],
                    resume: bool, retries: int, timeout: Optional[float], start_method: Optional[str], quiet: bool,
                    progress: bool, init_worker: Optional[Callable[[], Any]], nodes: Optional[int],
                    iterations: Optional[int], jobs_dir: Optional[str], cluster_options: Mapping[str, Any]) -> List[Any]:
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


def _imap(plan: _Plan) -> Iterator[Tuple[int, Any]]:
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()  # lists of (position, value) pairs, then _END
    plan.keep = False
    plan.sink = q.put
    box: Dict[str, Any] = {}  # "result" (a _Result) or "error" (what the run raised)

    def body() -> None:
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
