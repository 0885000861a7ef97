"""Without a scheduler: a job script run again resumes its bin, the verdicts read from what
Slurm and PBS say about a job being stopped, and the per-bin records of the manifest
(tests/schedulers/test_requeue_cancel_real.py runs the same on the real schedulers)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import cluf_support as cs
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import cluf_support as cs

from cluster_func.cluster import continuation as c
from cluster_func.schedulers import job as st
from cluster_func.schedulers.pbs import parse_stop as pbs_stop
from cluster_func.schedulers.slurm import parse_stop as slurm_stop
from cluster_func.cluster import jobs
from cluster_func.cluster import manifest as manifest_mod
from cluster_func.schedulers import SCHEDULERS


@pytest.fixture
def env(tmp_path):
    bindir = tmp_path / "bin"
    for name in ("sbatch", "squeue", "scontrol", "qsub", "qstat"):
        cs.stand_in(bindir, name, "{id}\n")
    return cs.base_env(tmp_path, bindir, CLUF_PBS_FLAVOUR="pbspro")


@pytest.mark.parametrize("sched", ["slurm", "pbs", "sge", "lsf"])
def test_a_job_script_run_again_resumes_and_a_new_submissions_script_starts_over(tmp_path, env, sched):
    cs.write_target(tmp_path, n=4)
    ext = SCHEDULERS[sched].extension
    write = ["example.py", "-n", 1, "-q", "-j", "jobs", "--scheduler", sched]
    cs.ok(cs.run_cluf(*write, cwd=tmp_path, env=env))
    script = tmp_path / "jobs" / f"example-0-1{ext}"
    first = cs.run_by_hand(script)
    assert first.returncode == 0, first.stderr
    assert "--resume" not in first.stderr, first.stderr
    again = cs.run_by_hand(script)  # as a requeue or a rerun by hand would
    assert again.returncode == 0, again.stderr
    assert "--resume: skipped 4 calls" in again.stderr, again.stderr
    assert not (tmp_path / "jobs" / "example-0-1.journal.prev").exists()
    assert cs.calls(tmp_path / "example.py") == [0, 1, 2, 3], "a completed call ran again"
    cs.ok(cs.run_cluf(*write, cwd=tmp_path, env=env))  # a new submission's script: a new mark
    fresh = cs.run_by_hand(script)
    assert fresh.returncode == 0 and "--resume" not in fresh.stderr, fresh.stderr
    assert (tmp_path / "jobs" / "example-0-1.journal.prev").exists()


HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()
"""


def _holding(lock_path):
    """A process holding the journal's lock (as a stopped run still ending would) until told."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    return holder


def test_a_rerun_waits_for_the_stopped_run_to_let_go_of_the_journal_and_a_new_submission_does_not(tmp_path, env):
    cs.write_target(tmp_path, n=4)
    write = ["example.py", "-n", 1, "-q", "-j", "jobs", "--scheduler", "slurm"]
    cs.ok(cs.run_cluf(*write, cwd=tmp_path, env=env))
    script = tmp_path / "jobs" / "example-0-1.slurm"
    assert cs.run_by_hand(script).returncode == 0
    holder = _holding(tmp_path / "jobs" / "example-0-1.journal.lock")
    try:
        rerun = subprocess.Popen(["env", "-i", "bash", str(script)], cwd="/", stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        said = rerun.stderr.readline()
        assert "locked by another run" in said and "waiting up to 300 s" in said, said
        holder.stdin.write("go\n")
        holder.stdin.close()
        holder.wait(30)
        rest = rerun.stderr.read()
        assert rerun.wait(60) == 0, said + rest
        assert "got the lock on the journal" in rest and "--resume: skipped 4 calls" in rest, rest
    finally:
        holder.kill()
    assert cs.calls(tmp_path / "example.py") == [0, 1, 2, 3], "a completed call ran again"
    cs.ok(cs.run_cluf(*write, cwd=tmp_path, env=env))  # a new submission's script: no waiting
    holder = _holding(tmp_path / "jobs" / "example-0-1.journal.lock")
    try:
        fresh = cs.run_by_hand(script)
    finally:
        holder.kill()
    assert fresh.returncode != 0 and "is using the journal" in fresh.stderr, fresh.stderr
    assert "waiting" not in fresh.stderr, fresh.stderr


def test_job_scripts_ask_every_scheduler_to_rerun_them_rather_than_lose_them(tmp_path, env):
    cs.write_target(tmp_path, n=4)
    wanted = {"slurm": "#SBATCH --requeue", "pbs": "#PBS -r y", "sge": "#$ -r y", "lsf": "#BSUB -r"}
    for sched, line in wanted.items():
        cs.ok(cs.run_cluf("example.py", "-n", 1, "-q", "-j", sched, "--scheduler", sched, cwd=tmp_path, env=env))
        text = (tmp_path / sched / f"example-0-1{SCHEDULERS[sched].extension}").read_text()
        assert line in text.splitlines(), text


def test_slurm_says_requeue_by_a_restart_count_above_the_jobs_and_cancel_otherwise():
    # scontrol show job -o in the job, at the SIGTERM of scancel and of scontrol requeue (Slurm 22.05)
    cancel = "JobId=6 JobName=s.sh JobState=COMPLETING Reason=None Requeue=1 Restarts=0 BatchFlag=1"
    requeue = "JobId=7 JobName=s.sh JobState=COMPLETING Reason=None Requeue=1 Restarts=1 BatchFlag=1"
    assert slurm_stop(cancel, 0).kind == st.CANCELLED
    assert slurm_stop(requeue, 0).kind == st.REQUEUED
    assert slurm_stop(requeue, 1).kind == st.CANCELLED  # the rerun itself, cancelled: Restarts as it started
    assert slurm_stop("JobId=8 JobState=PREEMPTED Reason=None Restarts=0", 0).kind == st.PREEMPTED
    assert slurm_stop("JobId=8 JobState=TIMEOUT Reason=None Restarts=0", 0).kind == st.WALLTIME


def test_pbs_says_rerun_by_its_rerun_exit_status_and_walltime_by_its_own():
    # qstat -f in the job, at the SIGTERM of qrerun and of qdel (OpenPBS 23.06)
    pbs = "    job_state = E\n    substate = {sub}\n    run_count = 1\n    Exit_status = {status}\n"
    assert pbs_stop(pbs.format(sub=63, status=-11)).kind == st.REQUEUED
    assert pbs_stop(pbs.format(sub=51, status=0)).kind == st.CANCELLED
    assert pbs_stop(pbs.format(sub=51, status=-29)).kind == st.WALLTIME
    assert pbs_stop(pbs.format(sub=60, status=0)).kind == st.REQUEUED  # a rerun before Exit_status says so


def test_a_sigterm_within_the_grace_period_is_the_walltime_and_one_well_before_it_a_cancel():
    env = {"CLUF_JOB_START": "1000"}
    assert st.why_stopped(600, 30, env=env, now=1580).kind == st.WALLTIME  # 20 s left
    v = st.why_stopped(600, 30, env=env, now=1100)
    kind, words = v.kind, v.words  # 500 s left, no scheduler says otherwise
    assert kind == st.CANCELLED and "500 s before the walltime" in words and "does not say" in words


def _run(tmp_path, nodes=3):
    plan = jobs.RunPlan(script=str(tmp_path / "s.py"), nodes=nodes, jobs_dir=str(tmp_path / "jobs"),
                        submit_dir=str(tmp_path), scheduler=SCHEDULERS["slurm"](), clum_args=[], passthrough=[])
    os.makedirs(plan.jobs_dir)
    path = plan.manifest_path()
    manifest_mod.update_manifest(path, plan, lambda m: [manifest_mod.record(m, i, plan.script_path(i), str(10 + i))
                                                for i in range(nodes)])
    return path


def test_a_change_to_one_bin_is_its_record_which_readers_merge_and_a_whole_rewrite_folds(tmp_path):
    path = _run(tmp_path)
    said = manifest_mod.update_bin(path, 1, lambda m: m["jobs"]["1"].update(id="99") or "changed")
    assert said == "changed"
    assert json.loads(Path(path).read_text())["jobs"]["1"]["id"] == "11", "the manifest itself is not rewritten"
    assert manifest_mod.load_manifest(path)["jobs"]["1"]["id"] == "99"
    assert manifest_mod.load_manifest(path, bins=[0])["jobs"]["1"]["id"] == "11"  # only bin 0's record merged
    manifest_mod.update_manifest(path, None, lambda m: m["jobs"]["2"].update(cancelled=True))
    assert json.loads(Path(path).read_text())["jobs"]["1"]["id"] == "99", "folded into the manifest"
    assert os.listdir(manifest_mod.bin_records_dir(path)) == []
    assert manifest_mod.load_manifest(path)["jobs"]["2"]["cancelled"] is True


def test_a_bin_being_changed_does_not_hold_up_another_but_a_whole_rewrite_waits_for_it(tmp_path):
    path = _run(tmp_path)
    probe = ("import sys, fcntl, os\n"
             "fd = os.open(sys.argv[1] + '.lock', os.O_RDWR)\n"
             "kind, start = (fcntl.LOCK_EX if sys.argv[2] == 'ex' else fcntl.LOCK_SH), int(sys.argv[3])\n"
             "try:\n    fcntl.lockf(fd, kind | fcntl.LOCK_NB, 1, start)\nexcept OSError:\n    sys.exit(1)\n")
    with manifest_mod.bin_lock(path, 1):
        def free(kind, start):
            return subprocess.run([sys.executable, "-c", probe, path, kind, str(start)]).returncode == 0
        assert free("ex", 1 + 2), "another bin's lock is free"
        assert free("sh", 0), "other bins' continuations share the manifest's lock"
        assert not free("ex", 1 + 1), "the same bin is locked"
        assert not free("ex", 0), "a whole rewrite waits"


def _stopped_run(tmp_path, monkeypatch):
    """A one-bin run with a walltime whose job stopped at it after one call; sbatch a stand-in."""
    bindir = tmp_path / "bin"
    cs.stand_in(bindir, "sbatch", "{id}\n")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CLUF_JOB_START", "1000")
    plan = jobs.RunPlan(script=str(tmp_path / "s.py"), nodes=1, jobs_dir=str(tmp_path / "jobs"),
                        submit_dir=str(tmp_path), scheduler=SCHEDULERS["slurm"](), passthrough=[],
                        clum_args=["--walltime", "00:10:00"], resources={"walltime": 600})
    os.makedirs(plan.jobs_dir)
    path = plan.manifest_path()
    manifest_mod.update_manifest(path, plan, lambda m: manifest_mod.record(m, 0, plan.script_path(0), "7"))
    lines = [{"cluster_func_journal": 2, "script": plan.script, "bins": "0/1", "mode": "round-robin",
              "created": 1.7e9}, {"t": "start", "time": 1.7e9, "pid": 1, "resume": False},
             {"t": "ok", "pos": [[0, 1, 1]], "c": "000000001c", "d": "0" * 16},
             {"t": "end", "done": 1, "failed": 0, "status": "walltime"}]
    Path(plan.path(0, ".journal")).write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path, plan


def test_a_job_that_handed_its_bin_to_a_new_job_exits_0(tmp_path, monkeypatch, capsys):
    path, _ = _stopped_run(tmp_path, monkeypatch)
    assert c.main([path, "0", "75"]) == 0
    assert "continued as job" in capsys.readouterr().err
    job = manifest_mod.load_manifest(path)["jobs"]["0"]
    assert job["restarts"] == 1 and job["history"][0]["id"] == "7"


def test_wait_says_nothing_of_a_bin_whose_own_job_continued_it_first(tmp_path, monkeypatch):
    # cluf --wait saw bin 0's job (7) gone with its journal at the walltime, while the job's own
    # continuation step had already submitted job 8: --wait does nothing, and says nothing.
    from cluster_func.cluster import status

    path, _ = _stopped_run(tmp_path, monkeypatch)
    assert c.main([path, "0", "75"]) == 0  # the job's own step: continued
    held = manifest_mod.load_manifest(path)["jobs"]["0"]["id"]
    again = c.continue_bin(path, 0, "7")  # what --wait asks, with the job it saw stopped
    assert again.held and again.by_another and str(held) in again.words
    said = []
    monkeypatch.setattr(status, "bin_states", lambda m, cache: [
        type("S", (), {"state": status.STOPPED, "bin": 0, "id": "7", "final": False})()])
    status.poll([path], {}, said.append)
    assert said == []
    assert manifest_mod.load_manifest(path)["jobs"]["0"]["restarts"] == 1  # (not continued twice)


def test_a_job_the_scheduler_cancelled_marks_its_bin_cancelled_and_a_requeued_one_leaves_it(tmp_path, monkeypatch):
    path, plan = _stopped_run(tmp_path, monkeypatch)
    st.record_verdict(plan.path(0, ".journal"), st.StopVerdict(st.REQUEUED, "requeued by Slurm"))
    assert c.main([path, "0", "143"]) == 143
    assert not manifest_mod.load_manifest(path)["jobs"]["0"].get("cancelled")
    st.record_verdict(plan.path(0, ".journal"), st.StopVerdict(st.CANCELLED, "scancel or an administrator"))
    assert c.main([path, "0", "143"]) == 143
    job = manifest_mod.load_manifest(path)["jobs"]["0"]
    assert job["cancelled"] and job["cancelled_by"] == "scancel or an administrator"
    assert not os.path.exists(st.verdict_path(plan.path(0, ".journal"))), "the verdict is used once"
    assert c.continue_bin(path, 0, "7").words == "cancelled: not continuing"  # as cluf --wait would try
