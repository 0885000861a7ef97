"""One small adapter per real scheduler (Slurm, Grid Engine, PBS) for the ``cluf`` scenarios
of tests/schedulers/test_cluf_real.py, which are written once and run on all three.

An adapter says what differs between the schedulers and nothing else: the environment
cluf runs in, how to wait for jobs and read their exit status, how to cancel them behind
cluf's back, what the scheduler reports about a job (name, output paths, array tasks,
queue state), the id formats, and how to lower the array size limit for a while.  The
scheduler commands come from tests/scheduler_support.py (see its docstring for what each
scheduler does and says).

``ADAPTERS`` maps cluf's ``--scheduler`` name to an adapter instance.
"""

import contextlib
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import cluf_support as cs
import scheduler_support as ss

QUEUED, RUNNING = "queued", "running"


class RealScheduler:
    """What a scenario needs to know about one real scheduler."""

    name = ""                 # cluf's --scheduler NAME
    job_id_re = r""           # a single job's id as the submit command prints it
    array_id_re = r""         # an array's id
    # cluf options giving the jobs a time limit that the scheduler enforces soon, in the
    # scheduler's own words (--NAME-options), so that clum does not know it (with --walltime
    # clum would stop itself before it)
    time_limit: List[str] = []
    time_limit_state = ""     # JobOutcome.state of a job killed at its time limit
    ending_states = frozenset()  # raw states of a job that has ended but is not finished yet
    # cluf options that make the bins of an --array run one at a time (so some queue)
    one_at_a_time: List[str] = []
    reports_throttle = False     # is an array's --max-running K shown by the scheduler?
    reports_output_paths = True  # does report() give a finished job's stdout/stderr paths?
    max_running_ignored = False  # does cluf warn that --max-running has no effect here?

    def require(self) -> None:
        raise NotImplementedError

    def env(self, tmp_path, **extra) -> Dict[str, str]:
        """The environment to run cluf in: no ~/.clufrc, extra variables set."""
        return cs.base_env(tmp_path, **extra)

    def auto_env(self, env: Dict[str, str], tmp_path) -> Dict[str, str]:
        """``env`` changed so that ``--scheduler auto`` finds this scheduler."""
        return env

    def wait(self, ids: Iterable[str], timeout: float = 120) -> Dict[str, ss.JobOutcome]:
        raise NotImplementedError

    def cancel(self, ids: Iterable[str], check: bool = True) -> None:
        """Cancel jobs with the scheduler's own command (not through cluf)."""
        ids = sorted(i for i in ids if i)
        if ids:
            subprocess.run([*self._cancel_cmd(), *ids], capture_output=True, timeout=30, check=check,
                           env=self.env_for_commands())

    def _cancel_cmd(self) -> List[str]:
        raise NotImplementedError

    def env_for_commands(self) -> Optional[Dict[str, str]]:
        return None

    def report(self, job_id: str) -> Dict[str, Optional[str]]:
        """What the scheduler says about a job, looked up by exactly this id:
        {"name", "stdout", "stderr"} (None where it does not keep it)."""
        raise NotImplementedError

    def array_tasks(self, array_id: str) -> List[str]:
        """The ids of the array's tasks as the scheduler reports them."""
        raise NotImplementedError

    def array_throttle(self, array_id: str) -> Optional[str]:
        """The limit on the array's running tasks as the scheduler reports it, once the array
        has finished; None where it does not keep it."""
        return None

    def task_id(self, array_id: str, index: int) -> str:
        """The id of the task running bin ``index`` of an array starting at bin 0."""
        raise NotImplementedError

    def states(self, ids: Iterable[str]) -> Dict[str, str]:
        """{job or task id: the scheduler's raw state} of the jobs it lists as not yet
        finished (tasks of an array given by its array id)."""
        raise NotImplementedError

    def kinds(self, ids: Iterable[str]) -> List[str]:
        """QUEUED / RUNNING for each job or task of ``ids`` that is not finished."""
        return [self._kind(s) for s in self.states(ids).values()]

    def _kind(self, state: str) -> str:
        raise NotImplementedError

    def array_limit(self, size: int, env: Dict[str, str], tmp_path):
        """A context manager: within it the scheduler allows at most ``size`` tasks per
        array, as cluf sees it; it yields the environment to run cluf in. Restored after."""
        raise NotImplementedError


class Slurm(RealScheduler):
    name = "slurm"
    job_id_re = array_id_re = r"\d+"
    # Slurm keeps time limits in minutes (15 s is rounded up to 1 min) and looks at them
    # every 30 s: the kill (SIGTERM, SIGKILL KillWait later) comes 60-90 s after the start.
    time_limit = ["--slurm-options", "time=1"]
    time_limit_state = "TIMEOUT"
    one_at_a_time = ["--max-running", "1"]
    reports_throttle = True  # ArrayTaskThrottle

    def require(self):
        ss.require_slurm()

    def env(self, tmp_path, **extra):
        env = super().env(tmp_path, **extra)
        env.pop("SLURM_CONF", None)
        return env

    def wait(self, ids, timeout=120):
        return ss.wait_slurm_jobs(ids, timeout=timeout)

    def _cancel_cmd(self):
        return ["scancel"]

    def _path_field(self, line, key):
        # A path may hold spaces: it runs up to the next ' Key='.
        m = re.search(rf"\b{key}=(.*?)(?= [A-Za-z:]+=|$)", line)
        return m and m.group(1)

    def report(self, job_id):
        out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                             timeout=30, check=True).stdout.strip()
        assert "\n" not in out, out
        return {"name": ss._slurm_fields(out)["JobName"], "stdout": self._path_field(out, "StdOut"),
                "stderr": self._path_field(out, "StdErr")}

    def array_throttle(self, array_id):
        return {r.get("ArrayTaskThrottle") for r in ss.slurm_job_records(array_id)}.pop()

    def array_tasks(self, array_id):
        return [f"{r['ArrayJobId']}_{r['ArrayTaskId']}" for r in ss.slurm_job_records(array_id)]

    def task_id(self, array_id, index):
        return f"{array_id}_{index}"

    def states(self, ids):
        res = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(ids), "-o", "%i %T"],
                             capture_output=True, text=True, timeout=30)
        return dict(line.split() for line in res.stdout.splitlines() if line.strip())

    def _kind(self, state):
        return QUEUED if state == "PENDING" else RUNNING

    @contextlib.contextmanager
    def array_limit(self, size, env, tmp_path):
        # Slurm 22.05 applies a new MaxArraySize only when slurmctld restarts (`scontrol
        # reconfigure` shows it but does not enforce it), too much for a test: cluf is shown
        # the limit by an `scontrol` in front of the real one that changes `show config`.
        bindir = Path(tmp_path) / "slurm-limit-bin"
        bindir.mkdir()
        real = subprocess.run(["sh", "-c", "command -v scontrol"], capture_output=True, text=True,
                              env=env, check=True).stdout.strip()
        wrapper = bindir / "scontrol"
        wrapper.write_text(
            "#!/bin/sh\n"
            'if [ "$1 $2" = "show config" ]; then\n'
            f'  {real} "$@" | sed "s/^MaxArraySize .*/MaxArraySize            = {size}/"\n'
            f'else\n  exec {real} "$@"\nfi\n')
        wrapper.chmod(0o755)
        yield dict(env, PATH=f"{bindir}{os.pathsep}{env['PATH']}")


class GridEngine(RealScheduler):
    name = "sge"
    job_id_re = array_id_re = r"\d+"
    time_limit = ["--sge-options", "h_rt=8"]  # SIGKILL within about a second of it
    time_limit_state = "FAILED"  # qacct: failed 37 (h_rt), exit_status 137
    one_at_a_time = ["--max-running", "1"]  # -tc 1 (the queue has no parallel environment)
    reports_output_paths = False  # qacct has no stdout/stderr paths

    def require(self):
        ss.require_sge()

    def env(self, tmp_path, **extra):
        return ss.sge_env(super().env(tmp_path, **extra))

    def env_for_commands(self):
        return ss.sge_env()

    def auto_env(self, env, tmp_path):
        # /usr/bin holds Slurm's sbatch next to Grid Engine's qsub: give PATH a copy of it
        # (symlinks) without sbatch instead.
        bindir = Path(tmp_path) / "usr-bin-without-sbatch"
        bindir.mkdir()
        for name in os.listdir("/usr/bin"):
            if name != "sbatch":
                os.symlink(os.path.join("/usr/bin", name), bindir / name)
        rest = [d for d in env["PATH"].split(os.pathsep)
                if d and not os.access(os.path.join(d, "sbatch"), os.X_OK)]
        return dict(env, PATH=os.pathsep.join([str(bindir), *rest]))

    def wait(self, ids, timeout=120):
        return ss.wait_sge_jobs(ids, timeout=timeout)

    def _cancel_cmd(self):
        return ["qdel"]

    def report(self, job_id):
        [rec] = ss.sge_qacct(job_id)  # a single job (not a task) has one record
        return {"name": rec["jobname"], "stdout": None, "stderr": None}

    def array_tasks(self, array_id):
        return [f"{array_id}.{r['taskid']}" for r in ss.sge_qacct(array_id)]

    def task_id(self, array_id, index):
        return f"{array_id}.{index + 1}"

    def states(self, ids):
        res = subprocess.run(["qstat", "-g", "d", "-u", "*"], capture_output=True, text=True, timeout=30,
                             env=ss.sge_env())
        assert res.returncode == 0, res.stderr
        wanted, out = set(ids), {}
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) > 4 and parts[0] in wanted:
                task = parts[-1] if parts[-1].isdigit() and len(parts) >= 9 - ("@" not in line) else None
                out[f"{parts[0]}.{task}" if task else parts[0]] = parts[4]
        return out

    def _kind(self, state):
        return RUNNING if any(c in state for c in "rt") else QUEUED

    @contextlib.contextmanager
    def array_limit(self, size, env, tmp_path):
        def set_conf(text):
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / "global"  # qconf -Mconf names the configuration after the file
                path.write_text(text)
                subprocess.run(["qconf", "-Mconf", str(path)], capture_output=True, timeout=30, check=True,
                               env=ss.sge_env())

        before = subprocess.run(["qconf", "-sconf", "global"], capture_output=True, text=True, timeout=30,
                                check=True, env=ss.sge_env()).stdout
        assert re.search(r"^max_aj_tasks\s", before, re.M), before
        set_conf(re.sub(r"^max_aj_tasks\s.*$", f"max_aj_tasks                 {size}", before, flags=re.M))
        try:
            yield env
        finally:
            set_conf(before)


class PBS(RealScheduler):
    name = "pbs"
    job_id_re = r"\d+\.[\w.-]+"           # 12.vm-pbs
    array_id_re = r"\d+\[\]\.[\w.-]+"     # 13[].vm-pbs
    # Walltime is in seconds, but pbs_mom looks at it only every 10 s or so: killed 10-20 s
    # after the start (SIGTERM, then SIGKILL at once when the job's shell has gone).
    time_limit = ["--pbs-options", "walltime=8"]
    time_limit_state = "TIMEOUT"  # Exit_status -29
    ending_states = frozenset({"E"})  # exiting: output being copied back, qdel refused
    # No limit on an array's running subjobs in PBS Professional: ask for more than half
    # the node (8 ncpus) per subjob instead (not all of it: other jobs may hold a few).
    one_at_a_time = ["--cpus", "5"]
    max_running_ignored = True

    def require(self):
        ss.require_pbs()

    def env(self, tmp_path, **extra):
        return ss.pbs_env(super().env(tmp_path, **extra))

    def env_for_commands(self):
        return ss.pbs_env()

    def auto_env(self, env, tmp_path):
        return ss.pbs_env(env, only_pbs=True)

    def wait(self, ids, timeout=120):
        return ss.wait_pbs_jobs(ids, timeout=timeout)

    def _cancel_cmd(self):
        return [ss.pbs_bin("qdel")]

    def report(self, job_id):
        rec = ss.pbs_job_records(job_id)[job_id]  # the full id, server name and all

        def path(key):  # "host:/the/path"
            return rec[key].split(":", 1)[1] if key in rec else None

        return {"name": rec["Job_Name"], "stdout": path("Output_Path"), "stderr": path("Error_Path")}

    def array_tasks(self, array_id):
        return [k for k in ss.pbs_job_records(array_id) if k != array_id]

    def task_id(self, array_id, index):
        return array_id.replace("[]", f"[{index}]", 1)

    def states(self, ids):
        res = subprocess.run([ss.pbs_bin("qstat"), "-x", "-t", "-f", "-F", "json", *ids], capture_output=True,
                             text=True, timeout=30)
        jobs = json.loads(res.stdout, strict=False).get("Jobs", {}) if res.stdout.strip() else {}
        # An array's parent (12[]: B once a subjob has begun) is not a job of its own: -t
        # lists its subjobs. F: finished, X: a finished subjob.
        return {k: v["job_state"] for k, v in jobs.items() if "[]" not in k and v["job_state"] not in "FX"}

    def _kind(self, state):
        return RUNNING if state in ("R", "E") else QUEUED

    @contextlib.contextmanager
    def array_limit(self, size, env, tmp_path):
        qmgr = ss.pbs_bin("qmgr")
        before = re.search(r"^\s*max_array_size = (\d+)", subprocess.run(
            [ss.pbs_bin("qstat"), "-Bf"], capture_output=True, text=True, timeout=30, check=True).stdout, re.M)
        assert before, "qstat -Bf shows no max_array_size"
        subprocess.run([qmgr, "-c", f"set server max_array_size = {size}"], capture_output=True, timeout=30,
                       check=True)
        try:
            yield env
        finally:
            subprocess.run([qmgr, "-c", f"set server max_array_size = {before.group(1)}"], capture_output=True,
                           timeout=30, check=True)


ADAPTERS = {a.name: a for a in (Slurm(), GridEngine(), PBS())}
