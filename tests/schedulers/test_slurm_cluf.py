"""``cluf`` against the real Slurm of tests/schedulers/up.sh: a run of three jobs, a job
array, a task cancelled mid-run then --status and --resubmit, and --cancel.

Skips without Slurm (fails with CLUSTER_FUNC_REQUIRE_SCHEDULERS=1).
"""

import json
import re
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
def _slurm():
    ss.require_slurm()


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
        subprocess.run(["scancel", *sorted(i for i in ids if i)], capture_output=True, timeout=30, env=None)


def _env(tmp_path, **extra):
    env = cs.base_env(tmp_path, **extra)
    env.pop("SLURM_CONF", None)
    return env


def _squeue(job_id):
    res = subprocess.run(["squeue", "-h", "-r", "-j", str(job_id), "-o", "%i %T"], capture_output=True,
                         text=True, timeout=30)
    return res.stdout.split("\n") if res.stdout.strip() else []


def _path_field(job_id, key):
    """A path field of `scontrol show job -o` (it may hold spaces, up to the next ' Key=')."""
    out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    m = re.search(rf"\b{key}=(.*?)(?= [A-Za-z:]+=|$)", out, re.M)
    return m and m.group(1)


def test_slurm_three_jobs_every_call_once_failed_call_fails_the_job_only_chosen_env(tmp_path):
    # spaces in the paths: the directives and the command must quote them
    work = tmp_path / "work dir"
    work.mkdir()
    script = cs.write_target(tmp_path / "src dir", n=9, fail=(5,))  # bin 2 of 3: calls 2, 5, 8
    env = _env(tmp_path, CLUF_T_COPY="copied 'v'", CLUF_T_LEAK="leaked")
    r = cs.ok(cs.run_cluf("../src dir/example.py", "-n", 3, "-j", "the jobs", "--scheduler", "slurm", "-p", 1,
                          "-e", "CLUF_T_SET=a b", "-e", "CLUF_T_COPY", "--", "arg", "two words",
                          cwd=work, env=env))
    jobs = work / "the jobs"
    manifest = cs.read_manifest(jobs)
    ids = {int(b): j["id"] for b, j in manifest["jobs"].items()}
    assert sorted(ids) == [0, 1, 2]
    assert cs.submitted_lines(r.stdout) == {str(jobs / f"example-{i}-3.slurm"): ids[i] for i in range(3)}

    outcomes = ss.wait_slurm_jobs(list(ids.values()), timeout=120)
    assert outcomes[ids[0]] == ss.JobOutcome("COMPLETED", 0)
    assert outcomes[ids[1]] == ss.JobOutcome("COMPLETED", 0)
    assert outcomes[ids[2]] == ss.JobOutcome("FAILED", 1), "a failed call must fail the job"
    for i, job_id in ids.items():
        [rec] = ss.slurm_job_records(job_id)  # the manifest holds the real ids
        assert rec["JobName"] == f"example-{i}-3"
        assert _path_field(job_id, "StdOut") == str(jobs / f"example-{i}-3.stdout")
        assert _path_field(job_id, "StdErr") == str(jobs / f"example-{i}-3.stderr")
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
    assert [rows[i]["job"] for i in range(3)] == [ids[i] for i in range(3)]


def test_slurm_array_run_completes_every_call_once(tmp_path):
    script = cs.write_target(tmp_path, n=10)
    env = _env(tmp_path)
    r = cs.ok(cs.run_cluf("example.py", "-n", 3, "--array", "--max-running", 2, "-j", "jobs", "--scheduler",
                          "slurm", "-p", 1, "--", "x", cwd=tmp_path, env=env))
    jobs = tmp_path / "jobs"
    manifest = cs.read_manifest(jobs)["jobs"]
    [array_id] = {j["array_id"] for j in manifest.values()}
    assert {b: j["id"] for b, j in manifest.items()} == {str(i): f"{array_id}_{i}" for i in range(3)}
    assert f"job {array_id}" in r.stdout

    assert ss.wait_slurm_jobs([array_id], timeout=120)[array_id] == ss.JobOutcome("COMPLETED", 0)
    records = ss.slurm_job_records(array_id)
    assert sorted(rec["ArrayTaskId"] for rec in records) == ["0", "1", "2"]
    assert {rec.get("ArrayTaskThrottle") for rec in records} == {"2"}
    assert cs.calls(script) == list(range(10))
    for i in range(3):  # per-task output keeps the <script-name>-<i>-<n> names
        assert (jobs / f"example-{i}-3.stdout").exists()
        assert "calls done" in (jobs / f"example-{i}-3.stderr").read_text()

    st = cs.run_cluf("--status", "jobs", cwd=tmp_path, env=env)
    assert st.returncode == 0, st.stdout + st.stderr
    rows = cs.status_table(st.stdout)
    assert {i: (row["state"], row["done"], row["failed"]) for i, row in rows.items()} == {
        0: ("done", "4", "0"), 1: ("done", "3", "0"), 2: ("done", "3", "0")}


def test_slurm_task_cancelled_mid_run_is_not_done_and_resubmit_finishes_the_run(tmp_path):
    cs.cancel_mid_run_then_resubmit(
        tmp_path, _env(tmp_path), "slurm",
        cancel=lambda job: subprocess.run(["scancel", job], check=True, timeout=30),
        wait=lambda ids: ss.wait_slurm_jobs(ids, timeout=120))


def test_slurm_cancel_leaves_nothing_queued(tmp_path):
    cs.write_target(tmp_path, n=60, sleep=2)
    env = _env(tmp_path)
    cs.ok(cs.run_cluf("example.py", "-n", 3, "--array", "--max-running", 1, "-j", "jobs", "--scheduler", "slurm",
                      "-p", 1, cwd=tmp_path, env=env))
    jobs = tmp_path / "jobs"
    [array_id] = {j["array_id"] for j in cs.read_manifest(jobs)["jobs"].values()}
    cs.wait_for(lambda: any(" RUNNING" in line for line in _squeue(array_id)), 60, "a task to run")
    assert any(" PENDING" in line for line in _squeue(array_id)), "want a queued task too"
    r = cs.ok(cs.run_cluf("--cancel", "jobs", cwd=tmp_path, env=env))
    assert array_id in r.stdout
    ss.wait_slurm_jobs([array_id], timeout=60)
    assert _squeue(array_id) == []
    st = cs.run_cluf("--status", "jobs", cwd=tmp_path, env=env)
    assert st.returncode == 1
    assert not any(row["state"] in ("queued", "running", "done") for row in cs.status_table(st.stdout).values()), st.stdout
