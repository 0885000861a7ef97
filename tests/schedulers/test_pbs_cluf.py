"""``cluf`` against the real OpenPBS of tests/schedulers/up.sh: jobs and arrays in a jobs
dir with a space in its name, one-bin arrays, --status from ``qstat -x -t -f -F json``
(full ids with the server name, subjobs), --cancel, a cancel of a finished job, and
``--scheduler auto`` picking PBS Professional.

Skips without PBS (fails with CLUSTER_FUNC_REQUIRE_SCHEDULERS=1).
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

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(autouse=True)
def _pbs():
    ss.require_pbs()


@pytest.fixture(autouse=True)
def _delete_leftovers(tmp_path):
    """A failing test must not leave jobs behind to hold the node."""
    yield
    ids = set()
    for manifest in tmp_path.rglob("*.manifest.json"):
        for job in json.loads(manifest.read_text())["jobs"].values():
            ids.update(h["id"] for h in job.get("history", []))
            ids.add(job.get("array_id") or job["id"])
    if ids:
        subprocess.run([ss.pbs_bin("qdel"), *sorted(i for i in ids if i)], capture_output=True, timeout=30)


def _env(tmp_path, **extra):
    return ss.pbs_env(cs.base_env(tmp_path, **extra))


def test_pbs_array_with_one_bin_arrays_in_a_jobs_dir_with_a_space(tmp_path):
    script = cs.write_target(tmp_path, n=10)
    env = _env(tmp_path)
    # bins 0, 2 and 4 of 5: three arrays of one bin each, which PBS refuses as -J 0-0
    r = cs.ok(cs.run_cluf("example.py", "-n", 5, "-b", "0,2,4/5", "--array", "-p", 1, "-j", "the jobs",
                          "--scheduler", "pbs", cwd=tmp_path, env=env))
    jobs = tmp_path / "the jobs"
    manifest = cs.read_manifest(jobs, nodes=5)["jobs"]
    assert sorted(map(int, manifest)) == [0, 2, 4], r.stdout
    for job in manifest.values():
        assert job["id"] == job["array_id"].replace("[]", "[0]"), job  # its one subjob
        assert "#PBS -J 0-1:2" in Path(job["script"]).read_text()
    arrays = sorted({j["array_id"] for j in manifest.values()})
    outcomes = ss.wait_pbs_jobs(arrays, timeout=180)
    assert set(outcomes.values()) == {ss.JobOutcome("COMPLETED", 0)}, outcomes
    assert cs.calls(script) == sorted(x for b in (0, 2, 4) for x in cs.round_robin(10, 5, b))
    for b in (0, 2, 4):
        assert "calls done" in (jobs / f"example-{b}-5.stderr").read_text()

    st = cs.run_cluf("--status", "the jobs", cwd=tmp_path, env=env)
    rows = cs.status_table(st.stdout)
    assert {b: (rows[b]["job"], rows[b]["state"]) for b in rows} == {
        int(b): (j["id"], "done") for b, j in manifest.items()}, st.stdout + st.stderr


def test_pbs_jobs_status_while_running_then_cancel(tmp_path):
    cs.write_target(tmp_path, n=40, sleep=1)
    env = _env(tmp_path)
    cs.ok(cs.run_cluf("example.py", "-n", 2, "--array", "-p", 1, "-j", "my jobs", "--scheduler", "pbs",
                      cwd=tmp_path, env=env))
    jobs = tmp_path / "my jobs"
    manifest = cs.read_manifest(jobs, nodes=2)["jobs"]
    [array_id] = {j["array_id"] for j in manifest.values()}

    def states():
        return [row["state"] for _, row in sorted(cs.status_table(
            cs.run_cluf("--status", "my jobs", cwd=tmp_path, env=env).stdout).items())]

    cs.wait_for(lambda: states() == ["running", "running"], 90, "both subjobs to run")
    r = cs.ok(cs.run_cluf("--cancel", "my jobs", cwd=tmp_path, env=env))
    assert array_id in r.stdout
    ss.wait_pbs_jobs([array_id], timeout=90)
    assert all(s in ("failed", "vanished") for s in states())
    # Cancelling a finished job is not an error (qdel: "Job has finished").
    sched = subprocess.run([sys.executable, "-c", "from cluster_func.schedulers import get; "
                            f"print(get('pbs', True).cancel(['{array_id}']))"],
                           capture_output=True, text=True, timeout=60, env=env)
    assert sched.stdout.strip() == "True", sched


def test_pbs_single_jobs_in_dirs_with_spaces_and_auto_detection(tmp_path):
    work = tmp_path / "work dir"
    work.mkdir()
    script = cs.write_target(work, n=4, fail=(3,))  # bin 1 of 2: 1, 3
    env = ss.pbs_env(cs.base_env(tmp_path), only_pbs=True)
    cs.ok(cs.run_cluf("example.py", "-n", 2, "-p", 1, "-j", "the jobs", cwd=work, env=env))
    jobs = work / "the jobs"
    manifest = cs.read_manifest(jobs, nodes=2)["jobs"]
    assert all(j["script"].endswith(".pbs") for j in manifest.values())
    ids = [manifest[str(b)]["id"] for b in range(2)]
    outcomes = ss.wait_pbs_jobs(ids, timeout=180)
    assert [outcomes[i] for i in ids] == [ss.JobOutcome("COMPLETED", 0), ss.JobOutcome("FAILED", 1)]
    assert cs.calls(script) == [0, 1, 2, 3]
    for b in range(2):
        assert "calls" in (jobs / f"example-{b}-2.stderr").read_text()
    st = cs.run_cluf("--status", "the jobs", cwd=work, env=env)
    assert st.returncode == 1
    rows = cs.status_table(st.stdout)
    assert [(rows[b]["state"], rows[b]["failed"]) for b in range(2)] == [("done", "0"), ("done", "1")], st.stdout
