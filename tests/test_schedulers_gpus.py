"""cluf --gpus N: the directive of every scheduler (golden job scripts), the clum command the
jobs run (one worker per GPU of the job), the option from cluf_options and ~/.clufrc, and
what cluf refuses before writing anything."""

import json
import os
import subprocess
from pathlib import Path

import pytest

import cluf_support as cs
from cluster_func import schedulers
from cluster_func.schedulers.base import JobSpec

HERE = Path(__file__).resolve().parent
GOLDEN = {  # (scheduler, PBS flavour): the folder of its expected job scripts
    ("slurm", None): HERE / "data/schedulers/slurm/expected",
    ("sge", None): HERE / "data/schedulers/sge/expected",
    ("lsf", None): HERE / "data/schedulers/lsf/expected",
    ("pbs", "pbspro"): HERE / "pbs/expected",
    ("pbs", "torque"): HERE / "pbs/expected",
}
EXT = {"slurm": ".slurm", "sge": ".sge", "lsf": ".lsf", "pbs": ".pbs"}
DIRECTIVE = {  # what --gpus 4 --gpus-per-worker 2 asks each scheduler for
    ("slurm", None): "#SBATCH --gres=gpu:4",
    ("sge", None): "#$ -l gpu=4",
    ("lsf", None): '#BSUB -gpu "num=4"',
    ("pbs", "pbspro"): "#PBS -l select=1:ncpus=2:ngpus=4",
    ("pbs", "torque"): "#PBS -l nodes=1:ppn=2:gpus=4",
}

TARGET = '''\
import os

def target(x):
    fd = os.open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpus.evidence"),
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, ("%d %d %s\\n" % (x, os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES", "-"))).encode())
    os.close(fd)

args = range(8)
'''


def assert_golden(folder, name, text):
    path = folder / name
    if os.environ.get("CLUF_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no expected file {path}: run with CLUF_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{name} differs from {path}:\n{text}"


@pytest.fixture
def env(tmp_path):
    return cs.base_env(tmp_path, tmp_path / "bin")


def write_jobs(tmp_path, env, sched, flavour, *args):
    (tmp_path / "example.py").write_text(TARGET)
    if flavour:
        env = dict(env, CLUF_PBS_FLAVOUR=flavour)
    r = cs.ok(cs.run_cluf("example.py", "-n", 2, "-q", "-j", "jobs", "--scheduler", sched, *args,
                          cwd=tmp_path, env=env))
    return r, tmp_path / "jobs" / f"example-0-2{EXT[sched]}"


@pytest.mark.parametrize("sched, flavour", list(GOLDEN))
def test_each_scheduler_asks_for_the_gpus_in_its_own_words(tmp_path, env, sched, flavour):
    _, path = write_jobs(tmp_path, env, sched, flavour, "--gpus", 4, "--gpus-per-worker", 2)
    text = path.read_text()
    assert DIRECTIVE[sched, flavour] in text.splitlines()
    # the job's clum shares the job's GPUs out, two per worker (so -p 2, and 2 cores asked for)
    assert " --gpus 4 --gpus-per-worker 2 " in text
    name = f"gpus-{flavour + '-' if flavour else ''}example-0-2{EXT[sched]}"
    assert_golden(GOLDEN[sched, flavour], name, cs.normalise(text, tmp_path))


def test_the_grid_engine_consumable_is_renamed_in_sge_options(tmp_path, env):
    _, path = write_jobs(tmp_path, env, "sge", None, "--gpus", 2, "--sge-options", "gpu_resource=gpus,h_vmem=4G")
    lines = path.read_text().splitlines()
    assert "#$ -l gpus=2" in lines and "#$ -l h_vmem=4G" in lines
    assert not any("gpu_resource" in line or line == "#$ -l gpu=2" for line in lines), lines


def test_cores_per_job_follow_the_workers_unless_given():
    sge = schedulers.SCHEDULERS["sge"]()
    assert "-l gpu=1" in sge.directives(JobSpec(name="x", stdout="/o", stderr="/e", gpus=1))
    pbs = schedulers.SCHEDULERS["pbs"]()
    pbs._torque = False
    job = JobSpec(name="x", stdout="/o", stderr="/e", gpus=2, cpus=8, raw={"ppn": "16"})
    assert [d for d in pbs.directives(job) if "select" in d or "nodes" in d] == ["-l select=1:ncpus=16:ngpus=2"]
    pbs._torque = True
    assert [d for d in pbs.directives(job) if "nodes" in d] == ["-l nodes=1:ppn=16:gpus=2"]


def test_cpus_given_win_over_the_workers(tmp_path, env):
    _, path = write_jobs(tmp_path, env, "slurm", None, "--gpus", 2, "--cpus", 12)
    assert "#SBATCH --cpus-per-task=12" in path.read_text().splitlines()


def test_no_gpus_asked_means_no_gpu_directive(tmp_path, env):
    for sched, flavour in GOLDEN:
        _, path = write_jobs(tmp_path, env, sched, flavour)
        text = cs.normalise(path.read_text(), tmp_path)
        assert "gpu" not in text.lower(), text


def test_a_job_script_gives_each_worker_one_of_the_gpus_the_scheduler_gave_the_job(tmp_path, env):
    """The job script, run by hand as the scheduler would (an empty environment, but the
    scheduler's CUDA_VISIBLE_DEVICES): one worker per GPU, each with its own."""
    _, path = write_jobs(tmp_path, env, "slurm", None, "--gpus", 2)
    r = subprocess.run(["bash", str(path)], env={"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "1,3"},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    seen = {}
    for line in (tmp_path / "gpus.evidence").read_text().splitlines():
        x, pid, gpus = line.split()
        seen.setdefault(pid, set()).add(gpus)
    assert sorted(v for s in seen.values() for v in s) == ["1", "3"] and len(seen) == 2, seen


def test_gpus_come_from_cluf_options_and_the_clufrc(tmp_path, env):
    rc = tmp_path / "clufrc.json"
    rc.write_text(json.dumps({"gpus": 3}))
    _, path = write_jobs(tmp_path, dict(env, CLUFRC=str(rc)), "slurm", None)
    assert "#SBATCH --gres=gpu:3" in path.read_text().splitlines()
    (tmp_path / "example.py").write_text(TARGET + 'cluf_options = {"gpus": 1}\n')
    r = cs.ok(cs.run_cluf("example.py", "-n", 2, "-q", "-j", "jobs", "--scheduler", "slurm", cwd=tmp_path,
                          env=dict(env, CLUFRC=str(rc))))
    assert r.returncode == 0
    assert "#SBATCH --gres=gpu:1" in path.read_text().splitlines()  # the script wins over ~/.clufrc


@pytest.mark.parametrize("args, words", [
    (["--gpus", "all"], ["cluf --gpus takes the number of GPUs each job asks the scheduler for"]),
    (["--gpus", "0,1"], ["cluf --gpus takes the number"]),
    (["--gpus-per-worker", 2], ["--gpus-per-worker 2 needs --gpus N"]),
    (["--gpus", 2, "--gpus-per-worker", 3], ["--gpus-per-worker 3 is more than the 2 GPUs per job"]),
    (["--gpus", 2, "-p", 3], ["-p 3 workers per job", "Give -p 2 or less"]),
])
def test_a_gpu_request_that_cannot_work_is_refused_before_writing_anything(tmp_path, env, args, words):
    (tmp_path / "example.py").write_text(TARGET)
    r = cs.run_cluf("example.py", "-n", 2, "-q", "-j", "jobs", "--scheduler", "slurm", *args, cwd=tmp_path, env=env)
    cs.assert_clean_error(r, *words)
    assert not (tmp_path / "jobs").exists()
