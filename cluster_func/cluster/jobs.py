"""Job scripts for bin i of n, their submission, and the run's manifest.

A job script is a plain bash script: it runs the same by hand
(``bash jobs/example-0-3.slurm``) from any directory with an empty environment.

What a job script does besides running clum:

- **A rerun resumes.** A script written for a first submission holds a mark of that
  submission (``cluf_submission=<random hex>``) and writes it to ``<base>.started`` when it
  starts.  Finding its own mark there, the script has run before (requeued or rerun by the
  scheduler, run again by hand) and runs clum with ``--resume``; a first run, or the script of
  a new cluf submission (a new mark), starts over.  Scripts of continuations and of
  ``--resubmit`` always pass ``--resume``.  The directives ask the scheduler to rerun rather
  than lose a job where that is its choice (Slurm ``--requeue``, PBS ``-r y``, Grid Engine
  ``-r y``, LSF ``-r``).
- **Output is appended.** Every job of a bin adds to ``<base>.stdout``/``.stderr``: Slurm
  (``--open-mode=append``), Grid Engine and LSF append themselves; where the scheduler
  replaces its output file with each job (PBS, ``Scheduler.appends_output``), the script
  appends to the bin's files itself (``exec >>``) and the scheduler's own files are
  ``<base>.scheduler.stdout``/``.stderr`` (only its own words, of the latest job).
- **With a walltime** the script exports ``CLUF_JOB_START``, traps SIGTERM (so that it
  outlives the signal the scheduler sends to all the job's processes) and, when clum exits
  75 (stopped at the walltime, or preempted), 130 or 143 (stopped by a signal), runs
  ``python -m cluster_func.continuation MANIFEST BIN STATUS`` and exits with what that
  returns: 0 once a new job holds the bin (see continuation.py for why), else non-zero.

The manifest (``<stem>-<n>.manifest.json``) is the run's record: the plan and, per bin, its
job (id, history, restarts, cancelled, failed_reason).  Whole rewrites go through
:func:`update_manifest` under an exclusive lock.  A continuation changes one bin only, and
writes that bin's job to ``<stem>-<n>.manifest.bins/<bin>.json`` under :func:`bin_lock`
instead (shared with other bins, exclusive for its own), so that 10,000 bins stopping at once
do not queue for one lock.  :func:`load_manifest` merges those records over the manifest;
:func:`update_manifest` folds them into it and removes them.
"""

import contextlib
import fcntl
import json
import os
import secrets
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .. import __version__
from ..core.errors import EXIT_WALLTIME, JOB_START_VAR, LOCK_WAIT_VAR, RERUN_LOCK_WAIT, UserError
from ..core.files import replaced
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
    results: Optional[str] = None  # "jsonl" or "pkl": each bin writes <base>.results.<format>
    max_restarts: Optional[int] = None  # with a walltime: continuations of a bin (None: the default)
    scheduler_path: Optional[str] = None  # the folder of the submit command cluf used (for jobs that
    # continue themselves: a compute node's PATH may find another scheduler's qsub first)

    @property
    def stem(self):
        return os.path.splitext(os.path.basename(self.script))[0]

    def base(self, i):
        """``<stem>-<i>-<n>``: the name of bin i's job script, output files and journal (in an
        array script ``i`` is the shell word ``$cluf_bin``)."""
        return f"{self.stem}-{i}-{self.nodes}"

    def array_base(self, first, count):
        """``<stem>-array-<n>``, or ``<stem>-array-<first>-<n>`` for an array of only some bins."""
        return f"{self.stem}-array-{first}-{self.nodes}" if count < self.nodes else f"{self.stem}-array-{self.nodes}"

    def path(self, i, suffix):
        return os.path.join(self.jobs_dir, self.base(i) + suffix)

    def script_path(self, i):
        return self.path(i, self.scheduler.extension)

    def manifest_path(self):
        return os.path.join(self.jobs_dir, f"{self.stem}-{self.nodes}{MANIFEST_SUFFIX}")


PLAN_FIELDS = ("script", "nodes", "jobs_dir", "submit_dir", "clum_args", "passthrough", "env",
               "prepend", "append", "resources", "raw", "python", "results", "max_restarts",
               "scheduler_path")


def plan_to_dict(plan: RunPlan) -> dict:
    d = {k: getattr(plan, k) for k in PLAN_FIELDS}
    d["scheduler"] = plan.scheduler.name
    return d


def plan_from_dict(d: dict) -> RunPlan:
    from .schedulers import SCHEDULERS

    kwargs = {k: d[k] for k in PLAN_FIELDS if k in d}
    return RunPlan(scheduler=SCHEDULERS[d["scheduler"]](), **kwargs)


def _read(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return text if text.endswith("\n") else text + "\n"


def render(plan: RunPlan, i: int, resume=False) -> str:
    """The text of the job script for bin i of plan.nodes."""
    sched = plan.scheduler
    own = "" if sched.appends_output else ".scheduler"  # (then the script appends to the bin's files)
    spec = JobSpec(name=sched.job_name(plan.base(i)), stdout=plan.path(i, own + ".stdout"),
                   stderr=plan.path(i, own + ".stderr"), raw=plan.raw, **plan.resources)
    preamble = []
    if not sched.appends_output:
        preamble = [f"# {sched.title} replaces its output files with each job: every job of the bin appends to the "
                    f"bin's own.",
                    f'if [ -n "${{{sched.job_id_var}:-}}" ]; then exec >>{shlex.quote(plan.path(i, ".stdout"))} '
                    f'2>>{shlex.quote(plan.path(i, ".stderr"))}; fi']
    return _render(plan, spec, f"{i}/{plan.nodes}", plan.path(i, ".journal"),
                   f"bin {i} of {plan.nodes}", f"bash {shlex.quote(plan.script_path(i))}", resume, preamble)


BIN_VAR = "$cluf_bin"  # the shell variable holding an array task's bin


def _quote(word: str, expand=False) -> str:
    """Shell-quote a word; with ``expand``, leave ``$cluf_bin`` in it to the shell."""
    if not expand or BIN_VAR not in word:
        return shlex.quote(word)
    head, _, tail = word.rpartition(BIN_VAR)
    return (shlex.quote(head) if head else "") + f'"{BIN_VAR}"' + (shlex.quote(tail) if tail else "")


def _one_line_paths(plan):
    """Paths named in the job script's comments and directives stay on one line; variable names
    are names (a manifest edited by hand goes through here too on --resubmit)."""
    import re

    for what, path in [("the script's path", plan.script), ("the jobs dir", plan.jobs_dir),
                       ("the directory cluf ran in", plan.submit_dir),
                       *(("a --prepend-script/--append-script file", p) for p in [*plan.prepend, *plan.append])]:
        if re.search(r"[\x00-\x1f\x7f]", path):
            raise UserError(f"{what.capitalize()}, {path!r}, holds a newline or another control character, so it "
                            f"cannot be named on one line of a job script. Rename it (or run cluf from another "
                            f"directory).")
    for k in plan.env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
            raise UserError(f"--env: {k!r} is not a valid environment variable name.")


def _render(plan, spec, bins_word, journal_word, what, by_hand, resume, preamble=()):
    _one_line_paths(plan)
    q = shlex.quote
    # Only the --bins and --journal words of an array script hold $cluf_bin; every other word
    # (a pass-through '$cluf_bin' included) stays literal.
    rest = [*plan.clum_args, *(["--resume"] if resume else []), plan.script]
    if plan.passthrough:
        rest += ["--", *plan.passthrough]
    words = [q(plan.python), "-m", "cluster_func", "--bins", _quote(bins_word, expand=True),
             "--journal", _quote(journal_word, expand=True)]
    if not resume:
        words.append("$cluf_resume")  # --resume when this script has run before
    if plan.results:
        results_word = journal_word[:-len(".journal")] + ".results." + plan.results
        words += ["--results", _quote(results_word, expand=True)]
    words += map(q, rest)
    continuing = bool(plan.resources.get("walltime"))
    out = ["#!/bin/bash", *plan.scheduler.lines(spec), "",
           f"{WRITTEN_BY} (cluster-func {__version__}): {what} of {plan.script}.",
           f"# Runs by hand too: {by_hand}", ""]
    if continuing:  # clum's walltime counts from here
        out.append(f"export {JOB_START_VAR}=$(date +%s)")
    out += preamble
    if not resume:
        marker = _quote(journal_word[:-len(".journal")] + ".started", expand=True)
        out += ["# Run again (requeued or rerun by the scheduler, or by hand), this script resumes its bin: it "
                "finds its",
                "# submission's mark in the .started file it writes when it starts.",
                f"cluf_submission={secrets.token_hex(8)}",
                f'if [ "$(cat {marker} 2>/dev/null)" = "$cluf_submission" ]; then',
                f"  cluf_resume=--resume; export {LOCK_WAIT_VAR}={RERUN_LOCK_WAIT}  # the stopped run may still be ending",
                "else",
                f'  cluf_resume=; echo "$cluf_submission" >{marker}',
                "fi"]
    if continuing:  # the scheduler's SIGTERM reaches every process of the job: this script outlives it
        out.append("trap : TERM")
    out.append(f"cd {q(plan.submit_dir)} || exit 1")
    for k, v in plan.env.items():
        out.append(f"export {k}={q(v)}")
    for path in plan.prepend:
        out += [f"# --- from {path} ---", _read(path).rstrip("\n"), "# ---"]
    out.append(" ".join(words))
    out.append("cluf_status=$?")
    for path in plan.append:
        out += [f"# --- from {path} ---", _read(path).rstrip("\n"), "# ---"]
    if continuing:  # stopped at the walltime or from outside: the bin continues in a new job, or not
        out += [f"case $cluf_status in {EXIT_WALLTIME}|130|143)",
                f"    {q(plan.python)} -m cluster_func.cluster.continuation {q(plan.manifest_path())} "
                f"{_quote(bin_of(bins_word), expand=True)} $cluf_status",
                "    cluf_status=$?;;",
                "esac"]
    out.append("exit $cluf_status")
    return "\n".join(out) + "\n"


WRITTEN_BY = "# Written by cluf"


def check_ours(paths):
    """Refuse to overwrite a file at a job script's path unless cluf wrote it (it carries the
    '# Written by cluf' line of every job script): it may be the user's own."""
    for path in paths:
        if not os.path.lexists(path):
            continue
        if os.path.isdir(path) or not os.path.isfile(path):
            raise UserError(f"{path} exists and is not a file, so cluf cannot write a job script there. Move it "
                            f"away, or write the job scripts elsewhere with -j DIR.")
        try:
            with open(path, "rb") as f:
                head = f.read(1 << 16)
        except OSError as e:
            raise UserError(f"Cannot read {path} to check it is a job script of cluf before replacing it: "
                            f"{e.strerror}. Move it away, or write the job scripts elsewhere with -j DIR.") from None
        if b"\n" + WRITTEN_BY.encode() not in head:
            raise UserError(f"{path} exists and was not written by cluf (it has no '{WRITTEN_BY}' line), so cluf "
                            f"will not overwrite it with a job script. Move it away, or write the job scripts "
                            f"elsewhere with -j DIR.")


def write(plan: RunPlan, bins: List[int], resume=False) -> List[str]:
    os.makedirs(plan.jobs_dir, exist_ok=True)
    check_ours([plan.script_path(i) for i in bins])
    paths = []
    for i in bins:
        path = plan.script_path(i)
        with replaced(path, perms=0o755) as f:
            f.write(render(plan, i, resume))
        paths.append(path)
    return paths


ARRAY_BIN_VAR = "CLUF_BIN"


def bin_of(bins_word):
    """The bin of a '--bins i/n' word (a shell word in an array script)."""
    return bins_word.split("/", 1)[0]


def array_script_path(plan: RunPlan, first: int, count: int) -> str:
    return os.path.join(plan.jobs_dir, plan.array_base(first, count) + plan.scheduler.extension)


def render_array(plan: RunPlan, first: int, count: int, max_running=None, resume=False) -> str:
    """One job script for the array of tasks running bins first .. first+count-1.

    The bin is the scheduler's task index (plus ``first``), or ``CLUF_BIN`` when set,
    which is also how to run one bin of it by hand.
    """
    sched = plan.scheduler
    base = plan.array_base(first, count)
    spec = JobSpec(name=sched.job_name(base), stdout=os.path.join(plan.jobs_dir, base + ".scheduler.stdout"),
                   stderr=os.path.join(plan.jobs_dir, base + ".scheduler.stderr"), raw=plan.raw,
                   array=count, max_running=max_running, **plan.resources)
    index = sched.array_index_expr()
    offset = first - sched.array_first_index
    preamble = [
        f"# The bin: ${ARRAY_BIN_VAR} if set, else the task index ({sched.array_index_var}) "
        f"{'+ ' + str(offset) if offset > 0 else '- ' + str(-offset) if offset < 0 else ''}".rstrip(),
        "# A task's output goes to its bin's files; run by hand, it stays on the terminal.",
        f'if [ -n "${{{ARRAY_BIN_VAR}:-}}" ]; then cluf_bin=${ARRAY_BIN_VAR}; else',
        f'  cluf_task={index}',
        f'  if [ -z "$cluf_task" ]; then echo "not a job array task: set {ARRAY_BIN_VAR}=<bin> to run one bin by hand" >&2; exit 2; fi',
        f"  cluf_bin=$((cluf_task + {offset}))",
        f"  exec >>{_quote(plan.path(BIN_VAR, '.stdout'), expand=True)} "
        f"2>>{_quote(plan.path(BIN_VAR, '.stderr'), expand=True)}",
        "fi",
        "",
    ]
    return _render(plan, spec, f"{BIN_VAR}/{plan.nodes}", plan.path(BIN_VAR, ".journal"),
                   f"bins {first} to {first + count - 1} of {plan.nodes}, as a job array",
                   f"{ARRAY_BIN_VAR}=<bin> bash {shlex.quote(array_script_path(plan, first, count))}",
                   resume, preamble)


def write_array(plan: RunPlan, first: int, count: int, max_running=None, resume=False) -> str:
    os.makedirs(plan.jobs_dir, exist_ok=True)
    path = array_script_path(plan, first, count)
    check_ours([path])
    with replaced(path, perms=0o755) as f:
        f.write(render_array(plan, first, count, max_running, resume))
    return path


# --- the manifest -----------------------------------------------------------------

# What a manifest holds, field by field: (the types it may have, required).  Every reader goes
# through load_manifest, which checks all of it here, so that a damaged file is one clear message
# rather than an error wherever a field is first used.
_NONE = type(None)
MANIFEST_SCHEMA = {
    "script": ((str,), True), "nodes": ((int,), True), "scheduler": ((str,), True),
    "jobs_dir": ((str,), True), "plan": ((dict,), True), "jobs": ((dict,), True), "planned": ((list,), False),
}
PLAN_SCHEMA = {
    "script": ((str,), True), "nodes": ((int,), True), "jobs_dir": ((str,), True), "submit_dir": ((str,), True),
    "scheduler": ((str,), True), "clum_args": ((list,), True), "passthrough": ((list,), True),
    "env": ((dict,), False), "prepend": ((list,), False), "append": ((list,), False),
    "resources": ((dict,), False), "raw": ((dict,), False), "python": ((str,), False),
    "results": ((str, _NONE), False), "max_restarts": ((int, _NONE), False),
    "scheduler_path": ((str, _NONE), False),
}
RESOURCES_SCHEMA = {
    "walltime": ((int, _NONE), False), "memory": ((int, _NONE), False), "queue": ((str, _NONE), False),
    "account": ((str, _NONE), False), "cpus": ((int, _NONE), False),
}
JOB_SCHEMA = {
    "bin": ((int,), True), "script": ((str,), True), "history": ((list,), False), "id": ((str, _NONE), False),
    "array_id": ((str, _NONE), False), "resume": ((bool,), False), "submitted": ((str, _NONE), False),
    "calls": ((int, _NONE), False), "cancelled": ((bool,), False), "failed_reason": ((str, _NONE), False),
    "continue_failed": ((str, _NONE), False), "restarts": ((int,), False),
}


class ManifestError(UserError):
    """A manifest that cannot be read or does not hold what cluf wrote."""


def _type_names(types):
    names = {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "an object",
             _NONE: "null"}
    return " or ".join(names[t] for t in types)


_MISSING = object()


def _check_fields(d, schema, where):
    """The first problem with the fields of ``d`` (a dict) against ``schema``, or None.  (Exact
    types, so that true is not an integer; quick, since --wait checks a 10,000-bin manifest a poll.)"""
    for name, (types, required) in schema.items():
        v = d.get(name, _MISSING)
        if v is _MISSING:
            if required:
                return f"{where.rstrip('.') or 'it'} has no {name!r}"
            continue
        t = type(v)
        if t not in types:
            return f"{where}{name!r} is {json.dumps(v)[:40]}, not {_type_names(types)}"
        if t is int and v < 0:
            return f"{where}{name!r} is {v}, a negative number"
    return None


def manifest_problem(m) -> Optional[str]:
    """What is wrong with a manifest's content (as loaded from JSON), or None."""
    from .schedulers import SCHEDULERS

    if not isinstance(m, dict):
        return f"it holds {json.dumps(m)[:40]}, not a JSON object"
    problem = _check_fields(m, MANIFEST_SCHEMA, "")
    if problem:
        return problem
    if m["nodes"] < 1:
        return f"'nodes' is {m['nodes']}, not a number of jobs"
    if m["scheduler"] not in SCHEDULERS:
        return f"'scheduler' is {m['scheduler']!r}, not one of {', '.join(sorted(SCHEDULERS))}"
    plan = m["plan"]
    problem = _check_fields(plan, PLAN_SCHEMA, "plan.")
    if problem:
        return problem
    if plan["scheduler"] != m["scheduler"] or plan["nodes"] != m["nodes"]:
        return "the plan's 'scheduler' and 'nodes' differ from the manifest's"
    for name in ("clum_args", "passthrough", "prepend", "append"):
        if not all(isinstance(w, str) for w in plan.get(name, [])):
            return f"plan.{name!r} holds something that is not a string"
    for name in ("env", "raw"):
        if not all(isinstance(v, str) or (v is None and name == "raw") for v in plan.get(name, {}).values()):
            return f"plan.{name!r} holds a value that is not a string"
    problem = _check_fields(plan.get("resources", {}), RESOURCES_SCHEMA, "plan.resources.")
    if problem:
        return problem
    if plan.get("results") not in (None, "jsonl", "pkl"):
        return f"plan.'results' is {plan['results']!r}, not jsonl or pkl"
    for i in m.get("planned", []):
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < m["nodes"]:
            return f"'planned' holds {json.dumps(i)[:40]}, not a bin from 0 to {m['nodes'] - 1}"
    for key, job in m["jobs"].items():
        if not (key.isascii() and key.isdigit()) or int(key) >= m["nodes"]:
            return f"'jobs' has the key {key!r}, not a bin from 0 to {m['nodes'] - 1}"
        if not isinstance(job, dict):
            return f"jobs.{key} is {json.dumps(job)[:40]}, not an object"
        problem = _check_fields(job, JOB_SCHEMA, f"jobs.{key}.")
        if problem:
            return problem
        if job["bin"] != int(key):
            return f"jobs.{key}.'bin' is {job['bin']}, not {key}"
        if not all(isinstance(h, dict) for h in job.get("history", [])):
            return f"jobs.{key}.'history' holds something that is not an object"
    return None


_NO_FILE = object()


def _read_manifest(path):
    """(the manifest file's JSON, its inode), or (_NO_FILE, None) when there is no file; a file that
    cannot be read or is not JSON is a ManifestError saying what is wrong and what to do."""
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):  # a FIFO blocks a read
        raise ManifestError(f"{path} is not a regular file, so not a cluf manifest. " + _manifest_fix(path))
    try:
        with open(path, encoding="utf-8") as f:
            seen = os.fstat(f.fileno()).st_ino
            text = f.read()
    except FileNotFoundError:
        return _NO_FILE, None
    except IsADirectoryError:
        raise ManifestError(f"{path} is a directory, not a cluf manifest. " + _manifest_fix(path)) from None
    except UnicodeDecodeError:
        raise ManifestError(f"{path} is not a cluf manifest: it is a binary file, not JSON. "
                            + _manifest_fix(path)) from None
    except OSError as e:
        raise ManifestError(f"Cannot read the cluf manifest {path}: {e.strerror or e}. Fix its permissions, "
                            f"or run cluf as the user who submitted the run.") from None
    if not text.strip():
        raise ManifestError(f"The cluf manifest {path} is empty (a full disk or a kill while it was "
                            f"written?). " + _manifest_fix(path))
    try:
        return json.loads(text), seen
    except ValueError as e:
        raise ManifestError(f"The cluf manifest {path} is not valid JSON ({e}; cut short, or edited by "
                            f"hand?). " + _manifest_fix(path)) from None


def load_manifest(path, bins=None) -> Optional[dict]:
    """The manifest at ``path`` with the per-bin records of :func:`update_bin` merged over it,
    checked field by field; None when there is no file.  With ``bins``, only those bins' records
    are merged (their jobs are then current, the others' may be older).  Needs no lock: a fold
    renames the new manifest over the old one before it removes the records, so a read that saw
    the old manifest and missed records sees the manifest's file change, and reads again.  A
    file that cannot be read, is not JSON or does not hold what cluf writes is a ManifestError
    saying what is wrong and what to do."""
    while True:
        m, seen = _read_manifest(path)
        if m is _NO_FILE:
            return None
        if isinstance(m, dict):
            _merge_bin_records(path, m, bins)
        try:
            if os.stat(path).st_ino != seen:
                continue
        except FileNotFoundError:
            return None
        problem = manifest_problem(m)
        if problem:
            raise ManifestError(f"{path} is not a cluf manifest of this version of cluster-func, or it is "
                                f"damaged: {problem}. " + _manifest_fix(path, m))
        return m


def _manifest_fix(path, m=None):
    script = m.get("script") if isinstance(m, dict) and isinstance(m.get("script"), str) else "SCRIPT"
    nodes = m.get("nodes") if isinstance(m, dict) and isinstance(m.get("nodes"), int) else "N"
    return (f"cluf writes this file when it submits a run and reads it for --status, --resubmit, --cancel, "
            f"--gather and --wait. Restore it if you have a copy; otherwise move it away and submit the run "
            f"again with 'cluf {shlex.quote(script)} -n {nodes} -j {shlex.quote(os.path.dirname(path) or '.')} "
            f"--resume' (with your other options): the bins' journals are kept, so --resume skips the calls "
            f"they record as completed.")


def bin_records_dir(path) -> str:
    """``<stem>-<n>.manifest.bins``: one ``<bin>.json`` per bin changed since the last fold."""
    return path[:-len(".json")] + ".bins" if path.endswith(".json") else path + ".bins"


def _bin_record_names(path, bins=None):
    if bins is not None:
        return [f"{i}.json" for i in bins]
    try:
        return [n for n in os.listdir(bin_records_dir(path)) if n.endswith(".json") and n[:-5].isdigit()]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _merge_bin_records(path, data, bins=None):
    folder = bin_records_dir(path)
    for name in _bin_record_names(path, bins):
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                job = json.load(f)
        except (FileNotFoundError, ValueError):  # folded meanwhile (the manifest has it), or half-written
            continue
        if isinstance(data.get("jobs"), dict) and isinstance(job, dict):
            data["jobs"][name[:-5]] = job


def save_manifest(path, data):
    """Write the manifest whole (temp file, then rename).  Hold :func:`manifest_lock` around
    the read-change-write, as :func:`update_manifest` does: jobs continuing themselves, cluf
    and ``cluf --wait`` may update one manifest at the same moment."""
    with replaced(path) as f:
        json.dump(data, f, indent=1)
        f.write("\n")


def _lock(path, kind, start):
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, kind, 1, start)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def manifest_lock(path):
    """The exclusive lock of a whole read-change-write of the manifest: lockf on byte 0 of
    PATH.lock (:func:`bin_lock` holds it shared)."""
    fd = _lock(path, fcntl.LOCK_EX, 0)
    try:
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def bin_lock(path, i):
    """The lock of a change to bin i alone: byte 0 of PATH.lock shared (no whole rewrite
    meanwhile), byte 1 + i exclusive (one change of this bin at a time).  Bins do not wait
    for each other."""
    fd = _lock(path, fcntl.LOCK_SH, 0)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, 1 + i)
        yield
    finally:
        os.close(fd)  # (releases both)


def update_manifest(path, plan: Optional["RunPlan"], change):
    """Load (or start, from ``plan``) the manifest, apply ``change(manifest)``, save; all under
    the lock.  The per-bin records are folded in (then removed).  Returns what ``change``
    returned."""
    with manifest_lock(path):
        m = load_manifest(path)
        if m is None:
            m = new_manifest(plan)
        result = change(m)
        save_manifest(path, m)
        folder = bin_records_dir(path)
        for name in _bin_record_names(path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))
        return result


def update_bin(path, i: int, change):
    """Apply ``change(manifest)``, which changes bin i's job only, under :func:`bin_lock`;
    the bin's job is written to its record (not the manifest).  Returns what ``change``
    returned."""
    with bin_lock(path, i):
        m = load_manifest(path, bins=[i])
        if m is None:
            raise FileNotFoundError(f"no cluf manifest at {path}")
        before = json.dumps(m["jobs"].get(str(i)), sort_keys=True)
        result = change(m)
        job = m["jobs"].get(str(i))
        if job is not None and json.dumps(job, sort_keys=True) != before:
            folder = bin_records_dir(path)
            os.makedirs(folder, exist_ok=True)
            with replaced(os.path.join(folder, f"{i}.json")) as f:
                json.dump(job, f)
        return result


def new_manifest(plan: RunPlan) -> dict:
    return {"script": plan.script, "nodes": plan.nodes, "scheduler": plan.scheduler.name,
            "jobs_dir": plan.jobs_dir, "plan": plan_to_dict(plan), "jobs": {}}


def record(manifest: dict, i: int, script_path: str, job_id: Optional[str], resume=False,
           array_id: Optional[str] = None, calls: Optional[int] = None):
    """Record bin i's job; earlier submissions of the bin stay in its history."""
    job = manifest["jobs"].setdefault(str(i), {"bin": i, "script": script_path, "history": []})
    if job.get("id"):
        job["history"].append({"id": job["id"], "submitted": job.get("submitted")})
    job.update({"script": script_path, "id": job_id, "array_id": array_id, "resume": resume,
                "submitted": time.strftime("%Y-%m-%dT%H:%M:%S")})
    for stale in ("cancelled", "cancelled_by", "failed_reason", "continue_failed"):  # a new job starts afresh
        job.pop(stale, None)
    if calls is not None:
        job["calls"] = calls


def plan_bins(manifest: dict, chosen):
    """Remember which bins a run meant to submit (so --resubmit finishes a submission that failed
    part way, but leaves alone the bins a '-b' run never meant to submit)."""
    manifest["planned"] = sorted(set(manifest.get("planned", [])) | set(chosen))


def find_manifests(jobs_dir: str) -> List[str]:
    try:
        names = sorted(os.listdir(jobs_dir))
    except OSError:
        return []
    return [os.path.join(jobs_dir, n) for n in names if n.endswith(MANIFEST_SUFFIX)]
