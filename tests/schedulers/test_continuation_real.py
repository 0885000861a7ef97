"""Runs that finish themselves: ``cluf --walltime`` on the real Slurm, Grid Engine and OpenPBS
of tests/schedulers/up.sh, through the real ``cluf`` command.

In each job clum stops starting calls a grace period before the walltime, stops the calls
still running just before it and exits 75; the job script then submits the bin again with
--resume (``python -m cluster_func.cluster.continuation``), unless the bin was cancelled, the job
completed no call, or --max-restarts is reached.  ``cluf --wait`` waits for all that and
exits with the run's status.  The scenarios:

- a run needing about three walltimes finishes unattended under ``cluf ... --wait``: every
  call ends exactly once (a call stopped at a walltime started twice), none failed, the
  table says how often each bin continued, exit 0;
- a job whose single call outlasts the walltime makes no progress: its bin fails, the reason
  is in ``cluf --status``, ``--wait`` exits 1;
- ``cluf --cancel`` while a continuation runs leaves nothing queued and nothing continuing;
- ``cluf --wait JOBS_DIR`` exits with the run's status (a failing call: 1).

Every scenario is slow mostly because it waits for walltimes (Slurm's are whole minutes), so
the session starts all the selected scenarios on all the selected schedulers at once, before
its first test (tests/scenarios.py), and each test here waits for its own and checks it (the
longest: Slurm's three walltimes, 2-3 minutes).  Timings,
the target script and the scheduler queries are in tests/continuation_support.py; the
scheduler adapters are those of tests/real_schedulers.py.

Skips without a scheduler (fails with CLUSTER_FUNC_REQUIRE_SCHEDULERS=1); ``-m "not slow"``
leaves out all but the quick --wait scenario.  No test leaves a job behind: the fixture
cancels every run through ``cluf --cancel`` (so that a job ending at that moment does not
continue itself), then with the scheduler's own command (which a job sees as a cancel:
tests/schedulers/test_requeue_cancel_real.py).
"""

import json
import secrets
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from cluster_func.cluster import manifest as manifest_mod  # (the manifest with its per-bin records)

try:
    import cluf_support as cs
    import continuation_support as cont
    import real_schedulers
    from scenarios import scenario
except ImportError:  # tests/ is not on sys.path when run without the rootdir conftest
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import cluf_support as cs
    import continuation_support as cont
    import real_schedulers
    from scenarios import scenario

CALL = 1.5  # seconds per call
# in the scripts' names, hence the job names: the scheduler is asked about the jobs of these
# names, which must not be those of the same tests run at the same time from another checkout
TOKEN = secrets.token_hex(2)


def cluf(sched, *args, cwd, env, timeout=120):
    return cs.run_cluf(*map(str, args), "--scheduler", sched.name, cwd=cwd, env=env, timeout=timeout)


def manifest(jobs_dir):
    [path] = Path(jobs_dir).glob("*.manifest.json")
    return manifest_mod.load_manifest(str(path))


def restarts(jobs_dir):
    try:
        return {int(b): j.get("restarts", 0) for b, j in manifest(jobs_dir)["jobs"].items()}
    except (ValueError, FileNotFoundError, json.JSONDecodeError):
        return {}


# --------------------------------------------------------------------------------
# the scenarios, each run in a thread of its own; each returns what its test checks


def finishes(sched, tmp):
    """Two bins, each needing about three walltimes (see continuation_support.TIMING): the
    first job of each bin has a call that clum stops at the walltime; the later jobs stop
    starting calls at the grace period; the third finishes the bin."""
    t = cont.TIMING[sched.name]
    long_after = t.stop_new - CALL - 0.5
    per_bin = int(long_after / CALL) + int(t.stop_new / CALL) + 4  # jobs 1 and 2 do fewer
    script = cont.write_target(tmp, f"contfinish-{TOKEN}.py", n=2 * per_bin, nodes=2, call=CALL,
                               long_after=long_after)
    env = sched.env(tmp)
    r = cluf(sched, script.name, "-n", 2, "-p", 1, "-j", "jobs", *t.options, "--wait", cwd=tmp, env=env,
             timeout=600)
    m = manifest(tmp / "jobs")
    ids = [h["id"] for j in m["jobs"].values() for h in j["history"]] + [j["id"] for j in m["jobs"].values()]
    return SimpleNamespace(script=script, per_bin=per_bin, wait=r, manifest=m, outcomes=sched.wait(ids, timeout=120),
                           status=cont.run_status("jobs", tmp, env), calls=cont.Calls.read(script, 2))


def no_progress(sched, tmp):
    """One bin of one call that sleeps ten minutes."""
    t = cont.TIMING[sched.name]
    script = cont.write_target(tmp, f"contstuck-{TOKEN}.py", n=1, call=600)
    env = sched.env(tmp)
    r = cluf(sched, script.name, "-n", 1, "-p", 1, "-j", "jobs", *t.options, "--wait", cwd=tmp, env=env,
             timeout=600)
    return SimpleNamespace(script=script, wait=r, manifest=manifest(tmp / "jobs"),
                           status=cont.run_status("jobs", tmp, env), calls=cont.Calls.read(script, 1))


def cancelled(sched, tmp):
    """One bin with work for many walltimes; ``cluf --cancel`` once its second job (the first
    continuation) has started calls."""
    t = cont.TIMING[sched.name]
    script = cont.write_target(tmp, f"contcancel-{TOKEN}.py", n=500, call=CALL)
    env = sched.env(tmp)
    jobs = tmp / "jobs"
    cs.ok(cluf(sched, script.name, "-n", 1, "-p", 1, "-j", "jobs", *t.options, cwd=tmp, env=env))
    first = manifest(jobs)["jobs"]["0"]["id"]
    cs.wait_for(lambda: restarts(jobs).get(0, 0) >= 1, t.walltime + 180, "the bin's first continuation")
    second = manifest(jobs)["jobs"]["0"]["id"]
    cs.wait_for(lambda: len(cont.Calls.read(script, 1).jobs.get(0, [])) >= 2, 180,
                f"the second job ({second}) to start calls")
    states_at_cancel = sched.states([second])
    cancel = cs.run_cluf("--cancel", "jobs", cwd=tmp, env=env)
    after_cancel = manifest(jobs)
    outcomes = sched.wait(cont.manifest_ids(tmp), timeout=180)  # every job of the run has ended
    names = cont.job_names(tmp)
    appeared = {}
    for _ in range(10):  # a few more seconds: no job of these names comes up
        appeared.update(cont.unfinished_jobs_named(sched.name, names))
        time.sleep(0.5)
    wait = cs.run_cluf("--wait", "jobs", cwd=tmp, env=env, timeout=120)
    return SimpleNamespace(script=script, first=first, second=second, states_at_cancel=states_at_cancel,
                           cancel=cancel, after_cancel=after_cancel, outcomes=outcomes, appeared=appeared,
                           manifest=manifest(jobs), wait=wait, status=cont.run_status("jobs", tmp, env))


def wait_status(sched, tmp):
    """Three quick calls of which one fails, submitted, then ``cluf --wait JOBS_DIR``."""
    t = cont.TIMING[sched.name]
    script = cont.write_target(tmp, f"contfail-{TOKEN}.py", n=3, call=0.2, fail=(1,))
    env = sched.env(tmp)
    cs.ok(cluf(sched, script.name, "-n", 1, "-p", 1, "-j", "jobs", *t.options, cwd=tmp, env=env))
    wait = cs.run_cluf("--wait", "jobs", cwd=tmp, env=env, timeout=300)
    return SimpleNamespace(script=script, wait=wait, manifest=manifest(tmp / "jobs"),
                           status=cont.run_status("jobs", tmp, env))


SCENARIOS = {f.__name__: f for f in (finishes, no_progress, cancelled, wait_status)}


@pytest.fixture(params=list(real_schedulers.ADAPTERS))
def sched(request):
    adapter = real_schedulers.ADAPTERS[request.param]
    adapter.require()
    return adapter


def explain(*results):
    return "\n".join(f"--- exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}" for r in results)


# --------------------------------------------------------------------------------
# the tests


@pytest.mark.slow
@pytest.mark.timeout(900)
@scenario("finishes")
def test_a_run_needing_three_walltimes_finishes_unattended_under_wait(sched, runs):
    run = runs.get("finishes", sched)
    said = explain(run.wait, run.status)
    assert run.wait.returncode == 0, said
    calls = run.calls
    n = 2 * run.per_bin
    # every call ended exactly once; none failed
    assert calls.ends == {x: 1 for x in range(n)}, said
    # a call started more than once only because it was stopped (started, never ended) in
    # an earlier job of its bin; the first job of each bin had its long call stopped
    assert set(calls.stopped) == {x for x, k in calls.starts.items() if k > 1}, calls
    assert all(calls.starts[x] == len(jobs) + 1 for x, jobs in calls.stopped.items()), calls
    for b in (0, 1):
        assert [x for x, jobs in calls.stopped.items() if x % 2 == b and calls.jobs[b][0] in jobs], (b, calls)
        assert len(calls.jobs[b]) >= 3, f"bin {b} ran in {calls.jobs[b]}: not three walltimes of work"

    # the final table (printed by --wait and by --status): every bin done, no failed call,
    # and how often it continued, as the manifest records it
    for out in (run.wait.stdout, run.status.stdout):
        rows = cont.table(out)
        assert sorted(rows) == [0, 1], out
        for b, row in rows.items():
            k = run.manifest["jobs"][str(b)]["restarts"]
            assert k == len(calls.jobs[b]) - 1 and len(run.manifest["jobs"][str(b)]["history"]) == k
            assert (row["state"], row["done"], row["failed"], row["total"]) == (
                "done", str(run.per_bin), "0", str(run.per_bin)), out
            assert row["note"] == f"continued {k} time{'s' * (k != 1)}", out
        assert f"calls {n} done, 0 failed of {n}" in cs.totals_line(out), out
    assert run.status.returncode == 0, said
    # the jobs continued themselves: --wait had nothing to continue
    assert "continued as job" not in run.wait.stderr, said
    # the scheduler records every job as exit 0: those that handed their bin on, and the last
    assert {i: o.exit_code for i, o in run.outcomes.items()} == {i: 0 for i in run.outcomes}, run.outcomes
    assert len(run.outcomes) == sum(len(calls.jobs[b]) for b in (0, 1)), run.outcomes
    assert "cluf: bins" in run.wait.stderr  # the progress line


@pytest.mark.slow
@pytest.mark.timeout(900)
@scenario("no_progress")
def test_a_job_whose_single_call_outlasts_the_walltime_fails_its_bin_with_the_reason(sched, runs):
    run = runs.get("no_progress", sched)
    said = explain(run.wait, run.status)
    assert run.wait.returncode == 1, said
    assert run.status.returncode == 1, said
    reason = "its job stopped at the walltime without completing a call (is one call longer than the walltime?)"
    for out in (run.wait.stdout, run.status.stdout):
        row = cont.table(out)[0]
        assert (row["state"], row["done"], row["failed"], row["note"]) == ("failed", "0", "0", reason), out
    job = run.manifest["jobs"]["0"]
    assert job["failed_reason"] == reason
    assert job["history"] == [] and not job.get("restarts"), "no new job for a bin that made no progress"
    assert run.calls.starts == {0: 1} and run.calls.ends == {}, run.calls  # stopped once, never again


@pytest.mark.slow
@pytest.mark.timeout(900)
@scenario("cancelled")
def test_cancel_during_a_continuation_leaves_nothing_queued_and_nothing_continuing(sched, runs):
    run = runs.get("cancelled", sched)
    said = explain(run.cancel, run.wait, run.status)
    assert run.cancel.returncode == 0, said
    assert run.second in run.cancel.stdout, said  # the continuation was cancelled
    assert run.states_at_cancel, f"job {run.second} was not queued or running at the cancel"
    # nothing new after the cancel: the manifest names the same job, the scheduler has no job
    # of the run's name, and every job of the run has ended
    assert run.after_cancel["jobs"]["0"]["id"] == run.manifest["jobs"]["0"]["id"] == run.second, said
    assert run.manifest["jobs"]["0"]["restarts"] == 1
    assert run.appeared == {}, f"jobs appeared after the cancel: {run.appeared}"
    assert set(run.outcomes) == {run.first, run.second}, run.outcomes
    # --wait ends at once with the run's status: the bin is cancelled, not done
    assert run.wait.returncode == 1, said
    for out in (run.wait.stdout, run.status.stdout):
        assert cont.table(out)[0]["state"] == "cancelled", out
    assert "continued as job" not in run.wait.stderr, said


@scenario("wait_status")
@pytest.mark.timeout(600)
def test_wait_exits_with_the_runs_status(sched, runs):
    run = runs.get("wait_status", sched)
    said = explain(run.wait)
    assert run.wait.returncode == 1, said
    row = cont.table(run.wait.stdout)[0]
    assert (row["state"], row["done"], row["failed"], row["total"]) == ("done", "2", "1", "3"), said
    assert run.status.returncode == 1
    assert run.manifest["jobs"]["0"]["history"] == [], "a finished bin does not continue"
