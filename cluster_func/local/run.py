"""A clum run on this machine: from the loaded script and merged options to an exit status.

The steps, top-down: select the work of the chosen bins, open the journal (resuming from
it when asked), start the runner with the start method's way of giving workers the target,
settle calls that failed before they could be sent, close the journal, and say how it went.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Optional, Tuple

from .. import engine
from ..core import bins
from . import gpus, worker
from ..record import journal as journal_mod
from ..core.walltime import grace_seconds
from ..core.errors import EXIT_WALLTIME, JOB_START_VAR, Interrupted, UserError, signals_held
from .reporter import Reporter, again_options, warner
from ..record.writer import Journal, JournalWriteError
from ..record.results import Results, collected_into
from .accounting import Outcome
from ..core.script import check_positions, get_args, get_init_worker, get_target, peek_first

if TYPE_CHECKING:
    import argparse

EXIT_OK, EXIT_FAILED = 0, 1
JOB_STOP_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)  # Grid Engine's -notify warnings


def in_cluf_job() -> bool:
    return bool(os.environ.get(JOB_START_VAR))


def _raise_interrupted(signum: int, frame: Optional[FrameType]) -> NoReturn:
    raise Interrupted(signum)


def walltime_stop_at(opts: dict) -> Optional[Tuple[float, float]]:
    """(start no new call after, stop running calls at) as time.monotonic() values, or None.

    The walltime counts from $CLUF_JOB_START (when the job script began) or from now.  Calls
    still running at the walltime are stopped a moment before it (a quarter of the grace, at
    most 5 s), so that the journal is written and the job script has submitted its
    continuation before the scheduler kills the job (a loaded node can take seconds to start
    the Python that submits it: Grid Engine's SIGKILL at h_rt otherwise leaves a bin vanished)."""
    walltime = opts.get("walltime")  # (checked against --grace by options.check)
    if not walltime:
        return None
    try:
        started = float(os.environ.get(JOB_START_VAR) or time.time())
    except ValueError:
        started = time.time()
    grace = grace_seconds(walltime, opts.get("grace"))
    end = time.monotonic() + (started + walltime - time.time())
    return end - grace, end - min(5.0, grace / 4)


def run(ns: argparse.Namespace, module: ModuleType, opts: dict) -> int:
    """A clum run, top-down: every check first (no file changes before every option is
    accepted), then the run's records, the workers, what the run came to, and its summary."""
    r = _Run(ns, module, opts)
    if opts["failed"]:
        return print_failed(r.journal_path)
    try:
        r.open_records()
        outcome = r.execute()
    except Interrupted as e:  # before the runner took over the signals
        if r.journal is None:
            raise
        outcome, r.resumed, r.runner = Outcome(interrupted_by=e.signum), None, None
    except BaseException:
        r.abort()
        raise
    with signals_held():  # a signal now is taken once the values are exported and the journal closed
        r.settle(outcome)
        values_written, export_error = r.close(outcome)
    return r.summary(outcome, values_written, export_error)


class _Run:
    """The state of one clum run, as :func:`run` takes it through its steps."""

    journal: Any  # (None until open_records; the same for these)
    results: Any
    resumed: Any
    runner: Any

    def __init__(self, ns: argparse.Namespace, module: ModuleType, opts: dict) -> None:
        self.ns, self.opts = ns, opts
        self.target_name, self.args_name = opts["target"], opts["args"]
        self.target = get_target(module, self.target_name)
        self.init_worker = get_init_worker(module)
        args = get_args(module, self.args_name)
        if (opts["hash"] is not None or opts["key"] is not None) and not opts["failed"]:
            first, args = peek_first(args)  # a position beyond the first element: refused, as cluf does
            if first is not None:
                check_positions(first[0], opts)
        self.spec = spec = opts["bins"] or bins.BinSpec((0,), 1)
        self.mode = "hash" if opts["hash"] is not None else "key" if opts["key"] is not None else "round-robin"
        self.journal_path = opts["journal"] or journal_mod.default_path(opts["script"], str(spec), self.target_name)
        self.journal = self.results = self.resumed = self.runner = None
        if opts["failed"]:
            return
        self.reporter = Reporter(progress=not opts["quiet"], total=bins.expected_count(args, spec, self.mode))
        self.reporter.failed_hint = f"'{self.again('--failed')}' lists every one"
        self.counts = bins.SelectionCounts()
        self.work = self.selection = bins.select(args, spec, opts["hash"], opts["key"], self.counts)
        self.stop_at = walltime_stop_at(opts)
        self.gpu_plan = gpus.for_run(opts, lambda: start_method(opts), warner("clum"))  # each worker's own GPUs
        if opts["resume"] and not opts.get("results"):  # keep collecting the values
            opts["results"] = collected_into(self.journal_path)
            if opts["results"]:
                self.reporter.message(f"--resume: the run collected its values into {opts['results']}; this run "
                                      f"collects them there too (as with --results {opts['results']}).")
        if opts.get("results"):  # checked here, changed nothing yet
            self.results = Results(opts["results"], self.journal_path, bool(opts["resume"]))

    def again(self, *more: str) -> str:
        return again_cmd(self.ns, self.opts, self.spec, self.journal_path, *more)

    def open_records(self) -> None:
        """Lock the results file, open the journal (a new one, or the one to resume from)."""
        opts, results = self.opts, self.results
        identity = {"target": self.target_name, "args": self.args_name, "argv": list(opts["passthrough"])}
        with signals_held():  # a signal now is handled once the journal is whole (just below)
            if results is not None:
                results.acquire()
            self.journal = Journal(self.journal_path, opts["script"], str(self.spec), self.mode,
                                   bool(opts["resume"]), warner("clum"), identity=identity,
                                   values=results.format if results is not None else None,
                                   results_path=results.path if results is not None else None)
            if results is not None:
                results.start(self.journal)

    def _resume(self) -> None:
        """With --resume: the work without the calls the journal records as completed."""
        journal, reporter = self.journal, self.reporter
        if not self.opts["resume"]:
            return
        if journal.previous is None:
            reporter.message(f"--resume: no journal at {self.journal_path}, so nothing to skip; running everything.")
            return
        if journal.dropped_without_values:
            reporter.message(f"--resume --results: {journal.dropped_without_values} calls recorded as completed "
                             f"carry no {self.results.format} value (an earlier run without --results, or with the "
                             f"other format): they run again, to get their values.")
        self.resumed = self.work = engine.resume_work(self.work, journal, self.mode)
        recorded = journal.previous.recorded
        if reporter.total is not None:
            reporter.total = max(0, reporter.total - recorded)
        reporter.message(f"--resume: the journal records {recorded} calls as completed; they are skipped "
                         f"unless their arguments changed"
                         + (f" ({reporter.total} calls to run)." if reporter.total is not None else "."))

    def _source(self, method: str) -> Any:
        """How the workers get the target: inherited under fork, else loaded from the script."""
        if method == "fork":
            return engine.inherited(self.target, self.init_worker)
        return worker.FromScript(self.opts["script"], self.opts["passthrough"], self.target_name)

    def execute(self) -> Outcome:
        """The resume filter, the workers, the runner."""
        opts, gpu_plan = self.opts, self.gpu_plan
        self._resume()
        cpus = engine.cpus()
        processes = gpu_plan.processes if gpu_plan is not None else opts["processes"] or cpus
        if processes > 4 * cpus:
            warner("clum")(f"-p {processes} is far above the {cpus} CPUs this process may use: calls will "
                          f"share the CPUs (fine for calls that wait on I/O, slower for computing ones).")
        method = start_method(opts)
        if in_cluf_job():  # the scheduler's own warning signals: the same orderly stop
            for sig in JOB_STOP_SIGNALS:
                signal.signal(sig, _raise_interrupted)
        settings = engine.Settings(self._source(method), processes, method, retries=opts["retries"],
                                   timeout=opts["timeout"],
                                   values=self.results.format if self.results is not None else None,
                                   stop_at=self.stop_at, slot_env=gpu_plan.env if gpu_plan is not None else None)
        self.runner = engine.build(settings, self.work, self.reporter, journal=self.journal)
        return self.runner.run()

    def abort(self) -> None:
        if self.journal is not None:
            self.journal.close(0, 0, "aborted")
        if self.results is not None:
            self.results.release()

    def settle(self, outcome: Outcome) -> None:
        """Calls that failed before they could be sent; a signal from the scheduler, judged."""
        counts, reporter = self.counts, self.reporter
        # Elements whose hash/key position is missing fail without being sent to a worker.
        for position, element, err in counts.bad_elements if self.runner is not None else ():
            self.runner.fail_unsent(position, element, "KeyError" if err.startswith("keyword") else "IndexError",
                                    err)
        if counts.more_bad_elements:
            outcome.failed += counts.more_bad_elements
            reporter.message(f"... and {counts.more_bad_elements} more calls failed the same way (too few "
                             f"arguments for the --hash/--key position); not listed one by one.")
        if outcome.interrupted_by in JOB_STOP_SIGNALS + (signal.SIGTERM,) and in_cluf_job():
            self._scheduler_stop(outcome)

    def _scheduler_stop(self, outcome: Outcome) -> None:
        """In a cluf job: Grid Engine's notify signals, or a SIGTERM at the walltime or on a
        preemption, stop as at the walltime (the bin continues); a SIGTERM of a cancel or a
        requeue stays an interruption (stops.why_stopped tells them apart)."""
        opts = self.opts
        name = signal.Signals(outcome.interrupted_by).name  # type: ignore[arg-type]
        kind, words = "walltime", "the scheduler's warning"
        if outcome.interrupted_by == signal.SIGTERM:
            from ..schedulers.job import record_verdict, why_stopped  # (only here: plain clum imports none)

            walltime = opts.get("walltime")
            verdict = why_stopped(walltime, grace_seconds(walltime, opts.get("grace")) if walltime else None)
            kind, words = verdict.kind, verdict.words
            if kind not in ("walltime", "preempted"):  # (for the job script's continuation step)
                record_verdict(self.journal_path, verdict)
        if kind in ("walltime", "preempted"):
            self.reporter.message(f"{name} from the scheduler ({words}): stopping as at the walltime.")
            outcome.interrupted_by, outcome.walltime_stop = None, True
        else:
            self.reporter.message(f"{name} from the scheduler: {kind}, {words}.")

    def close(self, outcome: Outcome) -> Tuple[Optional[int], Optional[BaseException]]:
        """Export the values (the results file, whole), write the journal's end, release both.
        Returns (values written, the error that stopped the export)."""
        status = engine.end_status(outcome)
        values_written, export_error = None, None
        if self.results is not None:
            try:
                values_written = self.results.export(self.journal, self.resumed.kept if self.resumed else None)
            except (OSError, JournalWriteError) as e:
                export_error = getattr(e, "err", e)
        self.journal.close(outcome.done, outcome.failed, status)
        if self.results is not None:
            self.results.release()
        return values_written, export_error

    def summary(self, outcome: Outcome, values_written: Optional[int], export_error: Any) -> int:
        """Say how it went; the exit status."""
        say, journal, results = self.reporter.message, self.journal, self.results
        broken = journal.broken
        if broken is not None:
            lost = outcome.done - journal.written_calls
            outcome.done = journal.written_calls
            say(f"stopped: {broken.err.strerror or broken.err} while writing {broken.what} {broken.path}. "
                f"{outcome.done} calls completed and are recorded in the journal {self.journal_path}, "
                f"{outcome.failed} failed"
                + (f"; {lost} more finished but could not be recorded and will run again" if lost > 0 else "")
                + f". Free some space (or fix the file system), then run '{self.again('--resume')}' to do the rest.")
            return EXIT_FAILED
        again = self.again
        if export_error is not None:
            say(f"stopped: {export_error.strerror or export_error} while writing the results file {results.given} "
                f"(the previous one, if any, is as it was). The values of the completed calls are safe in the "
                f"journal {self.journal_path}: free some space (or fix the file system), then '{again('--resume')}' "
                f"writes the file again, running only what did not complete.")
            return EXIT_FAILED
        resumed = self.resumed
        if resumed is not None and (not self.opts["quiet"] or resumed.skipped != journal.previous.recorded):
            say(f"--resume: skipped {resumed.skipped} calls the journal records as completed.")
        self._keys(outcome)
        status = _stopped_status(outcome, say, again, self.reporter)
        if status is not None:
            return status
        if outcome.done + outcome.failed == 0 and not (resumed is not None and resumed.skipped):
            self._nothing_to_do()
            return EXIT_OK
        if not self.opts["quiet"]:
            say(f"{outcome.done} calls done" + (f"; {values_written} values in {results.given}." if results else "."))
        return EXIT_OK

    def _keys(self, outcome: Outcome) -> None:
        """--key: elements whose key is not a bin number (none of them: an error)."""
        counts, opts, spec = self.counts, self.opts, self.spec
        if not counts.bad_keys:
            return
        resumed = self.resumed
        if outcome.done + outcome.failed == 0 and not (resumed is not None and resumed.skipped):
            raise UserError(f"Nothing ran: the key (argument {opts['key']}) of every one of the {counts.bad_keys} "
                            f"elements of {self.args_name!r} is not a bin number, an integer from 0 to "
                            f"{spec.total - 1} (for example position {counts.first_bad_key[0]}, key "  # type: ignore[index]
                            f"{counts.first_bad_key[1]!r}). With --key the argument at that position is the bin: "  # type: ignore[index]
                            f"make it one, or bin by a hash of it with --hash {opts['key']}.")
        self.reporter.message(
            f"warning: {counts.bad_keys} calls were run by no bin: their key (argument {opts['key']}) "
            f"is not an integer from 0 to {spec.total - 1}. Example: position {counts.first_bad_key[0]}, "  # type: ignore[index]
            f"key {counts.first_bad_key[1]!r}.")  # type: ignore[index]

    def _nothing_to_do(self) -> None:
        produced = self.selection.produced()
        where = f"{self.args_name!r} in {self.opts['script']}"
        if produced == 0:
            warner("clum")(f"{where} is empty: there was nothing to do (a generator can be used only once; "
                           f"check how it is built).")
        else:
            warner("clum")(f"bins {self.spec} hold none of the {produced} elements of {where}: there was nothing "
                           f"to do.")


def _stopped_status(outcome: Outcome, say: Callable[[str], None], again: Callable[..., str],
                    reporter: Reporter) -> Optional[int]:
    """The exit status of a run that stopped early or had failed calls (None otherwise), said."""
    if outcome.fatal:
        say(f"stopped: {outcome.fatal}. {outcome.done} calls completed before that.")
        return EXIT_FAILED
    if outcome.interrupted_by:
        name = signal.Signals(outcome.interrupted_by).name
        say(f"interrupted by {name}: {outcome.done} calls completed, {outcome.failed} failed; "
            f"the rest did not run. '{again('--resume')}' skips the completed ones.")
        return 128 + outcome.interrupted_by
    if outcome.walltime_stop:
        say(f"stopped at walltime, work left: {outcome.done} calls completed, {outcome.failed} failed, the "
            f"rest not started (calls stopped at the end of the grace period count as not done). "
            f"'{again('--resume')}' does the rest"
            + ("; in a cluf job, the bin continues in a new job unless it was cancelled, made no progress "
               "or reached --max-restarts (cluf --status shows which)." if in_cluf_job()
               else "."))
        return EXIT_WALLTIME
    if outcome.args_error:
        say(f"stopped early: {outcome.args_error} (see above). {outcome.done} calls completed, "
            f"{outcome.failed} failed. Fix the iterable and run again with --resume.")
        return EXIT_FAILED
    if outcome.failed:
        say(f"{outcome.failed} of {outcome.done + outcome.failed} calls failed: {reporter.failure_summary()}. "
            f"'{again('--failed')}' lists them.")
        return EXIT_FAILED
    return None


def again_cmd(ns: argparse.Namespace, opts: dict, spec: Any, journal_path: str, *more: str) -> str:
    """The clum command that runs this again, with ``more`` options (for hints): with every option
    that shapes the run (its journal, its values, which calls and how they fail), so that it does
    what the hint says when pasted as printed."""
    return " ".join(shlex.quote(w) for w in ["clum", ns.script] + again_options(opts, spec, journal_path)
                    + list(more) + (["--", *opts["passthrough"]] if opts.get("passthrough") else []))


def start_method(opts: dict) -> str:
    """--start-method, else $CLUSTER_FUNC_START_METHOD, else fork where there is fork."""
    try:
        return engine.start_method(opts.get("start_method"))
    except ValueError as e:
        raise UserError(f"--start-method {e}.") from None


def print_failed(journal_path: str) -> int:
    if not os.path.exists(journal_path):
        raise UserError(f"No journal at {journal_path}: this script and bin spec have not been run "
                        f"(or use --journal PATH to name the journal).")
    if os.path.isdir(journal_path):
        raise UserError(f"The journal path {journal_path} is a directory, not a journal. Name the journal "
                        f"file with --journal PATH.")
    if not os.path.isfile(journal_path):  # a FIFO would block the read
        raise UserError(f"The journal path {journal_path} is not a regular file, so not a journal. Name the "
                        f"journal file with --journal PATH.")
    try:
        st = journal_mod.read(journal_path)
    except OSError as e:
        raise UserError(f"Cannot read the journal {journal_path}: {e.strerror}.") from None
    if st.format is None:
        raise UserError(f"{journal_path} is not a clum journal or is unreadable (its first line is not a "
                        f"journal header), so it cannot say which calls failed. Name the run's journal "
                        f"with --journal PATH.")
    if st.bad:
        print(f"# skipped {st.bad} unreadable line(s) of the journal", file=sys.stderr)
    if st.last_status is None:
        print(f"# the last run did not finish ({st.last_done} calls completed)", file=sys.stderr)
    if not st.last_failed:
        print(f"# no failed calls in the last run ({st.last_done} completed)", file=sys.stderr)
        return EXIT_OK
    for rec in st.last_failed:
        print(f"position {rec.get('pos')}: args {rec.get('args')}: {rec.get('type')}: {rec.get('msg')}")
    return EXIT_FAILED
