"""The one builder of clum's engine, used by ``clum`` (local/run.py), by ``cluster_func.map``
and ``imap`` (api/local.py), and so by every job the cluster API submits (each runs clum).

A caller fills in one typed :class:`Settings` (what to run and how) and gets back, from
:func:`build`, the :class:`~cluster_func.local.runner.Runner` with the target's source as the
start method passes it (inherited under fork, loaded by each worker otherwise), the progress
relay when a progress line is shown, and the workers' GPU environments.  :func:`end_status`
is the journal's end status for the outcome the runner returns, the same for every caller;
:func:`resume_work` is the resume filter over the work, from the journal being resumed.

Nothing here parses options or prints a summary: the callers check their own parameters (clum
its command line, map its keyword arguments) and say how the run went in their own words.
"""

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Tuple

from .local import worker
from .local.accounting import Outcome
from .local.reporter import Reporter
from .local.runner import Runner

__all__ = ["Settings", "build", "end_status", "resume_work", "start_method", "cpus"]


@dataclass(frozen=True)
class Settings:
    """How clum's engine runs the calls.

    ``source``: how the workers get the target (:class:`~cluster_func.local.worker.Inherited`,
    :class:`~cluster_func.local.worker.FromScript`, or any object with ``load()``).
    ``values``: the format in which workers encode the values ("jsonl", "pkl", or "values" for
    map's in-memory batches); None drops them.  ``stop_at``: (start no new call after, stop
    running calls at) as time.monotonic() values.  ``slot_env``: each worker slot's environment
    (its GPUs)."""

    source: Any
    processes: int
    start_method: str
    retries: int = 0
    timeout: Optional[float] = None
    values: Optional[str] = None
    stop_at: Optional[Tuple[float, float]] = None
    slot_env: Optional[Callable[[int], Mapping[str, str]]] = None


def cpus() -> int:
    """The CPUs this process may use."""
    return len(os.sched_getaffinity(0))


def start_method(asked: Optional[str]) -> str:
    """The start method asked for, else $CLUSTER_FUNC_START_METHOD, else fork where there is
    fork.  Raises ValueError naming the ones available when the asked one is not."""
    method = asked or os.environ.get("CLUSTER_FUNC_START_METHOD")
    if method:
        import multiprocessing

        if method not in multiprocessing.get_all_start_methods():
            raise ValueError(f"{method} is not available here; choose one of "
                             f"{', '.join(multiprocessing.get_all_start_methods())}")
        return method
    return "fork" if hasattr(os, "fork") else "spawn"  # (multiprocessing's list, without importing it)


def _with_relay(source: Any, reporter: Reporter) -> Tuple[Any, Any]:
    """The workers' output through a pseudo-terminal while the progress line is shown, so that
    it never mixes with the line (only on a terminal: clum in a job never pays for it)."""
    if not reporter.progress or not reporter.terminal:
        return source, None
    try:
        from .local.relay import Relay, shared_fds

        relay = Relay(reporter, shared_fds(reporter.stream))
        return relay.wrap(source), relay
    except OSError:  # no pseudo-terminal to be had: no progress line rather than a garbled one
        reporter.progress = False
        return source, None


def build(settings: Settings, work: Any, reporter: Reporter, journal: Any = None,
          collect: Optional[Callable[[bytes], None]] = None) -> Runner:
    """clum's runner for these settings, over ``work`` (a core.bins selection, or a resume
    filter over one), reporting to ``reporter``, recording into ``journal`` (a
    record.writer.Journal, or None), handing each batch's value records to ``collect``."""
    source, relay = _with_relay(settings.source, reporter)
    if relay is not None:
        settings = dataclasses.replace(settings, source=source)
    return Runner(settings, work, reporter, journal=journal, relay=relay, collect=collect)


def inherited(target: Callable[..., Any], init_worker: Optional[Callable[[], Any]] = None) -> Any:
    """The source of a target the workers inherit (fork)."""
    return worker.Inherited(target, init_worker)


def end_status(outcome: Outcome) -> str:
    """The journal's end status for what the run came to."""
    if outcome.interrupted_by:
        return "interrupted"
    if outcome.fatal or outcome.args_error or outcome.journal_error:
        return "aborted"
    if outcome.walltime_stop:
        return "walltime"
    return "complete"


def resume_work(work: Any, journal: Any, mode: str) -> Any:
    """``work`` without the calls the journal being resumed records as completed (a
    record.resume.ResumeWork), or None when there is no earlier journal to resume from."""
    if journal.previous is None:
        return None
    from .record.resume import ResumeWork

    return ResumeWork(work, journal.previous, mode)
