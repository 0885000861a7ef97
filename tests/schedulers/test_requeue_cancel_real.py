"""Runs that do what the scheduler and the person say, on the real Slurm, OpenPBS and Grid
Engine of tests/schedulers/up.sh, through the real ``cluf`` command:

- a job requeued or rerun mid-run by the scheduler (``scontrol requeue``, ``qrerun``,
  ``qmod -rj``) runs its script again, which resumes the bin: every call ends once, only
  those in flight at the requeue start twice, nothing moves to ``.prev``, no new job is
  submitted for the bin, and the bin's output holds both runs;
- a job of a run with ``--walltime`` cancelled by the scheduler's own command (``scancel``,
  ``qdel``) stops for good: no job of the run comes up after it, ``cluf --wait`` continues
  nothing, and ``--status`` says "cancelled" with the scheduler's words (Grid Engine's
  ``qdel`` kills at once, so there the bin is "vanished", and nothing continues it either);
- a PBS run needing three walltimes keeps every job's lines in the bin's output, and the
  jobs that handed the bin on are recorded by PBS as exit 0.

As in test_continuation_real.py, the session starts every selected scenario at once
(tests/scenarios.py) and each test waits for its own (Slurm holds a requeued job back two
minutes unless told otherwise; the scenario lets it start sooner with ``scontrol update
StartTime=now``).
"""

import os
import secrets
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from cluster_func.cluster import manifest as manifest_mod  # (the manifest with its per-bin records)

try:
    import cluf_support as cs
    import continuation_support as cont
    import real_schedulers
    import scheduler_support as ss
    from scenarios import scenario
except ImportError:  # tests/ is not on sys.path when run without the rootdir conftest
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import cluf_support as cs
    import continuation_support as cont
    import real_schedulers
    import scheduler_support as ss
    from scenarios import scenario

TOKEN = secrets.token_hex(2)

TARGET = '''\
import json, os, sys, time

_EVIDENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         os.path.splitext(os.path.basename(__file__))[0] + ".evidence")


def _rec(x, event):
    line = {{"x": x, "ev": event, "t": time.time(), "run": os.getppid()}}
    fd = os.open(_EVIDENCE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\\n").encode())
    finally:
        os.close(fd)


def target(x):
    _rec(x, "start")
    print("call %d in run %d" % (x, os.getppid()), flush=True)
    time.sleep({call!r})
    _rec(x, "end")


args = range({n})
'''


def write_target(folder, name, n, call):
    path = Path(folder) / name
    path.write_text(TARGET.format(n=n, call=call))
    return path


class Evidence:
    """What the calls recorded: starts and ends per element, the runs (clum processes) in order."""

    def __init__(self, script):
        recs = sorted(cs.evidence(script), key=lambda r: r["t"])
        self.starts = Counter(r["x"] for r in recs if r["ev"] == "start")
        self.ends = Counter(r["x"] for r in recs if r["ev"] == "end")
        self.runs = list(dict.fromkeys(r["run"] for r in recs))
        self.ended_in = defaultdict(set)
        self.started_in = defaultdict(set)
        for r in recs:
            (self.ended_in if r["ev"] == "end" else self.started_in)[r["run"]].add(r["x"])

    def __repr__(self):
        return f"Evidence(starts={dict(self.starts)}, ends={dict(self.ends)}, runs={self.runs})"


def cluf(sched, *args, cwd, env, timeout=120):
    return cs.run_cluf(*map(str, args), "--scheduler", sched.name, cwd=cwd, env=env, timeout=timeout)


def manifest(jobs_dir):
    [path] = Path(jobs_dir).glob("*.manifest.json")
    return manifest_mod.load_manifest(str(path))


def job_id(jobs_dir):
    return manifest(jobs_dir)["jobs"]["0"]["id"]


def requeue(sched, job, first_run):
    """The scheduler's own rerun of a running job."""
    if sched.name == "slurm":
        subprocess.run(["scontrol", "requeue", job], check=True, timeout=30, capture_output=True)
        # Slurm holds a requeued job back about two minutes (Reason=BeginTime), which lets the
        # stopped job's credential, revoked by the requeue, expire before the rerun's is checked. Here
        # the rerun is let start sooner, but not at once (a rerun forced to start at once sometimes
        # never started calls in full-suite runs, which a launch refused by slurmd, "launch failed
        # requeued held", would explain). So: pending, the old job gone from the node (not
        # COMPLETING), 3 s more, then StartTime=now (asked again while it does not stick).
        def pending_and_gone():
            text = _scontrol_job(job)
            return "JobState=PENDING" in text and "COMPLETING" not in text

        cs.wait_for(pending_and_gone, 120, f"job {job} to be pending again, its first run gone")
        time.sleep(3)
        asked = [0.0]

        def started_again():
            text = _scontrol_job(job)
            if "JobState=PENDING" not in text:
                return True
            assert "launch_failed" not in text, f"Slurm could not launch the rerun:\n{text}"
            if time.monotonic() - asked[0] > 10:
                subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], timeout=30,
                               capture_output=True)
                asked[0] = time.monotonic()
            return False

        cs.wait_for(started_again, 240, f"job {job} to start again")
    elif sched.name == "pbs":
        subprocess.run([ss.pbs_bin("qrerun"), job], check=True, timeout=30, capture_output=True)
    else:
        _sge_rerun(job, first_run)


def _sge_rerun(job, first_run):
    """``qmod -rj``, until the first run has stopped.

    qmod -rj exits 0 whether or not it rescheduled the job; it says "Pushed rescheduling of job N"
    when it did (and nothing, say, while the job is still being started). Even then, with other
    jobs coming and going on the host (as in the full suite), Grid Engine 8.1.9 sometimes books
    the job as started again at once while its execd goes on running the first run, which then runs
    to its end and is never rerun (qstat says "Rr", qmaster's messages "execd reports running state
    for job ... while job is in state 0"). Reproduced with a plain sleep job and a loop of
    qsub/qdel beside it; asked again, qmod -rj reschedules it. So: asked, 5 s apart, until it says
    it pushed the rescheduling; and asked again while the first run's clum is still alive 20 s
    later. What qmod said goes in the failure's message."""
    said = []
    for _ in range(5):
        for _ in range(12):
            p = subprocess.run(["qmod", "-rj", job], timeout=30, capture_output=True, text=True, env=ss.sge_env())
            said.append(f"exit {p.returncode}: {(p.stdout + p.stderr).strip()}")
            if "Pushed rescheduling" in p.stdout + p.stderr:
                break
            time.sleep(5)
        else:
            raise AssertionError(f"qmod -rj {job} did not reschedule the job; it said: {said}")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _alive(first_run):
            time.sleep(0.5)
        if not _alive(first_run):
            return
        said.append(f"the first run (clum pid {first_run}) still runs 20 s later")
    raise AssertionError(f"qmod -rj {job} never stopped the first run; {said}")


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _scontrol_job(job):
    p = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=30)
    return p.stdout


WALLTIME = {"slurm": "00:10:00", "pbs": "00:10:00", "sge": "00:10:00"}


REQUEUED_CALLS = 60


def requeued(sched, tmp, walltime=True):
    """One bin of 60 calls of 1 s with a long --walltime (or none); the scheduler reruns its job
    once 11 calls have ended (so the rerun has about 49 s to happen before the first run would
    end); then ``cluf --wait``."""
    script = write_target(tmp, f"rq-{TOKEN}.py", n=REQUEUED_CALLS, call=1.0)
    env = sched.env(tmp)
    jobs = tmp / "jobs"
    cs.ok(cluf(sched, script.name, "-n", 1, "-p", 1, "-j", "jobs",
               *(["--walltime", WALLTIME[sched.name]] if walltime else []), cwd=tmp, env=env))
    first = job_id(jobs)
    cs.wait_for(lambda: sum(Evidence(script).ends.values()) >= 11, 180, "11 calls to end")
    at_requeue = Evidence(script)
    [first_run] = at_requeue.runs
    requeue(sched, first, first_run)
    try:
        cs.wait_for(lambda: len(Evidence(script).runs) >= 2, 420, "the rerun to start calls")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{what_happened(sched, first, tmp, script)}") from None
    wait = cs.run_cluf("--wait", "jobs", cwd=tmp, env=env, timeout=400)
    base = jobs / f"rq-{TOKEN}-0-1"
    return SimpleNamespace(first=first, at_requeue=at_requeue, calls=Evidence(script), wait=wait,
                           manifest=manifest(jobs), status=cont.run_status("jobs", tmp, env),
                           prev=Path(str(base) + ".journal.prev").exists(),
                           stdout=Path(str(base) + ".stdout").read_text(),
                           stderr=Path(str(base) + ".stderr").read_text())


def what_happened(sched, job, tmp, script):
    """For a failure's message: the scheduler's view of the job, the bin's files, the calls."""
    def run(*argv):
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=ss.sge_env()
                               if sched.name == "sge" else None)
            return (p.stdout + p.stderr).strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"{argv[0]}: {e}"
    said = {"slurm": [["scontrol", "show", "job", job], ["squeue", "-a"], ["sinfo", "-N", "-l"]],
            "pbs": [[ss.pbs_bin("qstat"), "-x", "-f", job], [ss.pbs_bin("qstat"), "-a"]],
            "sge": [["qstat", "-j", job], ["qstat", "-f"]]}[sched.name]
    out = [f"$ {' '.join(argv)}\n{run(*argv)}" for argv in said]
    logs = {"slurm": ["/var/log/slurm/slurmctld.log", "/var/log/slurm/slurmd.log"],
            "sge": ["/var/spool/gridengine/qmaster/messages"]}.get(sched.name, [])
    for log in logs:
        try:
            lines = [ln for ln in Path(log).read_text(errors="replace").splitlines()
                     if (job in ln if sched.name == "slurm" else f" {job}.1" in ln or f"({job}.1" in ln)]
            out.append(f"--- {log} (lines naming {job}):\n" + "\n".join(lines[-40:]))
        except OSError as e:
            out.append(f"--- {log}: {e}")
    for f in sorted((tmp / "jobs").glob("*")):
        if f.suffix in (".stdout", ".stderr", ".started", ".stopped") or f.name.endswith(".scheduler.stderr"):
            out.append(f"--- {f.name}:\n{f.read_text(errors='replace')[-3000:]}")
    out.append(repr(Evidence(script)))
    return "\n".join(out)


def cancelled_by_scheduler(sched, tmp):
    """One bin of 300 calls of 1 s, --walltime 2 minutes; the scheduler's cancel once three
    calls have ended; then nothing may come up, and ``cluf --wait``."""
    script = write_target(tmp, f"sc-{TOKEN}.py", n=300, call=1.0)
    env = sched.env(tmp)
    jobs = tmp / "jobs"
    cs.ok(cluf(sched, script.name, "-n", 1, "-p", 1, "-j", "jobs", "--walltime", "00:02:00", cwd=tmp, env=env))
    first = job_id(jobs)
    cs.wait_for(lambda: sum(Evidence(script).ends.values()) >= 3, 180, "3 calls to end")
    sched.cancel([first])
    outcomes = sched.wait([first], timeout=120)
    names = cont.job_names(tmp)
    appeared = {}
    for _ in range(10):  # a few more seconds: no job of the run's name comes up
        appeared.update(cont.unfinished_jobs_named(sched.name, names))
        time.sleep(0.5)
    wait = cs.run_cluf("--wait", "jobs", cwd=tmp, env=env, timeout=120)
    base = jobs / f"sc-{TOKEN}-0-1"
    return SimpleNamespace(first=first, outcomes=outcomes, appeared=appeared, wait=wait, manifest=manifest(jobs),
                           status=cont.run_status("jobs", tmp, env), calls=Evidence(script),
                           stderr=Path(str(base) + ".stderr").read_text())


def pbs_output(sched, tmp):
    """One bin needing three PBS walltimes of 30 s (no new call after 10 s)."""
    t = cont.TIMING[sched.name]
    script = write_target(tmp, f"po-{TOKEN}.py", n=16, call=1.5)
    env = sched.env(tmp)
    wait = cluf(sched, script.name, "-n", 1, "-p", 1, "-j", "jobs", *t.options, "--wait", cwd=tmp, env=env,
                timeout=600)
    jobs = tmp / "jobs"
    m = manifest(jobs)
    ids = [h["id"] for h in m["jobs"]["0"]["history"]] + [m["jobs"]["0"]["id"]]
    outcomes = sched.wait(ids, timeout=120)
    base = jobs / f"po-{TOKEN}-0-1"
    return SimpleNamespace(wait=wait, manifest=m, ids=ids, outcomes=outcomes, calls=Evidence(script),
                           stdout=Path(str(base) + ".stdout").read_text(),
                           stderr=Path(str(base) + ".stderr").read_text())


def requeued_without_walltime(sched, tmp):
    """The same without --walltime (the job script then neither traps SIGTERM nor continues)."""
    return requeued(sched, tmp, walltime=False)


SCENARIOS = {f.__name__: f for f in (requeued, requeued_without_walltime, cancelled_by_scheduler, pbs_output)}


def adapter(name):
    a = real_schedulers.ADAPTERS[name]
    a.require()
    return a


def explain(*results):
    return "\n".join(f"--- exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}" for r in results)


# --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("sched", ["slurm", "pbs", "sge"])
@scenario("requeued")
def test_a_job_the_scheduler_reruns_mid_run_resumes_its_bin(sched, runs):
    check_the_rerun_resumed(runs.get("requeued", adapter(sched)))


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("sched", ["slurm", "pbs"])
@scenario("requeued_without_walltime")
def test_a_job_without_a_walltime_that_the_scheduler_reruns_resumes_its_bin_too(sched, runs):
    check_the_rerun_resumed(runs.get("requeued_without_walltime", adapter(sched)))


def check_the_rerun_resumed(run):
    said = explain(run.wait, run.status)
    calls, before = run.calls, run.at_requeue
    assert run.wait.returncode == 0, said
    assert len(calls.runs) == 2, f"the bin ran in {calls.runs}: not one run and its rerun\n{calls}"
    first, second = calls.runs
    # every call ended exactly once; those that ended before the rerun did not start again
    assert calls.ends == {x: 1 for x in range(REQUEUED_CALLS)}, calls
    assert not calls.ended_in[first] & calls.started_in[second], calls
    assert before.ends.keys() <= calls.ended_in[first], (before, calls)
    # only the calls in flight at the rerun started twice
    in_flight = calls.started_in[first] - calls.ended_in[first]
    assert {x for x, k in calls.starts.items() if k > 1} == in_flight, calls
    assert len(in_flight) <= 1, calls  # -p 1
    # a resume: the journal was not moved aside, clum said so, no new job holds the bin
    assert not run.prev, "the rerun moved the journal to .prev (a fresh start)"
    assert "--resume: the journal records" in run.stderr, run.stderr
    job = run.manifest["jobs"]["0"]
    assert job["id"] == run.first and job["history"] == [] and not job.get("restarts"), job
    assert not job.get("cancelled"), job
    # the bin's output holds both runs' lines
    assert f"in run {first}" in run.stdout and f"in run {second}" in run.stdout, run.stdout
    row = cont.table(run.status.stdout)[0]
    assert (row["state"], row["done"], row["failed"]) == ("done", str(REQUEUED_CALLS), "0"), run.status.stdout


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("sched", ["slurm", "pbs"])
@scenario("cancelled_by_scheduler")
def test_the_schedulers_own_cancel_stops_a_bin_for_good(sched, runs):
    run = runs.get("cancelled_by_scheduler", adapter(sched))
    said = explain(run.wait, run.status)
    assert run.appeared == {}, f"jobs came up after the cancel: {run.appeared}"
    job = run.manifest["jobs"]["0"]
    assert job["id"] == run.first and job["history"] == [] and not job.get("restarts"), job
    assert job.get("cancelled"), f"the bin is not marked cancelled: {job}\n{run.stderr}"
    # --wait ends with the run's status and continues nothing; --status says cancelled, and by what
    assert run.wait.returncode == 1, said
    assert "continued as job" not in run.wait.stderr, said
    for out in (run.wait.stdout, run.status.stdout):
        row = cont.table(out)[0]
        assert row["state"] == "cancelled", out
        assert row["note"].startswith("by scancel" if sched == "slurm" else "by qdel"), out + run.stderr
    assert "stopped from outside" in run.stderr and "does not continue" in run.stderr, run.stderr
    assert sum(run.calls.ends.values()) < 300, run.calls


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("sched", ["sge"])
@scenario("cancelled_by_scheduler")
def test_grid_engines_qdel_which_kills_at_once_leaves_a_bin_that_nothing_continues(sched, runs):
    # Grid Engine's qdel sends SIGKILL straight away: the job cannot record the cancel, so
    # the bin is "vanished" (its journal has no end), and neither its job nor --wait continues it
    run = runs.get("cancelled_by_scheduler", adapter(sched))
    said = explain(run.wait, run.status)
    assert run.appeared == {}, f"jobs came up after the cancel: {run.appeared}"
    job = run.manifest["jobs"]["0"]
    assert job["id"] == run.first and job["history"] == [] and not job.get("restarts"), job
    assert run.wait.returncode == 1, said
    assert "continued as job" not in run.wait.stderr, said
    assert cont.table(run.status.stdout)[0]["state"] == "vanished", said
    assert sum(run.calls.ends.values()) < 300, run.calls


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("sched", ["pbs"])
@scenario("pbs_output")
def test_a_pbs_bin_continued_twice_keeps_every_jobs_output(sched, runs):
    run = runs.get("pbs_output", adapter(sched))
    said = explain(run.wait)
    assert run.wait.returncode == 0, said
    assert len(run.ids) >= 3, f"the bin ran in jobs {run.ids}: not three walltimes of work"
    assert len(run.calls.runs) == len(run.ids), run.calls
    # every job's calls printed to the bin's .stdout; every job's clum and continuation to .stderr
    for r in run.calls.runs:
        for x in run.calls.ended_in[r]:
            assert f"call {x} in run {r}\n" in run.stdout, (x, r, run.stdout)
    assert run.stderr.count("stopped at walltime, work left") == len(run.ids) - 1, run.stderr
    for new in run.ids[1:]:
        assert f"continued as job {new}" in run.stderr, run.stderr
    # PBS records the jobs that handed the bin on as exit 0, like the last one
    assert {i: o.exit_code for i, o in run.outcomes.items()} == {i: 0 for i in run.ids}, run.outcomes

