"""``cluf`` against the real Grid Engine of tests/schedulers/up.sh: a run of three jobs,
a job array, a task cancelled mid-run then --status and --resubmit, and --cancel.

Skips without Grid Engine (fails with CLUSTER_FUNC_REQUIRE_SCHEDULERS=1).  The queue
here has no parallel environment, so the runs use -p 1 (--cpus > 1 asks for -pe smp).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import cluf_support as cs
    import scheduler_support as ss
except ImportError:  # tests/ is not on sys.path when run without the rootdir conftest
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import cluf_support as cs
    import scheduler_support as ss

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(autouse=True)
def _sge():
    ss.require_sge()


@pytest.fixture(autouse=True)
def _cancel_leftovers(tmp_path):
    """A failing test must not leave jobs behind to hold the machine's slots."""
    yield
    ids = set()
    for manifest in tmp_path.rglob("*.manifest.json"):
        for job in json.loads(manifest.read_text())["jobs"].values():
            ids.update(h["id"] for h in job.get("history", []))
            ids.add(job.get("array_id") or job["id"])
    if ids:
        subprocess.run(["qdel", *sorted(i for i in ids if i)], capture_output=True, timeout=30, env=ss.sge_env())


def _env(tmp_path, **extra):
    return ss.sge_env(cs.base_env(tmp_path, **extra))


def _qstat_states(job_id):
    """States of the job's lines in `qstat -g d` (one per task), [] once it has left."""
    res = subprocess.run(["qstat", "-g", "d", "-u", "*"], capture_output=True, text=True, timeout=30,
                         env=ss.sge_env())
    assert res.returncode == 0, res.stderr
    return [line.split()[4] for line in res.stdout.splitlines()
            if line.split()[:1] == [str(job_id)] and len(line.split()) > 4]


def test_sge_three_jobs_every_call_once_failed_call_fails_the_job_only_chosen_env(tmp_path):
    # spaces in the paths: the directives and the command must quote them
    work = tmp_path / "work dir"
    work.mkdir()
    script = cs.write_target(tmp_path / "src dir", n=9, fail=(5,))  # bin 2 of 3: calls 2, 5, 8
    env = _env(tmp_path, CLUF_T_COPY="copied 'v'", CLUF_T_LEAK="leaked")
    r = cs.ok(cs.run_cluf("../src dir/example.py", "-n", 3, "-j", "the jobs", "--scheduler", "sge", "-p", 1,
                          "-e", "CLUF_T_SET=a b", "-e", "CLUF_T_COPY", "--", "arg", "two words",
                          cwd=work, env=env))
    jobs = work / "the jobs"
    ids = {int(b): j["id"] for b, j in cs.read_manifest(jobs)["jobs"].items()}
    assert sorted(ids) == [0, 1, 2]
    assert cs.submitted_lines(r.stdout) == {str(jobs / f"example-{i}-3.sge"): ids[i] for i in range(3)}

    outcomes = ss.wait_sge_jobs(list(ids.values()), timeout=120)
    assert outcomes[ids[0]] == ss.JobOutcome("COMPLETED", 0)
    assert outcomes[ids[1]] == ss.JobOutcome("COMPLETED", 0)
    assert outcomes[ids[2]] == ss.JobOutcome("FAILED", 1), "a failed call must fail the job"
    for i, job_id in ids.items():
        [rec] = ss.sge_qacct(job_id)  # the manifest holds the real ids
        assert rec["jobname"] == f"example-{i}-3"
        assert (jobs / f"example-{i}-3.stdout").exists()
        assert "calls" in (jobs / f"example-{i}-3.stderr").read_text()

    assert cs.calls(script) == list(range(9))  # every call exactly once
    for e in cs.evidence(script):
        assert e["argv"] == ["arg", "two words"]
        assert e["env"] == {"CLUF_T_SET": "a b", "CLUF_T_COPY": "copied 'v'"}, "only the -e variables"
        assert e["cwd"] == str(work)

    st = cs.run_cluf("--status", "the jobs", cwd=work, env=env)
    assert st.returncode == 1, st.stdout + st.stderr
    rows = cs.status_table(st.stdout)
    assert [rows[i]["state"] for i in range(3)] == ["done"] * 3, st.stdout
    assert [rows[i]["failed"] for i in range(3)] == ["0", "0", "1"], st.stdout


def test_sge_array_run_completes_every_call_once(tmp_path):
    script = cs.write_target(tmp_path, n=10)
    env = _env(tmp_path)
    r = cs.ok(cs.run_cluf("example.py", "-n", 3, "--array", "--max-running", 2, "-j", "jobs", "--scheduler",
                          "sge", "-p", 1, "--", "x", cwd=tmp_path, env=env))
    jobs = tmp_path / "jobs"
    manifest = cs.read_manifest(jobs)["jobs"]
    [array_id] = {j["array_id"] for j in manifest.values()}
    assert {b: j["id"] for b, j in manifest.items()} == {str(i): f"{array_id}.{i + 1}" for i in range(3)}
    assert f"job {array_id}" in r.stdout

    assert ss.wait_sge_jobs([array_id], timeout=120)[array_id] == ss.JobOutcome("COMPLETED", 0)
    assert sorted(rec["taskid"] for rec in ss.sge_qacct(array_id)) == ["1", "2", "3"]
    assert cs.calls(script) == list(range(10))
    for i in range(3):  # per-task output keeps the <script-name>-<i>-<n> names
        assert (jobs / f"example-{i}-3.stdout").exists()
        assert "calls done" in (jobs / f"example-{i}-3.stderr").read_text()

    st = cs.run_cluf("--status", "jobs", cwd=tmp_path, env=env)
    assert st.returncode == 0, st.stdout + st.stderr
    rows = cs.status_table(st.stdout)
    assert {i: (row["state"], row["done"], row["failed"]) for i, row in rows.items()} == {
        0: ("done", "4", "0"), 1: ("done", "3", "0"), 2: ("done", "3", "0")}


def test_sge_task_cancelled_mid_run_is_not_done_and_resubmit_finishes_the_run(tmp_path):
    cs.cancel_mid_run_then_resubmit(
        tmp_path, _env(tmp_path), "sge",
        cancel=lambda job: subprocess.run(["qdel", job], check=True, timeout=30, env=ss.sge_env(),
                                   capture_output=True),
        wait=lambda ids: ss.wait_sge_jobs(ids, timeout=120))


def test_sge_cancel_leaves_nothing_queued(tmp_path):
    cs.write_target(tmp_path, n=60, sleep=2)
    env = _env(tmp_path)
    cs.ok(cs.run_cluf("example.py", "-n", 3, "-j", "jobs", "--scheduler", "sge", "-p", 1, "--walltime", "0:10:00",
                      cwd=tmp_path, env=env))
    jobs = tmp_path / "jobs"
    ids = [j["id"] for j in cs.read_manifest(jobs)["jobs"].values()]
    cs.wait_for(lambda: any("r" in s for i in ids for s in _qstat_states(i)), 60, "a job to run")
    r = cs.ok(cs.run_cluf("--cancel", "jobs", cwd=tmp_path, env=env))
    for i in ids:
        assert i in r.stdout
    cs.wait_for(lambda: not any(_qstat_states(i) for i in ids), 60, "the jobs to leave the queue")
    st = cs.run_cluf("--status", "jobs", cwd=tmp_path, env=env)
    assert st.returncode == 1
    assert not any(row["state"] in ("queued", "running", "done") for row in cs.status_table(st.stdout).values()), st.stdout
