"""LSF: job scripts against golden files, and the parsers on output written from the LSF
documentation (tests/data/schedulers/lsf/README.md: no LSF runs here), then submission,
status and cancelling through ``cluf`` with stand-in bsub/bjobs/bkill."""

import json
import os
import sys
from pathlib import Path

import pytest

import cluf_support as cs
from cluster_func import options
from cluster_func import schedulers
from cluster_func.schedulers.base import QUEUED, RUNNING, JobSpec
from cluster_func.schedulers.lsf import parse_bjobs, parse_max_array_size
from scheduler_records import DATA, failure, recorded

EXPECTED = DATA / "lsf" / "expected"
lsf = schedulers.SCHEDULERS["lsf"]()


def assert_golden(name, text):
    path = EXPECTED / name
    if os.environ.get("CLUF_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no expected file {path}: run with CLUF_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{name} differs from {path}:\n{text}"


FAKE = '''\
#!{python}
import json, os, sys
d = os.path.dirname(os.path.abspath(__file__))
stdin = sys.stdin.read()
with open(os.path.join(d, "{name}.log"), "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "stdin": stdin, "cwd": os.getcwd()}}) + "\\n")
sys.stdout.write({stdout!r})
sys.stderr.write({stderr!r})
sys.exit({status})
'''


def fake(bindir, name, record):
    """A stand-in for ``name`` answering as the recorded file ``record`` says."""
    r = recorded("lsf", record)
    path = Path(bindir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(FAKE.format(python=sys.executable, name=name, stdout=r.stdout, stderr=r.stderr, status=r.status))
    path.chmod(0o755)


def calls_of(bindir, name):
    path = Path(bindir) / f"{name}.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def env(tmp_path):
    return cs.base_env(tmp_path, tmp_path / "bin")


# ------------------------------------------------------------------ job scripts


def test_lsf_golden_plain(tmp_path, env):
    cs.write_target(tmp_path, n=4)
    cs.ok(cs.run_cluf("example.py", "-n", 2, "-q", "-j", "jobs", "--scheduler", "lsf", cwd=tmp_path, env=env))
    for i in range(2):
        assert_golden(f"plain-example-{i}-2.lsf", cs.normalise((tmp_path / f"jobs/example-{i}-2.lsf").read_text(), tmp_path))


def test_lsf_golden_resources_and_raw_options(tmp_path, env):
    cs.write_target(tmp_path, n=9)
    cs.ok(cs.run_cluf("example.py", "-n", 3, "-b", "1/3", "-q", "-j", "my jobs", "--scheduler", "lsf",
                      "--walltime", "1-12:00:30", "--memory", "4G", "--cpus", 4, "--queue", "long",
                      "--account", "proj42", "--lsf-options", "app=fluent,x", "-e", "OMP_NUM_THREADS=4",
                      cwd=tmp_path, env=env))
    assert_golden("resources-example-1-3.lsf", cs.normalise((tmp_path / "my jobs/example-1-3.lsf").read_text(), tmp_path))


def test_lsf_golden_array(tmp_path, env):
    cs.write_target(tmp_path, n=7)
    cs.ok(cs.run_cluf("example.py", "-n", 3, "--array", "--max-running", 2, "-p", 1, "-q", "-j", "jobs",
                      "--scheduler", "lsf", cwd=tmp_path, env=env))
    assert_golden("array-example-array-3.lsf", cs.normalise((tmp_path / "jobs/example-array-3.lsf").read_text(), tmp_path))


def test_walltime_is_rounded_up_to_whole_minutes():
    assert "-W 0:01" in lsf.directives(JobSpec(name="x", stdout="/o", stderr="/e", walltime=1))
    assert "-W 25:00" in lsf.directives(JobSpec(name="x", stdout="/o", stderr="/e", walltime=90000))


def test_an_array_of_one_is_a_single_index():
    assert lsf.directives(JobSpec(name="x", stdout="/o", stderr="/e", array=1))[0] == '-J "x[1]"'


@pytest.mark.parametrize("index, bin_", [("1", 0), ("3", 2)])
def test_an_array_task_takes_its_bin_from_lsb_jobindex_counted_from_one(tmp_path, env, index, bin_):
    script = cs.write_target(tmp_path, n=7)
    cs.ok(cs.run_cluf("example.py", "-n", 3, "--array", "-p", 1, "-q", "-j", "jobs", "--scheduler", "lsf",
                      cwd=tmp_path, env=env))
    res = cs.run_by_hand(tmp_path / "jobs/example-array-3.lsf", env={"LSB_JOBINDEX": index})
    assert res.returncode == 0, res.stderr
    assert cs.calls(script) == cs.round_robin(7, 3, bin_)


def test_outside_an_array_lsb_jobindex_0_is_not_a_task(tmp_path, env):
    cs.write_target(tmp_path, n=7)
    cs.ok(cs.run_cluf("example.py", "-n", 3, "--array", "-q", "-j", "jobs", "--scheduler", "lsf", cwd=tmp_path, env=env))
    res = cs.run_by_hand(tmp_path / "jobs/example-array-3.lsf", env={"LSB_JOBINDEX": "0"})
    assert res.returncode == 2 and "CLUF_BIN" in res.stderr


# ------------------------------------------------------------------ parsers


def test_bsub_says_which_job_it_submitted():
    assert lsf.parse_job_id(recorded("lsf", "bsub.txt").stdout) == "301828"
    assert lsf.parse_job_id(recorded("lsf", "bsub_array.txt").stdout) == "301970"
    assert lsf.parse_job_id(recorded("lsf", "bsub_site_message.txt").stdout) == "4711"
    assert lsf.parse_job_id(recorded("lsf", "bsub_refused.txt").stdout) is None


def test_bsub_gets_the_script_on_stdin(tmp_path):
    script = tmp_path / "x.lsf"
    script.write_text("#!/bin/bash\n#BSUB -J x\n")
    assert lsf.submit_argv(str(script)) == ["bsub"]
    assert lsf.submit_input(str(script)) == "#!/bin/bash\n#BSUB -J x\n"


def test_the_query_is_one_bjobs_of_the_jobs_and_arrays_with_finished_ones():
    assert lsf.query_argv(["301828", "301970[1]", "301970[2]"]) == [
        "bjobs", "-a", "-noheader", "-o", "jobid jobindex stat", "301828", "301970"]


def test_bjobs_lines_are_jobs_and_array_elements():
    listed = parse_bjobs(recorded("lsf", "bjobs.txt").stdout)
    assert listed["301828"] == "RUN" and listed["301970[2]"] == "PEND" and "301970" not in listed


def test_pending_and_suspended_jobs_wait_running_ones_run_finished_ones_are_gone():
    text = recorded("lsf", "bjobs.txt").stdout
    ids = ["301828", "301829", "301830", "301831", "301970[1]", "301970[2]", "301970[3]", "301970[4]",
           "301972", "301973", "301974", "1"]
    assert lsf.parse_query(text, ids) == {
        "301828": RUNNING, "301829": QUEUED, "301970[1]": RUNNING, "301970[2]": QUEUED, "301970[4]": QUEUED,
        "301972": QUEUED, "301973": RUNNING}


def test_an_array_id_is_live_while_an_element_is():
    assert lsf.parse_query(recorded("lsf", "bjobs.txt").stdout, ["301970"]) == {"301970": RUNNING}


def test_a_forgotten_id_does_not_spoil_the_answer_for_the_others():
    error = failure("lsf", "bjobs_not_found.txt")
    assert lsf.query_failure_ok(error)
    assert lsf.parse_query(error.stdout, ["301829", "99999"]) == {"301829": QUEUED}


def test_array_element_ids_and_the_array_limit():
    assert lsf.task_id("301970", 1) == "301970[1]"
    assert parse_max_array_size(recorded("lsf", "bparams_a.txt").stdout) == 2000
    assert parse_max_array_size("") == 1000


def test_bkill_of_a_finished_or_forgotten_job_is_not_an_error():
    assert lsf.cancel_argv(["301970", "301831"]) == ["bkill", "301970", "301831"]
    assert lsf.cancel_finished(failure("lsf", "bkill_finished.txt").output)
    assert lsf.cancel_finished(failure("lsf", "bkill_no_matching.txt").output)


def test_other_bkill_complaints_are_errors():
    assert not lsf.cancel_finished(failure("lsf", "bkill_denied.txt").output)
    assert not lsf.cancel_finished(recorded("lsf", "bkill.txt").stdout)


# ------------------------------------------------------------------ the registry


def test_lsf_is_a_scheduler_choice_with_its_own_raw_options():
    assert "lsf" in schedulers.names()
    assert options.from_dict({"scheduler": "lsf", "lsf_options": {"app": "x"}}, "cluf", "x") == {
        "scheduler": "lsf", "lsf-options": {"app": "x"}}


def test_bsub_alone_on_path_means_lsf(tmp_path, monkeypatch):
    cs.stand_in(tmp_path, "bsub")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert schedulers.detect(submitting=True).name == "lsf"
    cs.stand_in(tmp_path, "sbatch")
    assert schedulers.detect(submitting=True).name == "slurm"


# ------------------------------------------------------------------ through cluf


def test_submit_status_and_cancel_through_cluf(tmp_path, env):
    bindir = tmp_path / "bin"
    fake(bindir, "bsub", "bsub_array.txt")
    cs.write_target(tmp_path, n=8)
    r = cs.ok(cs.run_cluf("example.py", "-n", 4, "--array", "-p", 1, "-j", "jobs", "--scheduler", "lsf",
                          "--lsf-options", "app=x", "-o", "vmem=1gb", cwd=tmp_path, env=env))
    assert "--pbs-options are ignored: the jobs are for lsf." in r.stderr
    [call] = calls_of(bindir, "bsub")
    script = tmp_path / "jobs/example-array-4.lsf"
    assert call["argv"] == [] and call["stdin"] == script.read_text() and call["cwd"] == str(tmp_path)
    jobs = cs.read_manifest(tmp_path / "jobs", nodes=4)["jobs"]
    assert {b: (j["id"], j["array_id"]) for b, j in jobs.items()} == {
        str(b): (f"301970[{b + 1}]", "301970") for b in range(4)}

    fake(bindir, "bjobs", "bjobs.txt")  # 301970: 1 RUN, 2 PEND, 3 DONE, 4 PSUSP
    st = cs.run_cluf("--status", "jobs", cwd=tmp_path, env=env)
    rows = cs.status_table(st.stdout)
    assert [rows[b]["state"] for b in range(4)] == ["running", "queued", "vanished", "queued"], st.stdout
    assert calls_of(bindir, "bjobs")[-1]["argv"] == ["-a", "-noheader", "-o", "jobid jobindex stat", "301970"]

    fake(bindir, "bkill", "bkill_finished.txt")
    out = cs.ok(cs.run_cluf("--cancel", "jobs", cwd=tmp_path, env=env))
    assert calls_of(bindir, "bkill")[-1]["argv"] == ["301970"]
    assert "already finished" in out.stdout

    fake(bindir, "bkill", "bkill_denied.txt")
    cs.assert_clean_error(cs.run_cluf("--cancel", "jobs", cwd=tmp_path, env=env), "bkill 301970", "permission denied")


def test_a_refused_submission_reports_lsfs_words(tmp_path, env):
    fake(tmp_path / "bin", "bsub", "bsub_refused.txt")
    cs.write_target(tmp_path, n=4)
    r = cs.run_cluf("example.py", "-n", 2, "-j", "jobs", "--scheduler", "lsf", cwd=tmp_path, env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "bsub exited with status 255 and said: short: User cannot use the queue" in r.stderr, r.stderr
