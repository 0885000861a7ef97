"""Self-test of the real-scheduler harness (tests/scheduler_support.py).

Needs the daemons of tests/schedulers/up.sh; skips without them (fails with
CLUSTER_FUNC_REQUIRE_SCHEDULERS=1).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import scheduler_support as ss
except ImportError:  # tests/ is not on sys.path when run without a config
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import scheduler_support as ss

JOB_SCRIPT = """#!/bin/bash
echo "hello ${CF_HARNESS_VAR:-unset} ${CF_HARNESS_LEAK:-unset}"
"""
FAIL_SCRIPT = """#!/bin/bash
echo "about to fail"
exit 3
"""


def _submit_env():
    """The submitting process's environment, with a variable that must NOT
    reach the job (only chosen variables are passed)."""
    env = dict(os.environ)
    env["CF_HARNESS_LEAK"] = "leaked"
    return env


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


# -------------------------------------------------------------------- Slurm


def test_slurm_job_runs_and_exports_only_chosen_variables(tmp_path):
    ss.require_slurm()
    script = _write(tmp_path / "job.sh", JOB_SCRIPT)
    out = tmp_path / "job.out"
    res = subprocess.run(
        ["sbatch", "--parsable", "-J", "cf_harness_ok", "-o", str(out), "-t", "1",
         "--export=NONE,CF_HARNESS_VAR=xyz", str(script)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=_submit_env(), check=True)
    job_id = res.stdout.strip().split(";")[0]
    outcome = ss.wait_slurm_jobs([job_id], timeout=60)[job_id]
    assert outcome == ss.JobOutcome("COMPLETED", 0), outcome
    assert out.read_text() == "hello xyz unset\n"


def test_slurm_nonzero_exit_is_reported(tmp_path):
    ss.require_slurm()
    script = _write(tmp_path / "fail.sh", FAIL_SCRIPT)
    out = tmp_path / "fail.out"
    job_id = ss.submit_slurm(["-J", "cf_harness_fail", "-o", str(out), "-t", "1",
                              "--export=NONE", str(script)], cwd=str(tmp_path))
    state, code = ss.wait_slurm_jobs([job_id], timeout=60)[job_id]
    assert (state, code) == ("FAILED", 3)
    assert out.read_text() == "about to fail\n"


# -------------------------------------------------------------- Grid Engine


def test_sge_job_runs_and_exports_only_chosen_variables(tmp_path):
    ss.require_sge()
    script = _write(tmp_path / "job.sh", JOB_SCRIPT)
    out = tmp_path / "job.out"
    res = subprocess.run(
        ["qsub", "-terse", "-N", "cf_harness_ok", "-S", "/bin/bash", "-o", str(out), "-j", "y",
         "-v", "CF_HARNESS_VAR=xyz", str(script)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env=ss.sge_env(_submit_env()), check=True)
    job_id = res.stdout.strip()
    outcome = ss.wait_sge_jobs([job_id], timeout=60)[job_id]
    assert outcome == ss.JobOutcome("COMPLETED", 0), outcome
    assert out.read_text() == "hello xyz unset\n"


def test_sge_nonzero_exit_is_reported(tmp_path):
    ss.require_sge()
    script = _write(tmp_path / "fail.sh", FAIL_SCRIPT)
    out = tmp_path / "fail.out"
    job_id = ss.submit_sge(["-N", "cf_harness_fail", "-S", "/bin/bash", "-o", str(out), "-j", "y",
                            str(script)], cwd=str(tmp_path))
    state, code = ss.wait_sge_jobs([job_id], timeout=60)[job_id]
    assert (state, code) == ("FAILED", 3)
    assert out.read_text() == "about to fail\n"
    acct = ss.sge_qacct(job_id)
    assert acct and acct[0]["failed"].split()[0] == "0" and acct[0]["exit_status"].split()[0] == "3"


# ---------------------------------------------------------------------- PBS


def test_pbs_job_runs_and_exports_only_chosen_variables(tmp_path):
    ss.require_pbs()
    script = _write(tmp_path / "job.sh", JOB_SCRIPT)
    out = tmp_path / "job.out"
    res = subprocess.run(
        [ss.pbs_bin("qsub"), "-f", "-N", "cf_harness_ok", "-S", "/bin/bash", "-o", str(out), "-j", "oe",
         "-v", "CF_HARNESS_VAR=xyz", str(script)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env=ss.pbs_env(_submit_env()), check=True)
    job_id = res.stdout.strip()
    outcome = ss.wait_pbs_jobs([job_id], timeout=60)[job_id]
    assert outcome == ss.JobOutcome("COMPLETED", 0), outcome
    assert out.read_text() == "hello xyz unset\n"


def test_pbs_nonzero_exit_is_reported(tmp_path):
    ss.require_pbs()
    script = _write(tmp_path / "fail.sh", FAIL_SCRIPT)
    out = tmp_path / "fail.out"
    job_id = ss.submit_pbs(["-N", "cf_harness_fail", "-S", "/bin/bash", "-o", str(out), "-j", "oe",
                            str(script)], cwd=str(tmp_path))
    state, code = ss.wait_pbs_jobs([job_id], timeout=60)[job_id]
    assert (state, code) == ("FAILED", 3)
    assert out.read_text() == "about to fail\n"
    recs = ss.pbs_job_records(job_id)
    assert recs and recs[job_id]["job_state"] == "F" and recs[job_id]["Exit_status"] == 3


def test_pbs_array_outcome_comes_from_the_subjobs(tmp_path):
    """The array parent says Exit_status 0 even when a subjob failed."""
    ss.require_pbs()
    script = _write(tmp_path / "arr.sh", '#!/bin/bash\n[ "$PBS_ARRAY_INDEX" = 1 ] && exit 3\nexit 0\n')
    job_id = ss.submit_pbs(["-N", "cf_harness_arr", "-S", "/bin/bash", "-j", "oe", "-o", str(tmp_path),
                            "-J", "0-2", str(script)], cwd=str(tmp_path))
    assert job_id.split(".")[0].endswith("[]"), job_id
    assert ss.wait_pbs_jobs([job_id], timeout=60)[job_id] == ("FAILED", 3)


def test_pbs_env_puts_pbs_commands_first():
    """What cluf's --scheduler auto looks at: PBS's qsub on PATH, and with
    only_pbs no sbatch and no Grid Engine qsub; no SGE_ROOT either way."""
    ss.require_pbs()
    base = dict(os.environ, SGE_ROOT="/var/lib/gridengine", SGE_CELL="default")
    env = ss.pbs_env(base)
    assert "SGE_ROOT" not in env and "SGE_CELL" not in env
    assert shutil.which("qsub", path=env["PATH"]) == ss.pbs_bin("qsub")
    assert shutil.which("qstat", path=env["PATH"]) == ss.pbs_bin("qstat")
    only = ss.pbs_env(base, only_pbs=True)
    assert shutil.which("qsub", path=only["PATH"]) == ss.pbs_bin("qsub")
    assert shutil.which("sbatch", path=only["PATH"]) is None
    res = subprocess.run(["qstat", "--version"], capture_output=True, text=True, timeout=30, env=only)
    assert res.stdout.startswith("pbs_version = "), res


# ----------------------------------------------- skip / fail without a scheduler


@pytest.mark.parametrize("require", ["require_slurm", "require_sge", "require_pbs"])
@pytest.mark.parametrize("strict", [False, True])
def test_require_skips_or_fails_without_scheduler(tmp_path, monkeypatch, require, strict):
    monkeypatch.setenv("PATH", str(tmp_path))  # no scheduler command found
    monkeypatch.setattr(ss, "PBS_EXEC", str(tmp_path))  # PBS is used by full path
    if strict:
        monkeypatch.setenv(ss.REQUIRE_ENV, "1")
    else:
        monkeypatch.delenv(ss.REQUIRE_ENV, raising=False)
    caches = [ss.slurm_status, ss.sge_status, ss.pbs_status]
    for c in caches:
        c.cache_clear()
    try:
        expected = pytest.fail.Exception if strict else pytest.skip.Exception
        with pytest.raises(expected, match="not on PATH|not found"):
            getattr(ss, require)()
    finally:
        for c in caches:
            c.cache_clear()  # the real PATH is checked afresh afterwards
