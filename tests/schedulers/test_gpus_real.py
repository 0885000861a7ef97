"""cluf --gpus on the real schedulers of tests/schedulers/up.sh.

Slurm (slurm_up.sh gives its node two fake GPUs: gres.conf on /dev/nvidia0-1) gives each
job its GPUs in CUDA_VISIBLE_DEVICES and SLURM_JOB_GPUS, and each worker of the job's clum
sees only its own of them.  Each call records its job, its worker's pid, the
CUDA_VISIBLE_DEVICES it saw and the job's SLURM_JOB_GPUS (which clum leaves alone: what
Slurm gave the job).

OpenPBS (pbs_up.sh: ngpus=2 on the node) schedules the job's select statement with ngpus,
and keeps it as the job's Resource_List; it sets no CUDA_VISIBLE_DEVICES without its
cgroups hook, so the job's prepend script sets what that hook would.
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

TARGET = '''\
import json, os, time

def target(x):
    line = {"x": x, "job": os.environ.get("SLURM_JOB_ID"), "pid": os.getpid(),
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "job_gpus": os.environ.get("SLURM_JOB_GPUS")}
    fd = os.open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpus.evidence"),
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, (json.dumps(line) + "\\n").encode())
    os.close(fd)
    time.sleep(0.2)

args = range(8)
'''


@pytest.fixture
def slurm_with_gpus():
    ss.require_slurm()
    out = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True, timeout=30).stdout
    if "gpu:2" not in out:
        pytest.fail(f"the test Slurm has no GPUs (sinfo -o %G says {out.strip()!r}): run "
                    f"tests/schedulers/slurm_up.sh, which gives its node two fake ones")


def submit_and_wait(tmp_path, *args, env=None, wait=None):
    (tmp_path / "example.py").write_text(TARGET)
    if env is None:
        env = cs.base_env(tmp_path)
        env.pop("SLURM_CONF", None)
    cs.ok(cs.run_cluf("example.py", "-j", "jobs", *map(str, args), cwd=tmp_path, env=env))
    nodes = int(args[args.index("-n") + 1])
    manifest = json.loads((tmp_path / "jobs" / f"example-{nodes}.manifest.json").read_text())
    ids = [j["id"] for j in manifest["jobs"].values()]
    try:
        outcomes = (wait or ss.wait_slurm_jobs)(ids, timeout=150)
    finally:  # a failed wait leaves no job behind
        cancel = [ss.pbs_bin("qdel")] if wait is ss.wait_pbs_jobs else ["scancel"]
        subprocess.run([*cancel, *ids], capture_output=True, timeout=30, env=env)
    assert all(o.state == "COMPLETED" and o.exit_code == 0 for o in outcomes.values()), (
        outcomes, [p.read_text() for p in (tmp_path / "jobs").glob("*.stderr")])
    lines = [json.loads(line) for line in (tmp_path / "gpus.evidence").read_text().splitlines()]
    assert sorted(c["x"] for c in lines) == list(range(8))
    return ids, lines


def test_two_jobs_of_one_gpu_each_see_only_the_gpu_slurm_gave_them(tmp_path, slurm_with_gpus):
    ids, calls = submit_and_wait(tmp_path, "--scheduler", "slurm", "--gpus", 1, "-n", 2)
    jobs = {c["job"] for c in calls}
    assert jobs == set(ids), (jobs, ids)
    for job in jobs:
        mine = [c for c in calls if c["job"] == job]
        given = {c["job_gpus"] for c in mine}
        assert len(given) == 1 and given.pop() in ("0", "1"), mine  # Slurm gave the job one GPU
        assert {c["cuda"] for c in mine} == {mine[0]["job_gpus"]}, mine  # and its calls see only it
        assert len({c["pid"] for c in mine}) == 1, mine  # one worker per GPU: -p 1


def test_one_job_of_two_gpus_gives_each_of_its_two_workers_one_of_them(tmp_path, slurm_with_gpus):
    ids, calls = submit_and_wait(tmp_path, "--scheduler", "slurm", "--gpus", 2, "-n", 1)
    assert {c["job"] for c in calls} == set(ids)
    assert {c["job_gpus"] for c in calls} == {"0,1"}  # Slurm gave the job both GPUs
    by_worker = {}
    for c in calls:
        by_worker.setdefault(c["pid"], set()).add(c["cuda"])
    assert sorted(v for s in by_worker.values() for v in s) == ["0", "1"] and len(by_worker) == 2, by_worker


def test_openpbs_schedules_a_job_asking_for_ngpus_in_its_select_statement(tmp_path):
    ss.require_pbs()
    env = ss.pbs_env(cs.base_env(tmp_path))
    (tmp_path / "hook.sh").write_text("export CUDA_VISIBLE_DEVICES=0,1  # as PBS's cgroups hook would\n")
    ids, calls = submit_and_wait(tmp_path, "--scheduler", "pbs", "--gpus", 2, "-n", 1, "-P", "hook.sh",
                                 env=dict(env, CLUF_PBS_FLAVOUR="pro"), wait=ss.wait_pbs_jobs)
    [job] = ids
    resources = ss.pbs_job_records(job)[job]["Resource_List"]
    assert (resources.get("ngpus"), resources.get("ncpus")) == (2, 2), resources
    assert "ngpus=2" in resources.get("select", ""), resources
    by_worker = {}
    for c in calls:
        by_worker.setdefault(c["pid"], set()).add(c["cuda"])
    assert sorted(v for s in by_worker.values() for v in s) == ["0", "1"] and len(by_worker) == 2, by_worker
