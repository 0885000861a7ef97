"""Where a submitted run stands, and what to do about it: ``cluf --status``,
``--cancel`` (``--resubmit`` is submission.resubmit, which reads the state from here).

The state of a bin comes from one scheduler query for all the run's jobs
(queued, running) and, once the scheduler has forgotten the job, from the bin's
journal in the jobs dir (only what the bin's current job wrote in it: a journal the previous
submission left counts as no run yet, see manifest.journal_is_current): ``done`` when its last run ended, ``failed`` when it
was interrupted or aborted, ``vanished`` when it never wrote an end (killed,
walltime, node lost) or never started; ``cancelled`` when ``cluf --cancel``, or the
scheduler's own cancel as the job saw it (stops.why_stopped), marked it (the note says
what cancelled it).  The manifest is read with its per-bin records (manifest.load_manifest).
"""

from __future__ import annotations

import os
import stat
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, List, TextIO

from . import jobs, manifest
from ..record import journal as journal_mod
from ..core.errors import SchedulerError, UserError
from ..schedulers import SCHEDULERS
from ..schedulers.base import ERROR, QUEUED, RUNNING

if TYPE_CHECKING:
    from ..record.journal import JournalState
    from ..schedulers.base import Scheduler

DONE, FAILED, VANISHED = "done", "failed", "vanished"
STOPPED = "stopped at walltime"  # work left; it continues (by its job, cluf --wait or --resubmit)
CANCELLED = "cancelled"


class BinState:
    def __init__(self, i: int, job: manifest.JobRecord) -> None:
        self.bin = i
        self.job = job
        self.id = job.id
        self.state = VANISHED
        self.done: int | None = None
        self.failed: int | None = None
        self.total = job.calls
        self.stuck = False  # still in the scheduler's queue, in an error state
        self.reason = job.failed_reason  # why a bin that stopped at its walltime is failed
        self.restarts = job.restarts
        self.cancelled_by = job.cancelled_by  # what the scheduler said, for a job cancelled by it

    @property
    def needs_rerun(self) -> bool | int | None:  # (truthy: it does)
        return self.state in (FAILED, VANISHED, STOPPED, CANCELLED) or (self.state == DONE and self.failed)

    @property
    def final(self) -> bool:
        """Nothing more will happen to this bin by itself (for cluf --wait)."""
        return self.state in (DONE, FAILED, VANISHED, CANCELLED)

    @property
    def ok(self) -> bool:
        return self.state == DONE and not self.failed


def load_run(manifest_path: str) -> dict:
    m = manifest.load_manifest(manifest_path)  # checked field by field: a damaged one says what to do
    if m is None:
        raise UserError(f"The cluf manifest {manifest_path} has gone (moved or deleted while cluf ran). "
                        f"Give the jobs dir of a submitted run again.")
    return m


def check_bin_journal(path: str) -> None:
    """A bin's journal that is there but is not a file (a directory, a FIFO that would block the
    read) is refused, naming it, before it is read."""
    if os.path.lexists(path) and not os.path.isfile(path):
        what = "a directory" if os.path.isdir(path) else "not a regular file"
        raise UserError(f"The journal of a bin, {path}, is {what}, so cluf cannot tell what the bin did. Move it "
                        f"away; the bin then counts as vanished, and 'cluf --resubmit {os.path.dirname(path)}' runs "
                        f"it again.")
    try:
        os.close(os.open(path, os.O_RDONLY))
    except FileNotFoundError:
        pass
    except OSError as e:
        raise UserError(f"Cannot read the journal of a bin, {path}: {e.strerror or e}, so cluf cannot tell what the "
                        f"bin did. Make it readable (its owner: chmod a+r), or run cluf as the user whose jobs wrote "
                        f"it.") from None


def _open_journal(path: str) -> tuple[Any, Any]:
    """The bin's journal open for reading in binary, and its os.stat; (None, None) when there is
    none.  One open (not blocking, so a FIFO is seen, not read) and one fstat; a journal that is
    not a regular file, or that cannot be opened, is refused as check_bin_journal refuses it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        check_bin_journal(path)  # (a dangling link is refused)
        return None, None
    except OSError:
        check_bin_journal(path)  # says what is wrong
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        check_bin_journal(path)
        raise UserError(f"The journal of a bin, {path}, is not a regular file, so cluf cannot tell what the bin did.")
    return open(fd, "rb"), info


def _journal(path: str, cache: dict | None) -> tuple[JournalState | None, int]:
    """(the journal at ``path`` or None, its size).  With ``cache`` (one per cluf --wait), a
    journal read before is read on from where that read stopped, and not at all when it has not
    grown; another file at the path (another inode: moved aside and started afresh) or a shorter
    one is read from its start."""
    f, info = _open_journal(path)
    if f is None:
        if cache is not None:
            cache.pop(path, None)
        return None, 0
    with f:
        if cache is None:
            st = journal_mod.read_file(f)
        else:
            key = (info.st_dev, info.st_ino)
            held = cache.get(path)
            if held is None or held[0] != key or info.st_size < held[1].size or held[1].format is None:
                held = (key, journal_mod.JournalState())
            st = held[1]
            if info.st_size != st.size or not st.size:
                st = journal_mod.read_file(f, state=st, incremental=True)
            cache[path] = (key, st)
    return st, max(info.st_size, st.size)  # (what was read whole is in the file, if it grew meanwhile)


def current_journal(job: manifest.JobRecord, path: str, cache: dict | None = None
                    ) -> JournalState | None:
    """The bin's journal as :func:`_journal` reads it, or None when it holds no run of the bin's
    current job (it is the journal of an earlier submission: manifest.journal_is_current)."""
    st, size = _journal(path, cache)
    if st is None:
        return None
    return st if manifest.journal_is_current(job, st.header, size) else None


def bin_states(m: dict, cache: dict | None = None) -> List[BinState]:
    plan = jobs.plan_from_dict(m["plan"])
    states = [BinState(job.bin, job) for job in manifest.jobs_of(m)]
    ids = [s.id for s in states if s.id]
    try:
        live = plan.scheduler.query(ids)
    except SchedulerError as e:
        raise UserError(f"Could not ask {plan.scheduler.name} about the jobs: {e}") from None
    for s in states:
        st = current_journal(s.job, plan.path(s.bin, ".journal"), cache)
        if st is not None and st.runs:
            s.done, s.failed = st.completed_total, len(st.last_failed)
        if live.get(s.id) == ERROR:  # e.g. Grid Engine's Eqw: it will never run by itself
            s.state, s.stuck = FAILED, True
        elif s.id in live:
            s.state = live[s.id]
        elif s.job.cancelled and not (st is not None and st.last_status == "complete"):
            s.state = CANCELLED
        elif st is None or not st.runs or st.last_status is None:
            s.state = VANISHED
        elif st.last_status == "complete":
            s.state = DONE
        elif st.last_status == "walltime":
            s.state = FAILED if s.reason else STOPPED
        else:
            s.state = FAILED
    return states


def live_bins(manifest_path: str, chosen: Iterable[int], scheduler: Scheduler) -> list[tuple[int, str, str]]:
    """Bins among ``chosen`` whose recorded job is still queued or running: [(bin, id, state)]."""
    m = manifest.load_manifest(manifest_path)
    if not m or not m.get("jobs"):
        return []
    ids = {i: job.id for i, job in ((i, manifest.job(m, i)) for i in chosen) if job is not None and job.id}
    if not ids:
        return []
    try:
        live = scheduler.query(sorted(set(ids.values())))
    except SchedulerError:
        return []
    return [(i, j, live[j]) for i, j in sorted(ids.items()) if live.get(j) in (QUEUED, RUNNING)]


def _fmt(v: object) -> str:
    return "-" if v is None else str(v)


def print_status(manifest: dict, states: List[BinState], out: TextIO = sys.stdout) -> None:
    plan = manifest["plan"]
    out.write(f"{plan['script']}: {manifest['nodes']} bins on {manifest['scheduler']} "
              f"(jobs dir {plan['jobs_dir']})\n")
    rows = [("bin", "job", "state", "done", "failed", "total")]
    rows += [(str(s.bin), s.id or "-", s.state + (" (held: error)" if s.stuck else ""), _fmt(s.done),
              _fmt(s.failed), _fmt(s.total)) for s in states]
    widths = [max(len(r[c]) for r in rows) for c in range(6)]
    for r, s in zip(rows, [None, *states]):
        note = ""
        if s is not None and s.reason:
            note = f"  ({s.reason})"
        elif s is not None and s.state == CANCELLED and s.cancelled_by:
            note = f"  (by {s.cancelled_by})"
        elif s is not None and s.restarts:
            note = f"  (continued {s.restarts} time{'s' * (s.restarts != 1)})"
        out.write("  ".join(v.ljust(widths[c]) if c < 3 else v.rjust(widths[c]) for c, v in enumerate(r)).rstrip()
                  + note + "\n")
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    done = sum(s.done or 0 for s in states)
    failed = sum(s.failed or 0 for s in states)
    totals = [s.total for s in states]
    total = f" of {sum(totals)}" if totals and None not in totals else ""
    missing = manifest["nodes"] - len(states)
    by_state = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    out.write(f"total: {len(states)} bins: {by_state}; calls {done} done, {failed} failed{total}"
              + (f"; {missing} bins never submitted" if missing else "") + "\n")


def manifests_in(jobs_dir: str | None) -> List[str]:
    jobs_dir = os.path.abspath(jobs_dir or os.getcwd())
    found = manifest.find_manifests(jobs_dir)
    if not found:
        raise UserError(f"No cluf run in {jobs_dir}: there is no *{manifest.MANIFEST_SUFFIX} file there. "
                        f"Give the jobs dir of a submitted run (the -j/--jobs-dir it was submitted with).")
    return found


def status(jobs_dir: str | None) -> int:
    ok = True
    for path in manifests_in(jobs_dir):
        m = load_run(path)
        states = bin_states(m)
        print_status(m, states)
        ok = ok and len(states) == m["nodes"] and all(s.ok for s in states)
    return 0 if ok else 1


def _mark_cancelled(m: dict) -> None:
    """Every bin not done is cancelled for good: no job of it continues itself after this."""
    for job in manifest.jobs_of(m):
        job.mark_cancelled("cluf --cancel", keep_earlier=True)


def cancel(jobs_dir: str | None) -> int:
    for path in manifests_in(jobs_dir):
        plan = jobs.plan_from_dict(load_run(path)["plan"])
        for i in manifest.submitted_bins(load_run(path)):  # a journal that cannot be read: refused before
            check_bin_journal(plan.path(i, ".journal"))      # anything is marked
        # First mark the bins (under the lock a continuing job takes too), then cancel what the
        # manifest names: a continuation submitted before the mark is in it, none comes after.
        manifest.update_manifest(path, None, _mark_cancelled)
        m = load_run(path)
        sched = SCHEDULERS[m["scheduler"]]()
        states = bin_states(m)
        live = [s for s in states if s.state in (QUEUED, RUNNING)]
        if not live:
            print(f"cluf: no queued or running job in the run of {m['plan']['script']}.")
            continue
        # Cancel whole arrays by their id, single jobs by theirs.
        ids = sorted({s.job.array_id or s.id for s in live})
        finished = sched.cancel(ids)  # a SchedulerError says what failed
        print(f"cluf: cancelled {len(ids)} job(s): {' '.join(ids)}"
              + (f" ({sched.name} says some had already finished)" if finished else ""))
    return 0


# --- cluf --wait ------------------------------------------------------------------------------------

POLL_FIRST, POLL_MAX = 2.0, 60.0  # seconds between polls: a few at first, growing to a minute
NAP_STEP, NAP_ENDING = 0.25, 1.0  # between looks at the journals; a poll while a bin's job is ending


def nap(runs: list, seconds: float, seen: dict) -> bool:
    """Sleep up to ``seconds`` between two polls, waking early (True) when the journal of a bin
    that was not final gains its end record: the run may be finished, and one poll tells.

    Asking the scheduler stays gentle (its queries are what POLL_FIRST and POLL_MAX spare); a
    look at the journals is a ``stat`` of each unfinished bin's journal every NAP_STEP (longer
    for thousands of bins), and the last bytes of one that changed.  While a bin's journal has
    ended but its job is still listed (the job script's last lines, the scheduler's own
    bookkeeping), the next poll comes within NAP_ENDING.  ``seen``: {journal: ((size, mtime),
    ended)}, kept by the caller between naps."""
    watched = []
    for m, states in runs:
        plan = jobs.plan_from_dict(m["plan"])
        watched += [plan.path(s.bin, ".journal") for s in states if not s.final]
    if any(seen.get(path, (None, False))[1] for path in watched):
        seconds = min(seconds, NAP_ENDING)
    step = max(NAP_STEP, len(watched) / 4000)
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(step, left))
        if any(_newly_ended(path, seen) for path in watched):
            return True


def _newly_ended(path: str, seen: dict) -> bool:
    """The journal at ``path`` changed since last seen and now ends with its end record."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    key = (st.st_size, st.st_mtime_ns)
    before = seen.get(path)
    if not stat.S_ISREG(st.st_mode) or (before is not None and before[0] == key):
        return False  # (not a file: the next poll names it; a FIFO is never opened, it would block)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        try:
            tail = os.pread(fd, 512, max(0, st.st_size - 512))
        finally:
            os.close(fd)
    except OSError:
        return False
    ended = b'{"t":"end"' in tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    seen[path] = (key, ended)
    return ended


def poll(paths: Iterable[str], cache: dict | None, say: Callable[[str], object]) -> list:
    """One poll of the runs of these manifests: [(manifest, [BinState])], one scheduler query
    per run, journals read on from ``cache``.  A bin that stopped at its walltime and that its
    own job could not continue is continued here (``say`` is told how)."""
    from . import continuation

    runs = []
    for path in paths:
        m = load_run(path)
        states = bin_states(m, cache)
        for s in states:
            if s.state == STOPPED:
                said = continuation.continue_bin(path, s.bin, s.id)
                if not said.by_another:  # (its own job continued it in the meantime: nothing to say)
                    say(f"cluf: bin {s.bin}: {said}")
        runs.append((m, states))
    return runs


def all_final(runs: list) -> bool:
    """Nothing more will happen to any bin of these runs by itself."""
    return all(s.final for _, states in runs for s in states)


def wait(jobs_dir: str | None, poll_first: float = POLL_FIRST, poll_max: float = POLL_MAX, out: TextIO = sys.stderr) -> int:
    """Block until every bin is done, failed or cancelled, continuing the bins that stopped at
    their walltime where their own job could not; then print the status table and exit with
    its status.  One scheduler query per run and poll; journals are read on from where the
    last poll stopped.  Ctrl-C stops waiting, not the jobs."""
    from ..core.errors import Interrupted

    paths = manifests_in(jobs_dir)
    shown = os.path.abspath(jobs_dir or os.getcwd())
    cache: dict = {}
    seen: dict = {}
    tty = hasattr(out, "isatty") and out.isatty()
    started, last_line, interval = time.monotonic(), 0.0, poll_first
    first_done = None
    try:
        while True:
            runs = poll(paths, cache, lambda text: out.write(("\r\033[K" if tty else "") + text + "\n"))
            if all_final(runs):  # (bins never submitted: nothing comes)
                break
            now = time.monotonic()
            line = progress_line(runs, now - started, first_done)
            if first_done is None:
                first_done = (now, sum(s.done or 0 for _, st in runs for s in st))
            if tty:
                out.write("\r\033[K" + line)
                out.flush()
            elif now - last_line >= 60 or last_line == 0:
                out.write(line + "\n")
                out.flush()
                last_line = now
            nap(runs, interval, seen)
            interval = min(poll_max, interval * 1.5)
    except (KeyboardInterrupt, Interrupted):
        out.write(("\r\033[K" if tty else "\n") + f"cluf: stopped waiting; the jobs go on. Watch again with "
                  f"'cluf --wait {shown}', or stop them with 'cluf --cancel {shown}'.\n")
        return 130
    if tty:
        out.write("\r\033[K")
    ok = True
    for m, states in runs:
        print_status(m, states)
        ok = ok and len(states) == m["nodes"] and all(s.ok for s in states)
    return 0 if ok else 1


def progress_line(runs: list, elapsed: float, first_done: tuple[float, int] | None) -> str:
    counts: dict[str, int] = {}
    done = failed = 0
    total, known = 0, True
    for m, states in runs:
        for s in states:
            key = s.state if s.state in (QUEUED, RUNNING, DONE) else FAILED if s.final else "continuing"
            counts[key] = counts.get(key, 0) + 1
            done += s.done or 0
            failed += s.failed or 0
            if s.total is None:
                known = False
            else:
                total += s.total
    bins = ", ".join(f"{counts[k]} {k}" for k in (QUEUED, RUNNING, "continuing", DONE, FAILED) if counts.get(k))
    line = f"cluf: bins {bins}; calls {done} done, {failed} failed" + (f" of {total}" if known else "")
    if first_done is not None:
        t0, d0 = first_done
        span = time.monotonic() - t0
        rate = (done - d0) / span if span > 0 else 0.0
        if rate > 0:
            line += f", {rate:,.1f}/s"
            if known and total > done + failed:
                line += f", ETA {_hms((total - done - failed) / rate)}"
    return line + f", waiting {_hms(elapsed)}"


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"
