"""Helpers for tests that use the real batch schedulers (Slurm, Grid Engine, PBS).

The schedulers are brought up by ``tests/schedulers/up.sh`` (root, Debian 12):
a single-node Slurm cluster (partition ``debug``, system-wide
``/etc/slurm/slurm.conf``), a single-host Grid Engine 8.1.9 cell (queue
``all.q``) and a single-host OpenPBS 23.06.06 server (queue ``workq``, installed
in ``/opt/pbs``).  This module only *uses* them; it never starts or stops anything.

Functions
---------
``require_slurm()`` / ``require_sge()`` / ``require_pbs()``
    Call at the top of a test (or in a fixture).  If the scheduler is not
    usable, the test is skipped with the reason - or *failed* when the
    environment variable ``CLUSTER_FUNC_REQUIRE_SCHEDULERS=1`` is set (set it
    wherever up.sh has run, e.g. in CI, so that a broken set-up cannot pass
    as "skipped").
    The health check takes well under 5 s and is done once per session.
``wait_slurm_jobs(ids)`` / ``wait_sge_jobs(ids)`` / ``wait_pbs_jobs(ids)``
    Block until the jobs have finished; return ``{id: JobOutcome(state,
    exit_code)}``.
``submit_slurm(args)`` / ``submit_sge(args)`` / ``submit_pbs(args)``
    Run ``sbatch --parsable ARGS`` / ``qsub -terse ARGS`` / PBS's ``qsub ARGS``
    and return the id.
``pbs_env()`` / ``pbs_bin(cmd)``
    The environment to run PBS commands (and cluf for PBS) with; the full path
    of a PBS command.

Environment these functions need
--------------------------------
Slurm: ``sbatch``, ``squeue``, ``scontrol``, ``sinfo`` on ``PATH``
(``/usr/bin``).  No variable is needed: the configuration is the system-wide
``/etc/slurm/slurm.conf`` (a ``SLURM_CONF`` in the environment would override
it - leave it unset).

Grid Engine: ``qsub``, ``qstat``, ``qacct`` on ``PATH``; the ``/usr/bin/q*``
commands are Debian wrappers that set ``SGE_ROOT``/``SGE_CELL``/``SGE_ARCH``
themselves (from the environment, else ``/etc/default/gridengine``, else
``/var/lib/gridengine`` and ``default``).  The real binaries in
``/usr/lib/gridengine/`` and job-side tools need ``SGE_ROOT`` (and
``SGE_CELL``) exported: ``sge_env()`` returns ``os.environ`` plus those, and
every command run here uses it.  Note ``/usr/bin/qsub`` must be Grid Engine's
(``qsub -help`` starts with ``SGE``), not a PBS/Torque ``qsub``.

PBS: the commands are *not* on the default ``PATH`` (``/usr/bin/qsub`` is Grid
Engine's): they are ``/opt/pbs/bin/{qsub,qstat,qdel,qmgr,pbsnodes}``, used here
by full path (``pbs_bin("qstat")``).  The client reads ``/etc/pbs.conf``
(server ``<hostname>-pbs``: PBS refuses a host name that resolves to
127.0.0.1, so pbs_up.sh gives the machine's real address that alias in
/etc/hosts).  To run ``cluf`` (which calls plain ``qsub``/``qstat``/``qdel``)
against PBS, give it ``pbs_env()``: ``os.environ`` with ``/opt/pbs/bin`` first
on ``PATH`` and without ``SGE_ROOT``/``SGE_CELL``; ``--scheduler pbs`` then
works.  For ``--scheduler auto`` to pick PBS, ``sbatch`` must not be on PATH
either: ``pbs_env(only_pbs=True)`` also drops every PATH entry holding an
``sbatch`` or ``qsub`` (that is ``/usr/bin`` and ``/bin``, so run Python by
its full path, ``sys.executable``).  ``qstat --version`` says
``pbs_version = 23.06.06`` (cluf tells PBS Professional from Torque by it).

What a job sees (checked on this machine kind)
----------------------------------------------
* Slurm ``--export=NONE``: no variable of the submitting shell; a login-like
  environment built by ``su - <user>`` on the node (HOME, USER, LOGNAME,
  SHELL, MAIL, PATH and whatever the user's profile/.bashrc exports) plus
  ``SLURM_*`` and ``ENVIRONMENT=BATCH``.  ``--export=NONE,FOO=bar`` or
  ``--export=FOO=bar`` adds exactly FOO.  The working directory is the
  submission directory (``SLURM_SUBMIT_DIR``).
* Grid Engine without ``-V``: no variable of the submitting shell (only as
  ``SGE_O_*``, e.g. ``SGE_O_PATH``, ``SGE_O_WORKDIR``); the queue's shell is
  started as a login shell (bash is in ``login_shells``) so the user's profile
  runs; plus ``JOB_ID``, ``SGE_*``, ``NSLOTS``, ``TMP`` (no ``TMPDIR``)... and the
  *environment of sge_execd itself* (which is why up.sh starts the daemons
  with ``env -i``).  ``-v FOO=bar`` adds exactly FOO.  The working directory
  is ``$HOME`` unless ``-cwd``/``-wd`` is given (relative ``-o`` paths too).
  A job name that SGE refuses (spaces, ``: @ /``, leading digit; with ``-b y``
  and no ``-N`` the command line is the name) makes qsub fail with the
  misleading "Unable to run job: Error reading answer list from qmaster".
* PBS (with or without ``-V``): no variable of the submitting shell; in
  OpenPBS 23.06.06 ``-V`` exports nothing at all (a known bug, openpbs issue
  2611), ``-v FOO=bar`` (or ``-v FOO``: the submitting shell's value) adds
  exactly FOO.  The job gets ``PBS_O_*`` (``PBS_O_WORKDIR`` = submission
  directory, ``PBS_O_PATH``, ``PBS_O_HOME``, ``PBS_O_HOST``...), ``PBS_JOBID``,
  ``PBS_JOBNAME``, ``PBS_ARRAY_INDEX``/``PBS_ARRAY_ID`` in a subjob,
  ``PBS_NODEFILE``, ``NCPUS``, ``OMP_NUM_THREADS``, ``TMPDIR=/var/tmp/pbs.<id>``,
  ``ENVIRONMENT=BATCH``, HOME, USER, LOGNAME, SHELL.  pbs_mom runs the user's
  login shell (``-bash``), which reads /etc/profile (with
  /etc/profile.d/pbs.sh: ``/opt/pbs/bin`` and, for root, ``/opt/pbs/sbin``
  *appended* to PATH) and ~/.profile -> ~/.bashrc (``pyenv init``), and that
  shell runs the script with the ``-S`` shell (``/bin/bash SCRIPT``).  So PATH
  is the login PATH: pyenv's shims first (``python`` is pyenv's global
  version, /root/.pyenv/versions/3.11.7/bin/python here, as in Slurm and Grid
  Engine jobs; cluf's job scripts call ``sys.executable`` by full path
  anyway), ``/usr/bin`` (Grid Engine's ``qsub``!) before ``/opt/pbs/bin``.
  The daemon's own environment does not reach jobs: pbs_mom replaces it with
  ``/var/spool/pbs/pbs_environment`` (``PATH=/bin:/usr/bin``).  The working
  directory is ``$HOME`` (relative ``-o``/``-e`` paths are made absolute by
  qsub, relative to the submission directory).  umask 077: output files are
  mode 0600 (``-W umask=022``).  stdout/stderr are spooled and copied to the
  ``-o``/``-e`` paths when the job ends (with ``cp``: ``$usecp``), before
  ``job_state`` becomes F; ``qsub -W block=true`` returns before that.  The
  login shell runs ``pyenv init`` too, so the stale pyenv lock (see
  ``clear_stale_pyenv_lock``) delays PBS jobs as well.
  Note plain ``qsub`` (as cluf runs it) forks a background qsub daemon that
  serves the user's later qsubs and exits after 60 s without one (its command
  line is that of the first qsub, its working directory that qsub's); ``qsub
  -f``, ``-W block=true`` or a qsub inside a job do not.

How failure shows
-----------------
* Slurm (``scontrol show job -o ID``, kept MinJobAge=300 s after the end):
  ``exit 3`` -> ``JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0``;
  script killed by SIGKILL/SIGTERM -> ``JobState=FAILED ExitCode=0:9`` /
  ``0:15`` (Reason shows ``JobLaunchFailure`` then too); a missing ``-o``
  directory -> ``JobState=FAILED Reason=JobLaunchFailure ExitCode=0:53`` and
  no output at all.  ``exit_code`` here is the exit status, or 128 + signal
  when a signal is given (137 for SIGKILL, 181 for the missing directory).
* Grid Engine (``qacct -j ID``): ``exit 3`` -> ``failed 0``, ``exit_status 3``;
  SIGKILL -> ``failed 100 : assumedly after job``, ``exit_status 137``.
  An array job has one record per task (``taskid``).
  A missing ``-o`` directory leaves the job in state ``Eqw`` for ever:
  ``wait_sge_jobs`` reports it as ``JobOutcome("ERROR", None)`` at once
  (the job is left in the queue; ``qdel`` it).
* PBS (``qstat -x -f -F json -t ID``; finished jobs stay, job_history_enable):
  ``job_state`` F, ``Exit_status``: ``exit 3`` -> 3 (``substate`` 93, comment
  "... and failed") -> ``FAILED``; walltime exceeded -> -29 (SIGTERM, SIGKILL
  ``kill_delay`` = 10 s later; comment "... exceeded resource walltime") ->
  ``TIMEOUT``; ``qdel`` of a running job -> substate 91 and, on this machine,
  ``Exit_status`` 0 (PBS elsewhere: 271 = 256 + SIGTERM; comment "...
  terminated by root@...") -> ``CANCELLED``; ``qdel`` of a queued/held job ->
  substate 91, no ``Exit_status`` -> ``CANCELLED`` (exit_code None, or 143
  for 271).  An array parent
  (``12[].host``) says ``Exit_status`` 0 even when a subjob failed: the
  subjobs (``12[2].host``, listed with ``-t``) have the codes.  ``exit_code``
  is ``Exit_status`` (256 + N -> 128 + N), None when absent or negative.
  Recorded output: tests/data/schedulers/pbs/.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import time
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import pytest

REQUIRE_ENV = "CLUSTER_FUNC_REQUIRE_SCHEDULERS"
SLURM_ACTIVE_STATES = frozenset(
    {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED",
     "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING",
     "STAGE_OUT", "STOPPED"}
)
_CHECK_TIMEOUT = 4.0  # seconds per health-check command


class JobOutcome(NamedTuple):
    """How a finished job ended.

    state: Slurm's JobState (COMPLETED, FAILED, CANCELLED, TIMEOUT, ...), or
        for Grid Engine COMPLETED / FAILED (from qacct) or ERROR (job held in
        an error state, e.g. Eqw), for PBS COMPLETED / FAILED / TIMEOUT /
        CANCELLED / ERROR (another negative Exit_status: PBS could not run
        it); UNKNOWN if the scheduler forgot the job.
    exit_code: the job script's exit status (128 + signal if killed by a
        signal), or None when unknown.
    """

    state: str
    exit_code: Optional[int]


class SchedulerTimeout(AssertionError):
    """Jobs did not finish within the timeout."""


# --------------------------------------------------------------------------
# common


def _run(cmd: Sequence[str], timeout: float = _CHECK_TIMEOUT,
         env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def _probe(cmd: Sequence[str], env: Optional[Dict[str, str]] = None
           ) -> Tuple[Optional[subprocess.CompletedProcess], str]:
    """Run a health-check command; (result, "") or (None, why it failed)."""
    try:
        res = _run(cmd, env=env)
    except FileNotFoundError:
        return None, f"command {cmd[0]!r} not found"
    except subprocess.TimeoutExpired:
        return None, f"`{' '.join(cmd)}` did not answer within {_CHECK_TIMEOUT:.0f} s"
    if res.returncode != 0:
        out = (res.stderr or res.stdout).strip()
        return None, f"`{' '.join(cmd)}` exited {res.returncode}: {out[-300:]}"
    return res, ""


def clear_stale_pyenv_lock(max_age: float = 10.0) -> None:
    """Remove a pyenv rehash lock left behind by a killed login shell.

    Jobs start login shells (Slurm's --export=NONE runs ``su - user``; Grid Engine
    starts bash as a login shell). Where the user's profile runs ``pyenv init``, a
    job killed (``scancel``/``qdel``) during its ``pyenv rehash`` leaves the lock
    ``~/.pyenv/shims/.pyenv-shim`` behind, and every later login shell then waits
    60 s for it, which delays every job's start by a minute. A rehash holds the
    lock for milliseconds, so one older than ``max_age`` seconds is stale.
    """
    lock = os.path.join(os.path.expanduser("~"), ".pyenv", "shims", ".pyenv-shim")
    try:
        if time.time() - os.path.getmtime(lock) > max_age:
            os.remove(lock)
    except OSError:
        pass


def _require(ok_reason: Tuple[bool, str], name: str) -> None:
    clear_stale_pyenv_lock()
    ok, reason = ok_reason
    if ok:
        return
    msg = f"{name} not usable: {reason} (set it up with tests/schedulers/up.sh)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{msg}; {REQUIRE_ENV}=1 makes this a failure", pytrace=False)
    pytest.skip(msg)


# --------------------------------------------------------------------------
# Slurm


@functools.lru_cache(maxsize=None)
def slurm_status() -> Tuple[bool, str]:
    """(usable, reason). Cached for the session."""
    for cmd in ("sbatch", "squeue", "scontrol", "sinfo"):
        if shutil.which(cmd) is None:
            return False, f"command {cmd!r} not on PATH"
    # `scontrol ping` first: it answers at once when slurmctld is down,
    # where `sinfo` retries for ~10 s.
    res, why = _probe(["scontrol", "ping"])
    if res is None:
        return False, why.splitlines()[0]
    if not re.search(r"\bUP\b", res.stdout):
        return False, f"`scontrol ping`: {res.stdout.strip()}"
    res, why = _probe(["sinfo", "-h"])
    if res is None:
        return False, why
    return True, ""


def require_slurm() -> None:
    """Skip (or fail, with CLUSTER_FUNC_REQUIRE_SCHEDULERS=1) without Slurm."""
    _require(slurm_status(), "Slurm")


def submit_slurm(args: Sequence[str], cwd: Optional[str] = None,
                 env: Optional[Dict[str, str]] = None) -> str:
    """`sbatch --parsable ARGS` (in `cwd`, with `env`, default os.environ);
    returns the job id (without ';cluster')."""
    res = subprocess.run(["sbatch", "--parsable", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=60, cwd=cwd,
                         env=env, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise RuntimeError(f"sbatch {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout.strip().split(";")[0]


def _slurm_fields(line: str) -> Dict[str, str]:
    fields = {}
    for tok in line.split():
        key, sep, val = tok.partition("=")
        if sep and key not in fields:
            fields[key] = val
    return fields


def _slurm_exit(exit_code: str) -> Optional[int]:
    m = re.fullmatch(r"(\d+):(\d+)", exit_code or "")
    if not m:
        return None
    status, sig = int(m.group(1)), int(m.group(2))
    return 128 + sig if sig else status


def slurm_job_records(job_id) -> Optional[List[Dict[str, str]]]:
    """Parsed `scontrol show job -o ID` lines (several for an array job);
    None if Slurm does not know the job (any more)."""
    res = _run(["scontrol", "show", "job", "-o", str(job_id)], timeout=30)
    if res.returncode != 0:
        if "Invalid job id" in res.stderr:
            return None
        raise RuntimeError(f"scontrol show job {job_id}: {res.stderr.strip()}")
    return [_slurm_fields(line) for line in res.stdout.splitlines() if line.strip()]


def wait_slurm_jobs(job_ids: Iterable, timeout: float = 120, poll: float = 0.2
                    ) -> Dict[object, JobOutcome]:
    """Wait until none of the jobs is PENDING/RUNNING/CONFIGURING/COMPLETING
    (etc.); return {job_id: JobOutcome(JobState, exit code)}.

    For an array job given by its base id, the outcome is COMPLETED only if
    every task completed, else the first other state; exit_code is the
    largest. Raises SchedulerTimeout (listing the states) after `timeout` s.
    """
    ids = list(job_ids)
    results: Dict[object, JobOutcome] = {}
    deadline = time.monotonic() + timeout
    while True:
        pending = {}
        for jid in ids:
            if jid in results:
                continue
            recs = slurm_job_records(jid)
            if not recs:
                results[jid] = JobOutcome("UNKNOWN", None)
                continue
            states = [r.get("JobState", "UNKNOWN") for r in recs]
            active = [s for s in states if s in SLURM_ACTIVE_STATES]
            if active:
                pending[jid] = active[0]
                continue
            bad = [s for s in states if s != "COMPLETED"]
            codes = [c for c in (_slurm_exit(r.get("ExitCode", "")) for r in recs) if c is not None]
            results[jid] = JobOutcome(bad[0] if bad else "COMPLETED", max(codes) if codes else None)
        if not pending:
            return {jid: results[jid] for jid in ids}
        if time.monotonic() >= deadline:
            raise SchedulerTimeout(f"Slurm jobs not finished after {timeout} s: {pending}")
        time.sleep(poll)


# --------------------------------------------------------------------------
# Grid Engine


@functools.lru_cache(maxsize=None)
def sge_root() -> Optional[Tuple[str, str]]:
    """(SGE_ROOT, SGE_CELL) as the /usr/bin/q* wrappers resolve them, or None
    if no cell is found."""
    root = os.environ.get("SGE_ROOT")
    cell = os.environ.get("SGE_CELL")
    if not root or not cell:
        try:
            with open("/etc/default/gridengine") as fh:
                for line in fh:
                    m = re.match(r"\s*(SGE_ROOT|SGE_CELL)=([^\s`$]+)\s*$", line)
                    if m and m.group(1) == "SGE_ROOT":
                        root = root or m.group(2).strip("\"'")
                    elif m:
                        cell = cell or m.group(2).strip("\"'")
        except OSError:
            pass
    root = root or "/var/lib/gridengine"
    cell = cell or "default"
    if not os.path.isfile(os.path.join(root, cell, "common", "act_qmaster")):
        return None
    return root, cell


def sge_env(base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """`base` (default os.environ) with SGE_ROOT and SGE_CELL set."""
    env = dict(os.environ if base is None else base)
    rc = sge_root()
    if rc:
        env.setdefault("SGE_ROOT", rc[0])
        env.setdefault("SGE_CELL", rc[1])
    return env


@functools.lru_cache(maxsize=None)
def sge_status() -> Tuple[bool, str]:
    """(usable, reason). Cached for the session."""
    for cmd in ("qsub", "qstat", "qacct", "qdel"):
        if shutil.which(cmd) is None:
            return False, f"command {cmd!r} not on PATH"
    rc = sge_root()
    if rc is None:
        return False, "SGE_ROOT not resolvable (no <SGE_ROOT>/<cell>/common/act_qmaster)"
    env = sge_env()
    res, why = _probe(["qstat", "-help"], env=env)
    # qstat -help exits 0 on SGE; its first line names the product.
    if res is None or not res.stdout.startswith(("SGE", "GE", "OGS", "UGE")):
        return False, why or f"`qstat` is not Grid Engine's: {res.stdout.splitlines()[:1]}"
    res, why = _probe(["qstat", "-f"], env=env)
    if res is None:
        return False, why
    ready = []
    for line in res.stdout.splitlines():
        parts = line.split()
        # queue instance lines: name@host qtype used/tot load arch [states]
        if parts and "@" in parts[0] and len(parts) >= 5:
            if len(parts) == 5:
                ready.append(parts[0])
    if not ready:
        return False, f"no queue instance ready in `qstat -f`:\n{res.stdout.strip()}"
    return True, ""


def require_sge() -> None:
    """Skip (or fail, with CLUSTER_FUNC_REQUIRE_SCHEDULERS=1) without Grid Engine."""
    _require(sge_status(), "Grid Engine")


def submit_sge(args: Sequence[str], cwd: Optional[str] = None,
               env: Optional[Dict[str, str]] = None) -> str:
    """`qsub -terse ARGS` (in `cwd`, with sge_env(env)); returns the job id
    (arrays: the base id)."""
    res = subprocess.run(["qsub", "-terse", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=60, cwd=cwd,
                         env=sge_env(env), stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise RuntimeError(f"qsub {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout.strip().split(".")[0]


def _sge_queued() -> Dict[str, str]:
    """{job id: state} of every job qstat knows (all users)."""
    res = _run(["qstat", "-u", "*"], timeout=30, env=sge_env())
    if res.returncode != 0:
        raise RuntimeError(f"qstat failed: {res.stderr.strip()}")
    jobs: Dict[str, str] = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0].isdigit():
            st = parts[4]
            prev = jobs.get(parts[0])
            # array tasks: keep an error state if any task has one
            jobs[parts[0]] = st if prev is None or "E" in st else prev
    return jobs


def sge_qacct(job_id) -> Optional[List[Dict[str, str]]]:
    """Records of `qacct -j ID` (one per task) as dicts, or None if absent."""
    res = _run(["qacct", "-j", str(job_id)], timeout=30, env=sge_env())
    if res.returncode != 0:
        return None
    records: List[Dict[str, str]] = []
    for line in res.stdout.splitlines():
        if line.startswith("====="):
            records.append({})
            continue
        key, _, val = line.partition(" ")
        if key and records:
            records[-1][key] = val.strip()
    return records or None


def _sge_outcome(records: List[Dict[str, str]]) -> JobOutcome:
    # The accounting file is appended in order; should a job number have been
    # used before (qmaster restarted without its jobseqnum file), keep only
    # the newest record of each task.
    latest = {rec.get("taskid", "undefined"): rec for rec in records}
    state, codes = "COMPLETED", []
    for rec in latest.values():
        failed = int((rec.get("failed", "0").split() or ["0"])[0])
        m = re.match(r"-?\d+", rec.get("exit_status", ""))
        code = int(m.group(0)) if m else None
        if code is not None:
            codes.append(code)
        if failed != 0 or code != 0:
            state = "FAILED"
    return JobOutcome(state, max(codes) if codes else None)


def wait_sge_jobs(job_ids: Iterable, timeout: float = 120, poll: float = 0.25
                  ) -> Dict[object, JobOutcome]:
    """Wait until `qstat` no longer lists the jobs, then read `qacct -j ID`;
    return {job_id: JobOutcome(COMPLETED|FAILED|ERROR, exit_status)}.

    FAILED means qacct's `failed` is non-zero or `exit_status` is non-zero
    (an array job: any task). A job in an error state (Eqw: e.g. its -o
    directory is missing) would wait for ever: it is reported at once as
    ("ERROR", None) and left in the queue. Raises SchedulerTimeout after
    `timeout` s.
    """
    ids = list(job_ids)
    results: Dict[object, JobOutcome] = {}
    deadline = time.monotonic() + timeout
    while True:
        queued = _sge_queued()
        waiting = {}
        for jid in ids:
            if jid in results:
                continue
            key = str(jid).split(".")[0]
            if key in queued:
                if "E" in queued[key]:
                    results[jid] = JobOutcome("ERROR", None)
                else:
                    waiting[jid] = queued[key]
                continue
            recs = sge_qacct(key)
            if recs is None:  # gone from qstat, not yet in the accounting file
                waiting[jid] = "(accounting)"
                continue
            results[jid] = _sge_outcome(recs)
        if not waiting:
            return {jid: results[jid] for jid in ids}
        if time.monotonic() >= deadline:
            raise SchedulerTimeout(f"Grid Engine jobs not finished after {timeout} s: {waiting}")
        time.sleep(poll)


# --------------------------------------------------------------------------
# PBS (OpenPBS)

PBS_EXEC = "/opt/pbs"  # where pbs_up.sh installs it (tests may point it elsewhere)
PBS_FINISHED_STATES = frozenset({"F", "X"})  # X: a finished subjob of an unfinished array
_PBS_DELETED = 91  # substate JOB_SUBSTATE_TERMINATED (qdel); 92 finished, 93 failed
_PBS_WALLTIME = -29  # Exit_status JOB_EXEC_KILL_WALLTIME


def pbs_bin(cmd: str) -> str:
    """Full path of a PBS command (``/opt/pbs/bin/CMD``)."""
    return os.path.join(PBS_EXEC, "bin", cmd)


def pbs_env(base: Optional[Dict[str, str]] = None, only_pbs: bool = False) -> Dict[str, str]:
    """`base` (default os.environ) with PBS's bin directory first on PATH and
    without SGE_ROOT/SGE_CELL, so that plain ``qsub``/``qstat``/``qdel`` (as
    cluf runs them) are PBS's.

    only_pbs: also drop every other PATH entry that holds an ``sbatch`` or a
    ``qsub`` (here /usr/bin and /bin), so that ``cluf --scheduler auto`` finds
    PBS; run Python by its full path then.
    """
    env = dict(os.environ if base is None else base)
    for k in ("SGE_ROOT", "SGE_CELL"):
        env.pop(k, None)
    pbs_dir = os.path.join(PBS_EXEC, "bin")
    rest = [d for d in env.get("PATH", "").split(os.pathsep)
            if d and os.path.realpath(d) != os.path.realpath(pbs_dir)]
    if only_pbs:
        rest = [d for d in rest
                if not any(os.access(os.path.join(d, c), os.X_OK) for c in ("sbatch", "qsub"))]
    env["PATH"] = os.pathsep.join([pbs_dir, *rest])
    return env


@functools.lru_cache(maxsize=None)
def pbs_status() -> Tuple[bool, str]:
    """(usable, reason). Cached for the session."""
    for cmd in ("qsub", "qstat", "qdel", "pbsnodes"):
        path = pbs_bin(cmd)
        if not os.access(path, os.X_OK):
            return False, f"command {path!r} not found (PBS is used from {PBS_EXEC}/bin, not PATH)"
    res, why = _probe([pbs_bin("qstat"), "--version"])
    if res is None or "pbs_version" not in res.stdout:
        return False, why or f"`qstat --version` is not PBS's: {res.stdout.strip()[:100]}"
    # qstat -B answers at once ("Connection refused") when pbs_server is down.
    res, why = _probe([pbs_bin("qstat"), "-B"])
    if res is None:
        return False, why
    res, why = _probe([pbs_bin("pbsnodes"), "-a"])
    if res is None:
        return False, why
    states = re.findall(r"^\s*state = (.*)$", res.stdout, re.M)
    if not any(not re.search(r"down|offline|unknown|stale", s) for s in states):
        return False, f"no PBS node is up (`pbsnodes -a` states: {states})"
    return True, ""


def require_pbs() -> None:
    """Skip (or fail, with CLUSTER_FUNC_REQUIRE_SCHEDULERS=1) without PBS."""
    _require(pbs_status(), "PBS")


def submit_pbs(args: Sequence[str], cwd: Optional[str] = None,
               env: Optional[Dict[str, str]] = None) -> str:
    """PBS's `qsub -f ARGS` (in `cwd`, with pbs_env(env)); returns the job id as
    qsub prints it: ``12.<server>``, ``13[].<server>`` for an array.
    (-f: no background qsub daemon is left running.)"""
    res = subprocess.run([pbs_bin("qsub"), "-f", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=60, cwd=cwd,
                         env=pbs_env(env), stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise RuntimeError(f"qsub {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout.strip()


def _pbs_short(job_id) -> str:
    """'12[].vm-pbs' -> '12[]' (the id without the server name)."""
    return str(job_id).split(".")[0]


def pbs_job_records(job_id) -> Optional[Dict[str, dict]]:
    """`qstat -x -f -F json -t ID` as {full id: attributes}: the job, or an
    array parent and its subjobs; None if PBS does not know the job."""
    res = _run([pbs_bin("qstat"), "-x", "-f", "-F", "json", "-t", str(job_id)], timeout=30)
    if res.returncode != 0:
        if "Unknown Job Id" in res.stderr:
            return None
        raise RuntimeError(f"qstat -x -f {job_id}: {res.stderr.strip()}")
    return json.loads(res.stdout, strict=False).get("Jobs", {})


def pbs_outcome(rec: dict) -> JobOutcome:
    """JobOutcome of one finished PBS job (or subjob) record."""
    code = rec.get("Exit_status")
    exit_code = None
    if isinstance(code, int) and code >= 0:
        exit_code = 128 + code - 256 if code > 256 else code
    if rec.get("substate") == _PBS_DELETED:
        # Exit_status is 271 (256 + SIGTERM) for a running job, or 0 here
        # (the mom logs "task force exited"), absent for a queued one.
        return JobOutcome("CANCELLED", exit_code if isinstance(code, int) and code > 256 else None)
    if code == _PBS_WALLTIME:
        return JobOutcome("TIMEOUT", None)
    if not isinstance(code, int) or code < 0:
        return JobOutcome("ERROR", None)
    return JobOutcome("COMPLETED" if code == 0 else "FAILED", exit_code)


def wait_pbs_jobs(job_ids: Iterable, timeout: float = 120, poll: float = 0.25
                  ) -> Dict[object, JobOutcome]:
    """Wait until the jobs are finished (``job_state`` F in ``qstat -x``);
    return {job_id: JobOutcome(COMPLETED|FAILED|TIMEOUT|CANCELLED|ERROR,
    exit code)} (see pbs_outcome).

    For an array job (``13[].host``) the outcome comes from its subjobs, as
    for Slurm: COMPLETED only if every subjob completed, else the first other
    state; exit_code is the largest. The output files are in place once a job
    is F. Raises SchedulerTimeout (listing the states) after `timeout` s.
    """
    ids = list(job_ids)
    results: Dict[object, JobOutcome] = {}
    deadline = time.monotonic() + timeout
    while True:
        pending = {}
        for jid in ids:
            if jid in results:
                continue
            recs = pbs_job_records(jid)
            if not recs:
                results[jid] = JobOutcome("UNKNOWN", None)
                continue
            short = _pbs_short(jid)
            parent = next((r for k, r in recs.items() if _pbs_short(k) == short), None)
            state = (parent or {}).get("job_state", "?")
            if state != "F":
                pending[jid] = state
                continue
            subjobs = [r for k, r in recs.items() if _pbs_short(k) != short]
            outcomes = [pbs_outcome(r) for r in subjobs
                        if r.get("job_state") in PBS_FINISHED_STATES] or [pbs_outcome(parent)]
            bad = [o.state for o in outcomes if o.state != "COMPLETED"]
            codes = [o.exit_code for o in outcomes if o.exit_code is not None]
            results[jid] = JobOutcome(bad[0] if bad else "COMPLETED", max(codes) if codes else None)
        if not pending:
            return {jid: results[jid] for jid in ids}
        if time.monotonic() >= deadline:
            raise SchedulerTimeout(f"PBS jobs not finished after {timeout} s: {pending}")
        time.sleep(poll)
