"""Job scripts for bin i of n, their submission, and the run's manifest.

A job script is a plain bash script: it runs the same by hand
(``bash jobs/example-0-3.slurm``) from any directory with an empty environment.
"""

import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from . import __version__
from .schedulers.base import JobSpec, Scheduler

MANIFEST_SUFFIX = ".manifest.json"


@dataclass
class RunPlan:
    """Everything needed to write the job scripts of one cluf run."""
    script: str  # absolute path of the user's script
    nodes: int
    jobs_dir: str
    submit_dir: str
    scheduler: Scheduler
    clum_args: List[str]  # options for clum other than --bins/--journal, already strings
    passthrough: List[str]
    env: Dict[str, str] = field(default_factory=dict)
    prepend: List[str] = field(default_factory=list)  # file paths
    append: List[str] = field(default_factory=list)
    resources: dict = field(default_factory=dict)  # JobSpec fields: walltime, memory, ...
    raw: Dict[str, Optional[str]] = field(default_factory=dict)
    python: str = sys.executable

    @property
    def stem(self):
        return os.path.splitext(os.path.basename(self.script))[0]

    def base(self, i):
        return f"{self.stem}-{i}-{self.nodes}"

    def path(self, i, suffix):
        return os.path.join(self.jobs_dir, self.base(i) + suffix)

    def script_path(self, i):
        return self.path(i, self.scheduler.extension)

    def manifest_path(self):
        return os.path.join(self.jobs_dir, f"{self.stem}-{self.nodes}{MANIFEST_SUFFIX}")


def _read(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return text if text.endswith("\n") else text + "\n"


def render(plan: RunPlan, i: int, resume=False) -> str:
    """The text of the job script for bin i of plan.nodes."""
    sched = plan.scheduler
    spec = JobSpec(name=sched.job_name(plan.base(i)), stdout=plan.path(i, ".stdout"),
                   stderr=plan.path(i, ".stderr"), raw=plan.raw, **plan.resources)
    q = shlex.quote
    clum = [plan.python, "-m", "cluster_func", "--bins", f"{i}/{plan.nodes}",
            "--journal", plan.path(i, ".journal"), *plan.clum_args]
    if resume:
        clum.append("--resume")
    clum += [plan.script]
    if plan.passthrough:
        clum += ["--", *plan.passthrough]
    out = ["#!/bin/bash", *sched.lines(spec), "",
           f"# Written by cluf (cluster-func {__version__}): bin {i} of {plan.nodes} of {plan.script}.",
           f"# Runs by hand too: bash {q(plan.script_path(i))}",
           "", f"cd {q(plan.submit_dir)} || exit 1"]
    for k, v in plan.env.items():
        out.append(f"export {k}={q(v)}")
    for path in plan.prepend:
        out += [f"# --- from {path} ---", _read(path).rstrip("\n"), "# ---"]
    out.append(" ".join(q(w) for w in clum))
    out.append("status=$?")
    for path in plan.append:
        out += [f"# --- from {path} ---", _read(path).rstrip("\n"), "# ---"]
    out.append("exit $status")
    return "\n".join(out) + "\n"


def write(plan: RunPlan, bins: List[int], resume=False) -> List[str]:
    os.makedirs(plan.jobs_dir, exist_ok=True)
    paths = []
    for i in bins:
        path = plan.script_path(i)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(render(plan, i, resume))
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
        paths.append(path)
    return paths


# --- the manifest -----------------------------------------------------------------

def load_manifest(path) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def save_manifest(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def new_manifest(plan: RunPlan) -> dict:
    return {"script": plan.script, "nodes": plan.nodes, "scheduler": plan.scheduler.name,
            "jobs_dir": plan.jobs_dir, "submit_dir": plan.submit_dir, "jobs": {}}


def record(manifest: dict, i: int, script_path: str, job_id: Optional[str], resume=False):
    """Record bin i's job; earlier submissions of the bin stay in its history."""
    job = manifest["jobs"].setdefault(str(i), {"bin": i, "script": script_path, "history": []})
    if job.get("id"):
        job["history"].append({"id": job["id"], "submitted": job.get("submitted")})
    job.update({"script": script_path, "id": job_id, "resume": resume,
                "submitted": time.strftime("%Y-%m-%dT%H:%M:%S")})
