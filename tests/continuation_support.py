"""Helpers for tests/schedulers/test_continuation_real.py: runs with ``cluf --walltime`` that
continue themselves, on the real Slurm, Grid Engine and OpenPBS.

* :data:`TIMING`: the walltime and grace per scheduler.  Slurm keeps time limits in whole
  minutes, so its jobs get one minute; Grid Engine (``h_rt``) and PBS (``walltime``) take
  seconds.  The grace is large, so that a job stops starting calls early (the jobs of a run
  are short) and clum stops the calls still running a quarter of the grace (5 s) before
  the walltime: the scheduler counts its walltime from the job's start, a little before the
  job script's first line sets ``CLUF_JOB_START``.
* :func:`write_target`: a target script whose calls append ``start`` and ``end`` records
  (element, pid, the job's ``CLUF_JOB_START``) to an evidence file next to the script.  A
  call that never ended was stopped (or killed); a call that ended ran to its end.
  ``long_after``: in the first job of its bin, the first call to start after this many
  seconds of the job runs for ten minutes, so that clum stops it at the walltime.
* :func:`unfinished_jobs_named`: the scheduler's queued or running jobs of some names (to see
  that no job of a run appears behind the manifest's back).
* :func:`stop_run`: ``cluf --cancel`` and then the scheduler's own cancel, for fixtures: the
  manifest says "cancelled" first, so that a job ending at its walltime at that moment does not
  continue itself (a job killed by the scheduler's own command takes it for a cancel, but one
  at its grace point takes it for the walltime).
"""

import collections
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List

import cluf_support as cs
import scheduler_support as ss
from cluster_func.cluster import manifest as manifest_mod  # (the manifest with its per-bin records)


@dataclass(frozen=True)
class Timing:
    walltime: int  # seconds
    grace: int

    @property
    def options(self) -> List[str]:
        return ["--walltime", f"{self.walltime // 3600:02d}:{self.walltime % 3600 // 60:02d}:"
                f"{self.walltime % 60:02d}", "--grace", str(self.grace)]

    @property
    def stop_new(self) -> float:
        """Seconds into a job after which clum starts no new call."""
        return self.walltime - self.grace

    @property
    def stop_running(self) -> float:
        """Seconds into a job at which clum stops the calls still running."""
        return self.walltime - min(5.0, self.grace / 4)


TIMING = {
    "slurm": Timing(60, 40),  # no new call after 20 s, running calls stopped at 55 s
    "sge": Timing(30, 20),    # no new call after 10 s, running calls stopped at 25 s
    "pbs": Timing(30, 20),
}

TARGET = '''\
import json, os, sys, time

_EVIDENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         os.path.splitext(os.path.basename(__file__))[0] + ".evidence")
CALL = {call!r}  # seconds a call takes
LONG_AFTER = {long_after!r}
NODES = {nodes!r}
FAIL = {fail!r}


def _records():
    try:
        with open(_EVIDENCE) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def _rec(x, event):
    line = {{"x": x, "ev": event, "t": time.time(), "pid": os.getpid(),
             "job": os.environ.get("CLUF_JOB_START")}}
    fd = os.open(_EVIDENCE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\\n").encode())
    finally:
        os.close(fd)


def _first_job_of_bin(x):
    job = os.environ.get("CLUF_JOB_START")
    return all(r["job"] == job for r in _records() if r["x"] % NODES == x % NODES)


def target(x):
    _rec(x, "start")
    seconds = CALL
    if LONG_AFTER is not None and time.time() - float(os.environ["CLUF_JOB_START"]) > LONG_AFTER \\
            and _first_job_of_bin(x):
        seconds = 600  # stopped by clum at the walltime
    time.sleep(seconds)
    if x in FAIL:
        raise ValueError("call %r fails on purpose" % (x,))
    _rec(x, "end")


args = range({n})
'''


def write_target(folder, name, n, nodes=1, call=1.5, long_after=None, fail=()):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(TARGET.format(call=call, long_after=long_after, nodes=nodes, fail=tuple(fail), n=n))
    return path


def evidence(script) -> List[dict]:
    return cs.evidence(script)


@dataclass
class Calls:
    """What the evidence says about the calls of a run."""
    starts: Dict[int, int]
    ends: Dict[int, int]
    stopped: Dict[int, List[str]]  # element: the jobs (CLUF_JOB_START) in which it started, never ended
    jobs: Dict[int, List[str]]     # bin: its jobs, in order

    @classmethod
    def read(cls, script, nodes):
        recs = evidence(script)
        starts = collections.Counter(r["x"] for r in recs if r["ev"] == "start")
        ends = collections.Counter(r["x"] for r in recs if r["ev"] == "end")
        ended_in = {(r["x"], r["job"]) for r in recs if r["ev"] == "end"}
        stopped = collections.defaultdict(list)
        jobs = collections.defaultdict(list)
        for r in sorted(recs, key=lambda r: r["t"]):
            if r["ev"] == "start" and (r["x"], r["job"]) not in ended_in:
                stopped[r["x"]].append(r["job"])
            if r["job"] not in jobs[r["x"] % nodes]:
                jobs[r["x"] % nodes].append(r["job"])
        return cls(dict(starts), dict(ends), dict(stopped), dict(jobs))


# --- the scheduler's own view -----------------------------------------------------------

def unfinished_jobs_named(sched_name: str, names: Iterable[str]) -> Dict[str, str]:
    """{job id: name} of the jobs the scheduler holds (queued, running, ending) with one of
    these names, whoever submitted them."""
    names = sorted(set(names))
    found = {}
    if sched_name == "slurm":
        res = subprocess.run(["squeue", "-h", "-n", ",".join(names), "-o", "%i %j"], capture_output=True,
                             text=True, timeout=30, check=True)
        for line in res.stdout.splitlines():
            if line.strip():
                job_id, name = line.split(None, 1)
                found[job_id] = name
    elif sched_name == "sge":
        for name in names:  # qstat -j NAME: every job of that name (exit 1 when there is none)
            res = subprocess.run(["qstat", "-j", name], capture_output=True, text=True, timeout=30,
                                 env=ss.sge_env())
            found.update({j: name for j in re.findall(r"^job_number:\s+(\d+)", res.stdout, re.M)})
    elif sched_name == "pbs":
        for name in names:  # qselect lists the jobs not finished (without -x)
            res = subprocess.run([ss.pbs_bin("qselect"), "-N", name], capture_output=True, text=True, timeout=30,
                                 check=True)
            found.update({j: name for j in res.stdout.split()})
    else:
        raise ValueError(sched_name)
    return found


def manifest_ids(folder) -> List[str]:
    """Every job id the manifests under ``folder`` name (current and earlier, arrays by their id)."""
    ids = set()
    for manifest in Path(folder).rglob("*.manifest.json"):
        for job in manifest_mod.load_manifest(str(manifest))["jobs"].values():
            ids.update(h["id"] for h in job.get("history", []))
            ids.add(job.get("array_id") or job["id"])
    return sorted(i for i in ids if i)


def job_names(folder) -> List[str]:
    """The job names of the runs under ``folder`` (``<stem>-<i>-<n>``)."""
    names = set()
    for manifest in Path(folder).rglob("*.manifest.json"):
        m = manifest_mod.load_manifest(str(manifest))
        stem = os.path.splitext(os.path.basename(m["script"]))[0]
        names.update(f"{stem}-{i}-{m['nodes']}" for i in range(m["nodes"]))
    return sorted(names)


def stop_run(adapter, folder, env, settle=60):
    """Leave no job of the runs under ``folder`` behind: ``cluf --cancel`` on each jobs dir
    (marks the bins cancelled, so no job continues itself), then the scheduler's cancel of
    every id the manifests name and of any job with the runs' names, until none is left."""
    for manifest in Path(folder).rglob("*.manifest.json"):
        try:
            cs.run_cluf("--cancel", manifest.parent, cwd=folder, env=env, timeout=60)
        except subprocess.TimeoutExpired:
            pass
    names = job_names(folder)
    deadline = time.monotonic() + settle
    while names:
        live = unfinished_jobs_named(adapter.name, names)
        if not live or time.monotonic() > deadline:
            return
        adapter.cancel(set(live) | set(manifest_ids(folder)), check=False)
        time.sleep(1)


def run_status(jobs_dir, cwd, env, *extra):
    return cs.run_cluf("--status", jobs_dir, *extra, cwd=cwd, env=env)


ROW = re.compile(r"^(\d+)\s+(\S+)\s+(.+?)\s+(\S+)\s+(\S+)\s+(\S+)(?:\s{2}\((.*)\))?$")


def table(stdout) -> Dict[int, dict]:
    """Rows of the --status table, with the note after a row (e.g. "continued 2 times"):
    {bin: {"job", "state", "done", "failed", "total", "note"}}."""
    rows = {}
    for line in stdout.splitlines():
        m = ROW.match(line)
        if m:
            rows[int(m.group(1))] = dict(zip(("job", "state", "done", "failed", "total", "note"), m.groups()[1:]))
    return rows
