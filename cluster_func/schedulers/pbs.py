"""PBS Professional / OpenPBS and Torque: ``#PBS`` directives, ``qsub``, ``qstat``, ``qdel``.

Which of the two ``qsub`` is, is read from ``qstat --version`` (``pbs_version = ...``
for PBS Professional/OpenPBS, ``Version: 6...`` for Torque), or from
``CLUF_PBS_FLAVOUR=torque|pro``.  Without either (scripts written away from the
cluster), PBS Professional.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shlex
from typing import Dict, Mapping, Optional

from ..core.errors import SchedulerError
from .base import (ASK_TIMEOUT, CANCELLED, CONFIG_TIMEOUT, PREEMPTED, QUEUED, REQUEUED, WALLTIME, StopVerdict,
                   RUNNING, CommandFailed, JobSpec, Scheduler, hms, lines_all_match,
                   register, run)

# pbs_options names that are not "-l" resources.
_SPECIAL = {"name": "-N", "stdout": "-o", "stderr": "-e", "queue": "-q"}
_PATHS = ("stdout", "stderr")
# qstat states: R running, E exiting, B an array that has begun; C (Torque's completed), F
# (finished, qstat -x) and X (a finished subjob) are gone; anything else (Q, H, W, T, S...) waits.
_RUNNING_STATES = {"R", "E", "B"}
_FINISHED_STATES = {"C", "F", "X"}
PRO_MAX_ARRAY_SIZE = 10000  # PBS Professional's default max_array_size


def is_torque_version(text: str) -> bool:
    """Does ``qstat --version`` say Torque ('Version: 6.1.2') rather than PBS Professional
    ('pbs_version = 23.06.06')?"""
    return "pbs_version" not in text and "Version:" in text


def _is_torque() -> bool:
    flavour = os.environ.get("CLUF_PBS_FLAVOUR")
    if flavour:
        return flavour.lower() == "torque"
    try:
        text = run(["qstat", "--version"], timeout=10, merge_stderr=True)
    except CommandFailed as e:
        text = e.output
    except SchedulerError:  # no qstat here: writing scripts away from the cluster
        return False
    return is_torque_version(text)


def short_id(job_id: str) -> str:
    """'12[3].server.domain' -> '12[3]': the id without the server name."""
    return job_id.split(".", 1)[0]


def array_parent(job_id: str) -> str:
    """'12[3].server' -> '12[].server' (other ids unchanged)."""
    return re.sub(r"\[\d+\]", "[]", job_id, count=1)


def parse_qstat_json(text: str) -> Dict[str, str]:
    """{job id: job_state} from ``qstat -f -F json``.  Falls back to reading the lines
    when the JSON does not parse (some PBS versions do not escape every value)."""
    try:
        jobs = json.loads(text, strict=False).get("Jobs") or {}
        return {k: v.get("job_state", "") for k, v in jobs.items() if isinstance(v, dict)}
    except ValueError:
        pass
    states, current = {}, None
    for line in text.splitlines():
        m = re.match(r'\s*"(\d+(?:\[\d*\])?(?:\.[^"]*)?)"\s*:\s*\{\s*$', line)
        if m:
            current = m.group(1)
            continue
        m = re.match(r'\s*"job_state"\s*:\s*"(\w)"', line)
        if m and current:
            states[current] = m.group(1)
            current = None
    return states


def parse_qstat_columns(text: str) -> Dict[str, str]:
    """{job id as printed: state letter} from the column output of ``qstat`` or ``qstat -u``
    (Torque, or PBS Professional without -f)."""
    states = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts or not parts[0][:1].isdigit():
            continue
        # qstat -u: Job ID, Username, Queue, Jobname, SessID, NDS, TSK, Memory, Time, S, Time;
        # qstat: Job id, Name, User, Time Use, S, Queue.
        states[parts[0]] = parts[-2] if len(parts) >= 10 else parts[4] if len(parts) > 4 else "Q"
    return states


def parse_max_array_size(text: str, torque: bool) -> Optional[int]:
    """``max_array_size`` (Torque: ``max_job_array_size``) from ``qstat -Bf`` or
    ``qmgr -c 'print server'``; PBS Professional's default when it is not set."""
    m = re.search(r"^\s*(?:set server\s+)?max_(?:job_)?array_size\s*=\s*(\d+)", text, re.M)
    if m:
        return int(m.group(1)) or None
    return None if torque else PRO_MAX_ARRAY_SIZE


def parse_stop(text: str) -> Optional[StopVerdict]:
    """Why a job that got SIGTERM is stopped, from ``qstat -f ID``: requeued for
    ``Exit_status=-11`` (JOB_EXEC_RERUN: qrerun, a node failure, preemption by requeue) or the
    rerun substates 60-63 (JOB_SUBSTATE_RERUN..RERUN3 in PBS's job.h, seen before Exit_status is
    set); walltime for -29 (JOB_EXEC_KILL_WALLTIME); preempted when the comment says so; else
    cancelled."""
    fields = dict(re.findall(r"^\s*([\w.]+) = (.*)$", text, re.M))
    if not fields:
        return None
    status, comment = fields.get("Exit_status"), fields.get("comment", "")
    said = f"PBS: job_state={fields.get('job_state')}, substate={fields.get('substate')}, Exit_status={status}"
    if status == "-11" or fields.get("substate") in ("60", "61", "62", "63"):
        return StopVerdict(REQUEUED, f"rerun by PBS (qrerun, a node failure or a preemption; {said})")
    if status == "-29":
        return StopVerdict(WALLTIME, said)
    if "preempt" in comment.lower():
        return StopVerdict(PREEMPTED, f"preempted ({said}, comment: {comment})")
    return StopVerdict(CANCELLED, f"qdel or an administrator ({said}; PBS does not say who)")


def pbs_command(name: str, env: Mapping[str, str]) -> str:
    """The PBS command ``name`` from PBS_EXEC in /etc/pbs.conf (a job's PATH may find another
    scheduler's qstat first), else from PATH."""
    try:
        with open(env.get("PBS_CONF_FILE") or "/etc/pbs.conf", encoding="utf-8") as f:
            m = re.search(r"^PBS_EXEC=(.+)$", f.read(), re.M)
        if m and os.access(os.path.join(m.group(1).strip(), "bin", name), os.X_OK):
            return os.path.join(m.group(1).strip(), "bin", name)
    except (OSError, UnicodeDecodeError):
        pass
    return name


@register
class PBS(Scheduler):
    name = "pbs"
    title = "PBS"
    extension = ".pbs"
    prefix = "#PBS"
    submit_command = "qsub"
    options_short = "-o"
    options_help = ("raw PBS directives: each becomes '#PBS -l K=V', except name, stdout, stderr, queue, ppn "
                    "(-N, -o, -e, -q, -l nodes=1:ppn=N). Example: -o mem=4gb,ppn=8")
    detect_order = 30
    detect_hint = "qsub without SGE_ROOT means pbs (Torque when qstat --version says so)"
    detect_fallback = True
    # PBS Professional sets PBS_ARRAY_INDEX, Torque PBS_ARRAYID; the script reads either.
    array_index_var = "PBS_ARRAY_INDEX"
    array_first_index = 0
    job_id_var = "PBS_JOBID"

    def stop_verdict(self, env: Mapping[str, str]) -> Optional[StopVerdict]:
        qstat, job = pbs_command("qstat", env), env[self.job_id_var]
        try:
            text = run([qstat, "-f", job], timeout=ASK_TIMEOUT, env=env)
        except SchedulerError:
            # a job being deleted may already be history ("Job has finished, use -x"): then ask with
            # -x (PBS Professional's history; Torque has none, and its -x means XML)
            text = run([qstat, "-x", "-f", job], timeout=ASK_TIMEOUT, env=env)
        return parse_stop(text)
    appends_output = False  # each job's -o/-e replace the files: the job script appends itself

    _torque = None

    @property
    def torque(self) -> bool:
        if self._torque is None:
            self._torque = _is_torque()
        return self._torque

    @property
    def max_running_note(self) -> str | None:  # type: ignore[override]
        return None if self.torque else "PBS Professional has no limit on the running subjobs of one array"

    def directives(self, job: JobSpec) -> list[str]:
        # No -V: the submitting environment is not exported (only PBS_O_* variables).
        # Paths are shell-quoted: qsub refuses a directive path with a space unless it is
        # quoted ("qsub: directive error"), and reads quoted words (checked on OpenPBS 23.06).
        # -r y: rerunnable (qrerun, a node failure: the rerun resumes the bin).
        d = [f"-N {job.name}", f"-o {shlex.quote(job.stdout)}", f"-e {shlex.quote(job.stderr)}", "-S /bin/bash",
             "-r y"]
        if job.walltime:
            d.append(f"-l walltime={hms(job.walltime)}")
        if job.memory:
            d.append(f"-l mem={job.memory}mb")
        if job.gpus:
            d.append(self._gpu_directive(job))
        elif job.cpus:
            d.append(f"-l nodes=1:ppn={job.cpus}")
        if job.queue:
            d.append(f"-q {job.queue}")
        if job.account:
            d.append(f"-A {job.account}")
        if job.array:
            d.append(self._array_directive(job.array, job.max_running))
        for k, v in job.raw.items():
            if k == "ppn" and job.gpus:
                continue  # in the GPU line already
            if k in _SPECIAL or k == "ppn":
                # These replace the line cluf writes itself: one -N, -o, -e, -q, nodes=1:ppn.
                value = shlex.quote(v) if k in _PATHS and v else v
                head, line = (("-l nodes=", f"-l nodes=1:ppn={v}") if k == "ppn"
                              else (_SPECIAL[k] + " ", f"{_SPECIAL[k]} {value}"))
                at = next((n for n, x in enumerate(d) if x.startswith(head)), None)
                if at is None:
                    d.append(line)
                else:
                    d[at] = line
            else:
                d.append(f"-l {k}" if v is None else f"-l {k}={v}")
        return d

    def _gpu_directive(self, job: JobSpec) -> str:
        """GPUs and cores on one node: Torque's nodes=1:ppn=C:gpus=N; PBS Professional's select
        statement (which may not be mixed with nodes=)."""
        cpus = job.raw.get("ppn") or job.cpus or 1
        if self.torque:
            return f"-l nodes=1:ppn={cpus}:gpus={job.gpus}"
        return f"-l select=1:ncpus={cpus}:ngpus={job.gpus}"

    def _array_directive(self, count: int, max_running: int | None) -> str:
        if self.torque:  # Torque: -t 0-N%K
            return (f"-t 0-{count - 1}" + (f"%{max_running}" if max_running else "")) if count > 1 else "-t 0"
        # PBS Professional refuses a one-element range ("illegal -J value" for 0-0 or 5-5);
        # 0-1:2 is a one-subjob array (index 0) that it accepts.
        return f"-J 0-{count - 1}" if count > 1 else "-J 0-1:2"

    def array_index_expr(self) -> str:
        return "${PBS_ARRAY_INDEX:-${PBS_ARRAYID:-}}"

    def task_id(self, array_id: str, index: int) -> str:
        return array_id.replace("[]", f"[{index}]", 1)

    def max_array_size(self) -> int | None:
        try:
            text = run(["qstat", "-Bf"], timeout=CONFIG_TIMEOUT)
        except SchedulerError:
            text = ""
        return parse_max_array_size(text, self.torque)

    def submit_argv(self, script_path: str) -> list[str]:
        return ["qsub", script_path]

    def parse_job_id(self, stdout: str) -> str | None:
        # "1234.server" (PBS Pro, Torque), "1234[].server" for an array.
        m = re.search(r"^(\d+(?:\[\])?(?:\.[\w.-]+)?)\s*$", stdout.strip(), re.M)
        return m.group(1) if m else None

    def query_argv(self, job_ids: list[str]) -> list[str]:
        if self.torque:
            # Torque has no JSON: the columns, subjobs one per line (-t), of this user's jobs.
            return ["qstat", "-t", "-u", getpass.getuser()]
        # Full ids (the default columns truncate them), finished jobs too (-x: not an error
        # but state F), subjobs (-t: an array's parent id lists them all).
        return ["qstat", "-x", "-t", "-f", "-F", "json", *dict.fromkeys(array_parent(j) for j in job_ids)]

    def query_failure_ok(self, error: CommandFailed) -> bool:
        # qstat exits 153 when one of the ids is no longer known (history purged) but prints
        # the others.
        return (error.stdout.lstrip().startswith("{")
                and lines_all_match(error.stderr, [], [r"Unknown Job Id", r"Job has finished"]))

    def parse_query(self, text: str, job_ids: list[str]) -> dict[str, str]:
        listed = parse_qstat_json(text) if text.lstrip().startswith("{") else parse_qstat_columns(text)
        by_short: dict[str, str] = {}
        for jid, s in listed.items():
            by_short.setdefault(short_id(jid), s)
        states = {}
        for j in job_ids:
            # The full id as qsub printed it; else the same number on another spelling of the server.
            state = listed.get(j) or by_short.get(short_id(j))
            if state and state not in _FINISHED_STATES:
                states[j] = RUNNING if state in _RUNNING_STATES else QUEUED
        return states

    def cancel_argv(self, job_ids: list[str]) -> list[str]:
        return ["qdel", *job_ids]

    def cancel_finished(self, text: str) -> bool:
        # A job that is ending (state E): "Request invalid for state of job" (exit 168); one
        # that has finished: "Job has finished" (35); one whose history is gone: "Unknown Job Id".
        return lines_all_match(text, [], [r"Request invalid for state of job", r"Job has finished",
                                          r"Unknown Job Id"])
