"""``cluf`` against the real Slurm, Grid Engine and OpenPBS of tests/schedulers/up.sh.

Each scenario is written once and runs on the three schedulers: ``sched`` is the adapter
of tests/real_schedulers.py (environment, waiting for jobs and reading their exit status,
cancelling behind cluf's back, what the scheduler reports, id formats, the array size
limit), so a test id reads ``test_<behaviour>[slurm|sge|pbs]``.  The runs name their
scheduler (``--scheduler NAME``), except the one that checks ``--scheduler auto``.

A scenario that cannot happen on a scheduler is parametrized without it (a job held
in PBS's ending state E: only PBS has one to hold).  Skips without a scheduler (fails
with CLUSTER_FUNC_REQUIRE_SCHEDULERS=1).  Scenarios marked ``slow`` (over ~30 s: the
time-limit kill on Slurm, whose limits are whole minutes) still run by default;
``-m "not slow"`` leaves them out.  The runs use -p 1: the Grid Engine queue has no
parallel environment, so --cpus > 1 is not possible there.
"""

import collections
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from cluster_func.schedulers import SCHEDULERS

try:
    import cluf_support as cs
    import real_schedulers
    import scheduler_support as ss
    from scenarios import scenario
except ImportError:  # tests/ is not on sys.path when run without the rootdir conftest
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import cluf_support as cs
    import real_schedulers
    import scheduler_support as ss
    from scenarios import scenario

from real_schedulers import QUEUED, RUNNING
from cluster_func.cluster import manifest as manifest_mod  # (the manifest with its per-bin records)

pytestmark = pytest.mark.timeout(180)

COMPLETED = ss.JobOutcome("COMPLETED", 0)


@pytest.fixture(scope="module", params=list(real_schedulers.ADAPTERS))
def sched(request):
    """The real scheduler the scenario runs on (skips when it is not up)."""
    adapter = real_schedulers.ADAPTERS[request.param]
    adapter.require()
    return adapter


def cancel_leftovers(sched, folder):
    """A failing scenario must not leave jobs behind to hold the machine's slots."""
    ids = set()
    for manifest in Path(folder).rglob("*.manifest.json"):
        for job in manifest_mod.load_manifest(str(manifest))["jobs"].values():
            ids.update(h["id"] for h in job.get("history", []))
            ids.add(job.get("array_id") or job["id"])
    sched.cancel(ids, check=False)


@pytest.fixture(autouse=True)
def _each_scenario(sched, tmp_path):
    ss.clear_stale_pyenv_lock()  # a job killed in its login shell's pyenv rehash delays the next ones by 60 s
    yield
    cancel_leftovers(sched, tmp_path)


def cluf(sched, *args, cwd, env, named=True):
    """``cluf ARGS --scheduler NAME`` (the options go before a ``--``)."""
    args = list(map(str, args))
    cut = args.index("--") if "--" in args else len(args)
    scheduler = ["--scheduler", sched.name] if named else []
    return cs.run_cluf(*args[:cut], *scheduler, *args[cut:], cwd=cwd, env=env)


def manifest_jobs(jobs_dir, nodes):
    return {int(b): j for b, j in cs.read_manifest(jobs_dir, nodes=nodes)["jobs"].items()}


def status(jobs_dir, cwd, env):
    return cs.run_cluf("--status", jobs_dir, cwd=cwd, env=env)


def not_done(state):
    """A bin that left the queue without finishing: failed, vanished (killed without a word),
    stopped at walltime (clum in a cluf job stops so on SIGTERM too)..."""
    return state not in ("done", "queued", "running")


# --------------------------------------------------------------------------------
# cluf -n 3: one run per scheduler, looked at by several scenarios


@pytest.fixture(scope="module")
def three_jobs(sched, tmp_path_factory):
    """``cluf ../src dir/example.py -n 3`` from 'work dir' into the jobs dir 'the jobs', nine
    calls of which call 5 (bin 2) fails, with -e variables and arguments; waited for."""
    tmp = tmp_path_factory.mktemp(f"three-jobs-{sched.name}")
    work = tmp / "work dir"
    work.mkdir()
    script = cs.write_target(tmp / "src dir", n=9, fail=(5,))  # bin 2 of 3: calls 2, 5, 8
    env = sched.env(tmp, CLUF_T_COPY="copied 'v'", CLUF_T_LEAK="leaked")
    try:
        r = cs.ok(cluf(sched, "../src dir/example.py", "-n", 3, "-j", "the jobs", "-p", 1, "-e", "CLUF_T_SET=a b",
                       "-e", "CLUF_T_COPY", "--", "arg", "two words", cwd=work, env=env))
        jobs = work / "the jobs"
        ids = {b: j["id"] for b, j in manifest_jobs(jobs, 3).items()}
        yield SimpleNamespace(script=script, work=work, jobs=jobs, env=env, submitted=r.stdout, ids=ids,
                              outcomes=sched.wait(ids.values()))
    finally:
        cancel_leftovers(sched, tmp)


def test_cluf_n_3_runs_every_call_once_in_three_jobs(sched, three_jobs):
    run = three_jobs
    assert sorted(run.ids) == [0, 1, 2]
    assert cs.submitted_lines(run.submitted) == {
        str(run.jobs / f"example-{i}-3.{sched.name}"): run.ids[i] for i in range(3)}
    assert all(re.fullmatch(sched.job_id_re, i) for i in run.ids.values()), run.ids
    assert cs.calls(run.script) == list(range(9))  # every call exactly once
    assert all(e["argv"] == ["arg", "two words"] for e in cs.evidence(run.script))


def test_the_manifest_ids_are_the_jobs_the_scheduler_reports_with_their_names_and_output_files(sched, three_jobs):
    run = three_jobs
    for i, job_id in run.ids.items():
        stdout, stderr = run.jobs / f"example-{i}-3.stdout", run.jobs / f"example-{i}-3.stderr"
        reported = sched.report(job_id)  # looked up by the manifest's id, as it is
        assert reported["name"] == f"example-{i}-3"
        if sched.reports_output_paths:
            # PBS replaces its -o/-e files with each job: they are its own, and the job script
            # appends to the bin's files itself
            own = "" if SCHEDULERS[sched.name].appends_output else ".scheduler"
            assert (reported["stdout"], reported["stderr"]) == (
                str(run.jobs / f"example-{i}-3{own}.stdout"), str(run.jobs / f"example-{i}-3{own}.stderr"))
        assert stdout.exists()
        assert "calls" in stderr.read_text()
    st = status("the jobs", run.work, run.env)
    assert [cs.status_table(st.stdout)[i]["job"] for i in range(3)] == [run.ids[i] for i in range(3)], st.stdout


def test_a_failing_call_makes_its_jobs_exit_status_non_zero(sched, three_jobs):
    run = three_jobs
    assert [run.outcomes[run.ids[i]] for i in range(3)] == [COMPLETED, COMPLETED, ss.JobOutcome("FAILED", 1)]
    st = status("the jobs", run.work, run.env)
    assert st.returncode == 1, st.stdout + st.stderr
    rows = cs.status_table(st.stdout)
    assert [(rows[i]["state"], rows[i]["failed"]) for i in range(3)] == [
        ("done", "0"), ("done", "0"), ("done", "1")], st.stdout


def test_only_the_e_variables_reach_the_jobs(sched, three_jobs):
    for e in cs.evidence(three_jobs.script):
        assert e["env"] == {"CLUF_T_SET": "a b", "CLUF_T_COPY": "copied 'v'"}


def test_a_script_in_a_folder_whose_path_has_a_space_runs_in_the_submission_folder(sched, three_jobs):
    # the script in 'src dir', the jobs dir 'the jobs', submitted from 'work dir'
    assert {e["cwd"] for e in cs.evidence(three_jobs.script)} == {str(three_jobs.work)}
    assert set(three_jobs.outcomes.values()) <= {COMPLETED, ss.JobOutcome("FAILED", 1)}


# --------------------------------------------------------------------------------
# job arrays


def test_an_array_runs_every_call_once(sched, tmp_path):
    script = cs.write_target(tmp_path, n=10)
    env = sched.env(tmp_path)
    r = cs.ok(cluf(sched, "example.py", "-n", 3, "--array", "--max-running", 2, "-j", "jobs", "-p", 1, "--", "x",
                   cwd=tmp_path, env=env))
    if sched.max_running_ignored:
        assert "--max-running is ignored" in r.stderr
    jobs = tmp_path / "jobs"
    manifest = manifest_jobs(jobs, 3)
    [array_id] = {j["array_id"] for j in manifest.values()}
    assert re.fullmatch(sched.array_id_re, array_id), array_id
    assert {b: j["id"] for b, j in manifest.items()} == {i: sched.task_id(array_id, i) for i in range(3)}
    assert f"job {array_id}" in r.stdout

    assert sched.wait([array_id])[array_id] == COMPLETED
    assert sorted(sched.array_tasks(array_id)) == sorted(j["id"] for j in manifest.values())
    if sched.reports_throttle:
        assert sched.array_throttle(array_id) == "2"
    assert cs.calls(script) == list(range(10))
    for i in range(3):  # per-task output keeps the <script-name>-<i>-<n> names
        assert (jobs / f"example-{i}-3.stdout").exists()
        assert "calls done" in (jobs / f"example-{i}-3.stderr").read_text()

    st = status("jobs", tmp_path, env)
    assert st.returncode == 0, st.stdout + st.stderr
    rows = cs.status_table(st.stdout)
    assert {i: (row["state"], row["done"], row["failed"]) for i, row in rows.items()} == {
        0: ("done", "4", "0"), 1: ("done", "3", "0"), 2: ("done", "3", "0")}


def test_an_array_of_a_non_contiguous_selection_is_one_array_per_bin(sched, tmp_path):
    # -b 0,2/3: two arrays of one bin each (PBS refuses a one-element range such as -J 0-0)
    script = cs.write_target(tmp_path, n=9)
    env = sched.env(tmp_path)
    cs.ok(cluf(sched, "example.py", "-n", 3, "-b", "0,2/3", "--array", "-j", "jobs", "-p", 1,
               cwd=tmp_path, env=env))
    manifest = manifest_jobs(tmp_path / "jobs", 3)
    assert sorted(manifest) == [0, 2]
    arrays = [manifest[b]["array_id"] for b in (0, 2)]
    assert arrays[0] != arrays[1]
    assert [manifest[b]["id"] for b in (0, 2)] == [sched.task_id(a, 0) for a in arrays]

    assert sched.wait(arrays) == {a: COMPLETED for a in arrays}
    assert cs.calls(script) == [0, 2, 3, 5, 6, 8]
    st = status("jobs", tmp_path, env)
    rows = cs.status_table(st.stdout)
    assert {b: (rows[b]["job"], rows[b]["state"]) for b in (0, 2)} == {
        b: (manifest[b]["id"], "done") for b in (0, 2)}, st.stdout


def test_an_array_over_the_schedulers_size_limit_is_split_leaving_a_one_bin_array(sched, tmp_path):
    script = cs.write_target(tmp_path, n=9)
    with sched.array_limit(2, sched.env(tmp_path), tmp_path) as env:
        r = cs.ok(cluf(sched, "example.py", "-n", 3, "--array", "-j", "jobs", "-p", 1, cwd=tmp_path, env=env))
    assert "at most 2 tasks per array" in r.stdout and "into 2 arrays" in r.stdout, r.stdout
    manifest = manifest_jobs(tmp_path / "jobs", 3)
    first, last = manifest[0]["array_id"], manifest[2]["array_id"]
    assert manifest[1]["array_id"] == first != last
    assert [manifest[b]["id"] for b in range(3)] == [sched.task_id(first, 0), sched.task_id(first, 1),
                                                      sched.task_id(last, 0)]

    assert sched.wait([first, last]) == {first: COMPLETED, last: COMPLETED}
    assert cs.calls(script) == list(range(9))
    st = status("jobs", tmp_path, env)
    assert st.returncode == 0, st.stdout + st.stderr


# --------------------------------------------------------------------------------
# status, cancel, resubmit


def submit_one_at_a_time(sched, tmp_path, n, sleep):
    """An array of 3 bins whose tasks run one at a time (so that some queue); returns
    (script, env, array id)."""
    script = cs.write_target(tmp_path, n=n, sleep=sleep)
    env = sched.env(tmp_path)
    cs.ok(cluf(sched, "example.py", "-n", 3, "--array", *sched.one_at_a_time, "-j", "jobs", "-p", 1,
               cwd=tmp_path, env=env))
    [array_id] = {j["array_id"] for j in manifest_jobs(tmp_path / "jobs", 3).values()}
    return script, env, array_id


def test_status_follows_the_bins_from_queued_to_running_to_done(sched, tmp_path):
    script, env, array_id = submit_one_at_a_time(sched, tmp_path, n=6, sleep=0.6)

    def one_done_one_running_one_queued():
        st = status("jobs", tmp_path, env)  # exit 1 until all is done
        return st.returncode == 1 and {row["state"] for row in cs.status_table(st.stdout).values()} == {
            "done", RUNNING, QUEUED}

    cs.wait_for(one_done_one_running_one_queued, 60, "a table with a bin done, one running and one queued")
    assert sched.wait([array_id])[array_id] == COMPLETED
    st = status("jobs", tmp_path, env)  # finished jobs too (PBS: qstat -x)
    assert st.returncode == 0, st.stdout + st.stderr
    rows = cs.status_table(st.stdout)
    assert [(rows[i]["state"], rows[i]["done"]) for i in range(3)] == [("done", "2")] * 3, st.stdout
    assert cs.calls(script) == list(range(6))


def test_cancel_leaves_nothing_queued(sched, tmp_path):
    _, env, array_id = submit_one_at_a_time(sched, tmp_path, n=60, sleep=2)
    cs.wait_for(lambda: {QUEUED, RUNNING} <= set(sched.kinds([array_id])), 60, "a task running, one queued")
    r = cs.ok(cs.run_cluf("--cancel", "jobs", cwd=tmp_path, env=env))
    assert array_id in r.stdout
    sched.wait([array_id], timeout=60)
    assert sched.states([array_id]) == {}
    st = status("jobs", tmp_path, env)
    assert st.returncode == 1
    assert not any(row["state"] in ("queued", "running", "done")
                   for row in cs.status_table(st.stdout).values()), st.stdout
    # A job that finishes between cluf's query and its cancel: what the scheduler says then
    # (PBS "Job has finished", Grid Engine "does not exist") is not an error.
    late = subprocess.run([sys.executable, "-c", "from cluster_func.schedulers import get; "
                           f"print(get({sched.name!r}, True).cancel([{array_id!r}]))"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert late.returncode == 0 and late.stdout.strip() in ("True", "False"), late


@pytest.mark.parametrize("sched", ["pbs"], indirect=True)
def test_cancel_while_a_job_is_ending_is_not_an_error(sched, tmp_path):
    """PBS copies a job's output to its -o path once the job has ended, in state E, where
    qdel is refused with "Request invalid for state of job".  A FIFO as the -o path holds the
    job there until the test reads it.  (Slurm and Grid Engine write the output while the
    job runs: they have no such state to hold a job in.)"""
    script = cs.write_target(tmp_path, n=2)
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    fifo = jobs / "example-0-1.scheduler.stdout"  # PBS's own -o (the bin's .stdout is the job's)
    os.mkfifo(fifo)
    output = []
    reader = threading.Thread(target=lambda: output.append(fifo.read_bytes()), daemon=True)
    env = sched.env(tmp_path)
    try:
        cs.ok(cluf(sched, "example.py", "-n", 1, "-p", 1, "-j", "jobs", cwd=tmp_path, env=env))
        job_id = manifest_jobs(jobs, 1)[0]["id"]
        cs.wait_for(lambda: set(sched.states([job_id]).values()) == sched.ending_states, 60,
                    "the job to end and copy its output")
        assert cs.calls(script) == [0, 1]
        r = cs.ok(cs.run_cluf("--cancel", "jobs", cwd=tmp_path, env=env))
        assert f"cancelled 1 job(s): {job_id}" in r.stdout and "already finished" in r.stdout, r.stdout
    finally:
        reader.start()  # lets the copy go on
    assert sched.wait([job_id])[job_id] == COMPLETED
    reader.join(10)
    st = status("jobs", tmp_path, env)
    assert st.returncode == 0, st.stdout + st.stderr


def test_a_task_cancelled_mid_run_is_not_done_and_resubmit_finishes_the_run(sched, tmp_path):
    """Issue 7: an array of 2 bins; bin 0's task is cancelled mid-run behind cluf's back;
    --status says it is not done; --resubmit finishes the run with every call done, at most
    the one in flight at the cancel twice."""
    n = 16
    script = cs.write_target(tmp_path, n=n, sleep=0.4)
    env = sched.env(tmp_path)
    cs.ok(cluf(sched, "example.py", "-n", 2, "--array", "-j", "jobs", "-p", 1, cwd=tmp_path, env=env))
    jobs = tmp_path / "jobs"
    manifest = manifest_jobs(jobs, 2)
    array_id, victim = manifest[0]["array_id"], manifest[0]["id"]
    bin0 = cs.round_robin(n, 2, 0)

    cs.wait_for(lambda: len([x for x in cs.calls(script) if x in bin0]) >= 2, 60, "bin 0 to be mid-run")
    sched.cancel([victim])
    sched.wait([array_id])
    done_before = collections.Counter(cs.calls(script))
    assert not set(bin0) <= set(done_before), "bin 0 finished before it was cancelled: the test proves nothing"

    st = status("jobs", tmp_path, env)
    assert st.returncode == 1, st.stdout + st.stderr
    rows = cs.status_table(st.stdout)
    assert not_done(rows[0]["state"]), st.stdout
    assert rows[1]["state"] == "done", st.stdout

    r = cs.ok(cs.run_cluf("--resubmit", "jobs", cwd=tmp_path, env=env))
    after = manifest_jobs(jobs, 2)
    assert after[1]["id"] == manifest[1]["id"] and after[1]["history"] == [], "bin 1 was done"
    new_id = after[0]["id"]
    assert new_id != victim and [h["id"] for h in after[0]["history"]] == [victim], r.stdout
    assert sched.wait([new_id])[new_id] == COMPLETED

    st = status("jobs", tmp_path, env)
    assert st.returncode == 0, st.stdout + st.stderr
    counts = collections.Counter(cs.calls(script))
    assert sorted(counts) == list(range(n)), "every call completed"
    repeats = {x: c for x, c in counts.items() if c > 1}
    # with -p 1 at most the one call in flight at the cancel runs twice
    assert len(repeats) <= 1 and set(repeats.values()) <= {2}, repeats
    assert all(x in bin0 for x in repeats), repeats


# Calls from 1 on hang while the file 'hold' next to the script exists.
HOLD = """\
_HOLD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hold")
_record = target


def target(x):
    _record(x)
    while x >= 1 and os.path.exists(_HOLD):
        time.sleep(0.1)
"""


def killed_at_its_time_limit(sched, tmp_path):
    """The job hangs in call 1 until the scheduler kills it at the time limit given in its
    own words (Slurm --time, Grid Engine h_rt, PBS walltime; not cluf's --walltime, before
    which clum would stop by itself); then ``cluf --resubmit``.  (A scenario, started with the
    session: Slurm's time limit is a whole minute.)"""
    script = cs.write_target(tmp_path, n=4, extra=HOLD)
    hold = tmp_path / "hold"
    hold.touch()
    env = sched.env(tmp_path)
    cs.ok(cluf(sched, "example.py", "-n", 1, "-p", 1, *sched.time_limit, "-j", "jobs", cwd=tmp_path, env=env))
    job_id = manifest_jobs(tmp_path / "jobs", 1)[0]["id"]
    cs.wait_for(lambda: 1 in cs.calls(script), 60, "call 1 to start")

    outcome = sched.wait([job_id], timeout=150)[job_id]
    assert outcome.state == sched.time_limit_state, outcome

    st = status("jobs", tmp_path, env)
    assert st.returncode == 1, st.stdout + st.stderr
    row = cs.status_table(st.stdout)[0]
    assert not_done(row["state"]) and row["done"] == "1", st.stdout

    hold.unlink()
    cs.ok(cs.run_cluf("--resubmit", "jobs", cwd=tmp_path, env=env))
    new_id = manifest_jobs(tmp_path / "jobs", 1)[0]["id"]
    assert new_id != job_id
    assert sched.wait([new_id])[new_id] == COMPLETED
    st = status("jobs", tmp_path, env)
    assert st.returncode == 0, st.stdout + st.stderr
    return SimpleNamespace(calls=cs.calls(script))


SCENARIOS = {f.__name__: f for f in (killed_at_its_time_limit,)}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("sched", [pytest.param("slurm", marks=pytest.mark.slow), "sge", "pbs"], indirect=True)
@scenario("killed_at_its_time_limit")
def test_a_bin_killed_at_its_time_limit_is_not_done_and_resubmit_finishes_it(sched, runs):
    calls = runs.get("killed_at_its_time_limit", sched).calls
    # call 0 was done and is not run again; call 1 ran in both jobs
    assert collections.Counter(calls) == {0: 1, 1: 2, 2: 1, 3: 1}


# --------------------------------------------------------------------------------
# --scheduler auto


def test_scheduler_auto_picks_the_scheduler_whose_commands_are_on_path(sched, tmp_path):
    # PBS: only PBS's qsub on PATH (no sbatch, no Grid Engine qsub, no SGE_ROOT);
    # Grid Engine: qsub and SGE_ROOT without sbatch; Slurm: sbatch on PATH.
    script = cs.write_target(tmp_path, n=3)
    env = sched.auto_env(sched.env(tmp_path), tmp_path)
    cs.ok(cluf(sched, "example.py", "-n", 1, "-p", 1, "-j", "jobs", named=False, cwd=tmp_path, env=env))
    assert cs.read_manifest(tmp_path / "jobs", nodes=1)["scheduler"] == sched.name
    job = manifest_jobs(tmp_path / "jobs", 1)[0]
    assert job["script"].endswith(f".{sched.name}")
    assert sched.wait([job["id"]])[job["id"]] == COMPLETED
    assert cs.calls(script) == [0, 1, 2]
