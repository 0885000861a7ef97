"""Job scripts for bin i of n (or a job array of bins), and the plan they are written from.

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
- **Stopped from outside, or at the walltime.** The script exports ``CLUF_JOB_START``, traps
  SIGTERM (so that it outlives the signal the scheduler sends to all the job's processes) and,
  when clum exits 75 (stopped at the walltime, or preempted), 130 or 143 (stopped by a signal),
  runs ``python -m cluster_func.cluster.continuation MANIFEST BIN STATUS`` and exits with what
  that returns: 0 once a new job holds the bin (see continuation.py for why), else non-zero.
  That step also marks a bin the scheduler cancelled as cancelled, with or without a walltime
  (without one, a cancel would otherwise look like a failure).

The plan (:class:`RunPlan`) names every file of a run in the jobs dir, the manifest's too;
the manifest itself (its format, lock and job records) is :mod:`cluster_func.cluster.manifest`,
and writing, submitting and recording jobs is :mod:`cluster_func.cluster.dispatch`.
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence

from .. import __version__
from ..core.errors import EXIT_WALLTIME, JOB_START_VAR, LOCK_WAIT_VAR, RERUN_LOCK_WAIT, UserError
from ..core.files import replaced
from ..schedulers.base import JobSpec, Scheduler

MANIFEST_SUFFIX = ".manifest.json"  # <stem>-<n>.manifest.json: the run's manifest (manifest.py)


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
    def stem(self) -> str:
        return os.path.splitext(os.path.basename(self.script))[0]

    def base(self, i: int | str) -> str:
        """``<stem>-<i>-<n>``: the name of bin i's job script, output files and journal (in an
        array script ``i`` is the shell word ``$cluf_bin``)."""
        return f"{self.stem}-{i}-{self.nodes}"

    def array_base(self, first: int, count: int) -> str:
        """``<stem>-array-<n>``, or ``<stem>-array-<first>-<n>`` for an array of only some bins."""
        return f"{self.stem}-array-{first}-{self.nodes}" if count < self.nodes else f"{self.stem}-array-{self.nodes}"

    def path(self, i: int | str, suffix: str) -> str:
        return os.path.join(self.jobs_dir, self.base(i) + suffix)

    def script_path(self, i: int) -> str:
        return self.path(i, self.scheduler.extension)

    def manifest_path(self) -> str:
        return os.path.join(self.jobs_dir, f"{self.stem}-{self.nodes}{MANIFEST_SUFFIX}")


PLAN_FIELDS = ("script", "nodes", "jobs_dir", "submit_dir", "clum_args", "passthrough", "env",
               "prepend", "append", "resources", "raw", "python", "results", "max_restarts",
               "scheduler_path")


def plan_to_dict(plan: RunPlan) -> dict:
    d = {k: getattr(plan, k) for k in PLAN_FIELDS}
    d["scheduler"] = plan.scheduler.name
    return d


def plan_from_dict(d: dict) -> RunPlan:
    from ..schedulers import SCHEDULERS

    kwargs = {k: d[k] for k in PLAN_FIELDS if k in d}
    return RunPlan(scheduler=SCHEDULERS[d["scheduler"]](), **kwargs)


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return text if text.endswith("\n") else text + "\n"


def render(plan: RunPlan, i: int, resume: bool = False) -> str:
    """The text of the job script for bin i of plan.nodes."""
    sched = plan.scheduler
    own = "" if sched.appends_output else ".scheduler"  # (then the script appends to the bin's files)
    spec = JobSpec(name=sched.job_name(plan.base(i)), stdout=plan.path(i, own + ".stdout"),
                   stderr=plan.path(i, own + ".stderr"), raw=plan.raw, **plan.resources)
    preamble: List[str] = []
    if not sched.appends_output:
        preamble = [f"# {sched.title} replaces its output files with each job: every job of the bin appends to the "
                    f"bin's own.",
                    f'if [ -n "${{{sched.job_id_var}:-}}" ]; then exec >>{shlex.quote(plan.path(i, ".stdout"))} '
                    f'2>>{shlex.quote(plan.path(i, ".stderr"))}; fi']
    return _render(plan, spec, f"{i}/{plan.nodes}", plan.path(i, ".journal"),
                   f"bin {i} of {plan.nodes}", f"bash {shlex.quote(plan.script_path(i))}", resume, preamble)


BIN_VAR = "$cluf_bin"  # the shell variable holding an array task's bin


def _quote(word: str, expand: bool = False) -> str:
    """Shell-quote a word; with ``expand``, leave ``$cluf_bin`` in it to the shell."""
    if not expand or BIN_VAR not in word:
        return shlex.quote(word)
    head, _, tail = word.rpartition(BIN_VAR)
    return (shlex.quote(head) if head else "") + f'"{BIN_VAR}"' + (shlex.quote(tail) if tail else "")


def _one_line_paths(plan: RunPlan) -> None:
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


def _render(plan: RunPlan, spec: JobSpec, bins_word: str, journal_word: str, what: str, by_hand: str, resume: bool,
            preamble: Sequence[str] = ()) -> str:
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
    out = ["#!/bin/bash", *plan.scheduler.lines(spec), "",
           f"{WRITTEN_BY} (cluster-func {__version__}): {what} of {plan.script}.",
           f"# Runs by hand too: {by_hand}", ""]
    out.append(f"export {JOB_START_VAR}=$(date +%s)")  # clum's walltime counts from here; 'in a cluf job'
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
                # (a new file, never written through a symbolic link or over another file put there)
                f'  cluf_resume=; rm -f {marker} && (set -C; echo "$cluf_submission" >{marker})',
                "fi"]
    out.append("trap : TERM")  # the scheduler's SIGTERM reaches every process of the job: this script outlives it
    out.append(f"cd {q(plan.submit_dir)} || exit 1")
    for k, v in plan.env.items():
        out.append(f"export {k}={q(v)}")
    for path in plan.prepend:
        out += [f"# --- from {path} ---", _read(path).rstrip("\n"), "# ---"]
    out.append(" ".join(words))
    out.append("cluf_status=$?")
    for path in plan.append:
        out += [f"# --- from {path} ---", _read(path).rstrip("\n"), "# ---"]
    # stopped at the walltime or from outside: the bin continues in a new job, is marked cancelled, or not
    out += [f"case $cluf_status in {EXIT_WALLTIME}|130|143)",
            f"    {q(plan.python)} -m cluster_func.cluster.continuation {q(plan.manifest_path())} "
            f"{_quote(bin_of(bins_word), expand=True)} $cluf_status",
            "    cluf_status=$?;;",
            "esac"]
    out.append("exit $cluf_status")
    return "\n".join(out) + "\n"


WRITTEN_BY = "# Written by cluf"


def check_ours(paths: Iterable[str]) -> None:
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


def write(plan: RunPlan, bins: List[int], resume: bool = False) -> List[str]:
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


def bin_of(bins_word: str) -> str:
    """The bin of a '--bins i/n' word (a shell word in an array script)."""
    return bins_word.split("/", 1)[0]


def array_script_path(plan: RunPlan, first: int, count: int) -> str:
    return os.path.join(plan.jobs_dir, plan.array_base(first, count) + plan.scheduler.extension)


def render_array(plan: RunPlan, first: int, count: int, max_running: Optional[int] = None, resume: bool = False) -> str:
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


def write_array(plan: RunPlan, first: int, count: int, max_running: Optional[int] = None, resume: bool = False) -> str:
    os.makedirs(plan.jobs_dir, exist_ok=True)
    path = array_script_path(plan, first, count)
    check_ours([path])
    with replaced(path, perms=0o755) as f:
        f.write(render_array(plan, first, count, max_running, resume))
    return path
