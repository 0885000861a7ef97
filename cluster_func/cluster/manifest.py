"""The run's manifest: its format (documented here), reading and checking it, writing it whole,
and the per-bin records of the latest jobs.  Each bin's job is a :class:`JobRecord`
(job_record.py); the locks are in manifest_lock.py (both re-exported here).

The manifest (``<stem>-<n>.manifest.json`` in the jobs dir) is the run's record: the plan it
was written from and, per bin, its job.  It is JSON, written whole (indent 1)::

    {"script": PATH, "nodes": N, "scheduler": NAME, "jobs_dir": DIR,
     "plan": {...the RunPlan's fields, jobs.plan_to_dict...},
     "planned": [BIN, ...],          # the bins a submission meant to submit (plan_bins)
     "jobs": {"<bin>": JOB, ...}}    # the bins submitted so far

and each JOB is a :class:`JobRecord`::

    {"bin": BIN, "script": PATH,      # the job script it runs
     "id": "123" | null,              # its job id (an array task's: the scheduler's task id)
     "array_id": "120" | null,        # the array it is a task of
     "resume": BOOL,                  # its script was written to pass --resume
     "submitted": "2024-05-01T12:00:00",
     "history": [{"id": ..., "submitted": ...}, ...],   # the bin's earlier jobs
     "calls": K,                      # the calls the bin holds, when known
     "journal": {"created": T, "size": N} | null,   # the bin's journal just before this job was submitted
     "restarts": K,                   # continuations past the walltime
     "cancelled": true, "cancelled_by": WORDS,          # never continues ('cluf --cancel', or the scheduler's)
     "failed_reason": WORDS,          # why a bin that stopped at its walltime is failed
     "continue_failed": WORDS}        # the scheduler's refusal of its latest continuation

The last five are absent until they are set, and a new job of the bin (:func:`record`) drops
the cancel and the failures.

``journal`` ties the bin's journal to its current job (:func:`journal_mark`, taken before the
job is submitted): the header's ``created`` and the file's size then, or null when there was
no journal.  A journal with the same ``created`` and no more bytes is the previous
submission's, not this job's: its records say nothing about this job (:func:`journal_is_current`).
A record without the key (an older manifest) takes the journal as it is.  Only this module spells a job record's keys: everything else
reads and changes a bin's job through :class:`JobRecord` (:func:`job`, :func:`jobs_of`).

Whole rewrites go through :func:`update_manifest` under an exclusive lock.  A continuation
changes one bin only, and writes that bin's job to ``<stem>-<n>.manifest.bins/<bin>.json``
under :func:`bin_lock` instead (shared with other bins, exclusive for its own), so that 10,000
bins stopping at once do not queue for one lock.  A submission records each job the same way
(:class:`Recording`) and folds the records into the manifest once at its end, so that N jobs
cost O(N) bytes, not N whole manifests.  :func:`load_manifest` merges those records
over the manifest; :func:`update_manifest` folds them into it and removes them.

One cluf at a time submits into a manifest: :func:`submitting` holds ``<manifest>.submitting``
(lockf, byte 0; the file says ``cluf pid N``) from the check that no bin is still queued or
running until every job is recorded, so that two clufs started at the same moment (or a
``cluf --resubmit`` beside a ``cluf``) cannot both find the bins free and submit each twice.
The second is refused at once.  It is a file of its own, not ``.lock``: POSIX drops all of
a process's locks on a file when it closes any descriptor of that file, and
:func:`manifest_lock` opens and closes ``.lock`` while the submission goes on.
"""


import contextlib
import json
import os
import shlex
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar

from ..core.errors import UserError
from ..core.files import replaced
from .job_record import (_NONE, _NOT_MARKED as _NOT_MARKED, JobRecord as JobRecord, job as job, jobs_of as jobs_of,
                         journal_is_current as journal_is_current, journal_mark as journal_mark,
                         plan_bins as plan_bins, planned_bins as planned_bins, record as record,
                         submitted_bins as submitted_bins)
from ..record import formats as results_formats
from .jobs import MANIFEST_SUFFIX, RunPlan, plan_to_dict
from .manifest_lock import (SUBMITTING_SUFFIX as SUBMITTING_SUFFIX, bin_lock, manifest_lock,
                            submitting as submitting)

T = TypeVar("T")


# --- the file ---------------------------------------------------------------------


# What a manifest holds, field by field: (the types it may have, required).  Every reader goes
# through load_manifest, which checks all of it here, so that a damaged file is one clear message
# rather than an error wherever a field is first used.
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
# plan.resources are JobSpec's resource fields (schedulers/base.py), an integer or a string each
RESOURCES_SCHEMA: Dict[str, Tuple[tuple, bool]] = {name: ((int, _NONE), False)
                                                   for name in ("walltime", "memory", "cpus", "gpus")}
RESOURCES_SCHEMA.update({name: ((str, _NONE), False) for name in ("queue", "account")})
JOB_SCHEMA = JobRecord.schema()


class ManifestError(UserError):
    """A manifest that cannot be read or does not hold what cluf wrote."""


def _type_names(types: Iterable[type]) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "an object",
             _NONE: "null"}
    return " or ".join(names[t] for t in types)


_MISSING = object()


def _check_fields(d: dict, schema: Dict[str, Tuple[tuple, bool]], where: str) -> Optional[str]:
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


def manifest_problem(m: Any) -> Optional[str]:
    """What is wrong with a manifest's content (as loaded from JSON), or None."""
    from ..schedulers import SCHEDULERS

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
    unknown = sorted(set(plan.get("resources", {})) - set(RESOURCES_SCHEMA))
    if unknown:
        return f"plan.resources has {unknown[0]!r}, not one of {', '.join(sorted(RESOURCES_SCHEMA))}"
    if plan.get("results") is not None and plan["results"] not in results_formats.names():
        return f"plan.'results' is {plan['results']!r}, not jsonl or pkl"
    for i in m.get("planned", []):
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < m["nodes"]:
            return f"'planned' holds {json.dumps(i)[:40]}, not a bin from 0 to {m['nodes'] - 1}"
    for key, rec in m["jobs"].items():
        if not (key.isascii() and key.isdigit()) or int(key) >= m["nodes"]:
            return f"'jobs' has the key {key!r}, not a bin from 0 to {m['nodes'] - 1}"
        if not isinstance(rec, dict):
            return f"jobs.{key} is {json.dumps(rec)[:40]}, not an object"
        problem = _check_fields(rec, JOB_SCHEMA, f"jobs.{key}.")
        if problem:
            return problem
        if rec["bin"] != int(key):
            return f"jobs.{key}.'bin' is {rec['bin']}, not {key}"
        if not all(isinstance(h, dict) for h in rec.get("history", [])):
            return f"jobs.{key}.'history' holds something that is not an object"
        mark = rec.get("journal")
        if isinstance(mark, dict) and not (type(mark.get("size")) is int and mark["size"] >= 0
                                           and type(mark.get("created")) in (int, float, _NONE)):
            return f"jobs.{key}.'journal' is {json.dumps(mark)[:40]}, not a mark of the bin's journal"
    return None


_NO_FILE = object()


def _read_manifest(path: str) -> Tuple[Any, Optional[int]]:
    """(the manifest file's JSON, its inode), or (_NO_FILE, None) when there is no file; a file that
    cannot be read or is not JSON is a ManifestError saying what is wrong and what to do."""
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):  # a FIFO blocks a read
        raise ManifestError(f"{path} is not a regular file, so not a cluf manifest. " + _manifest_fix(path))
    if os.path.islink(path) and not os.path.exists(path):
        raise ManifestError(f"The cluf manifest {path} is a symbolic link to {os.readlink(path)}, which does not "
                            f"exist (moved or deleted?). " + _manifest_fix(path))
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
    except (ValueError, RecursionError) as e:  # (RecursionError: nested too deep)
        raise ManifestError(f"The cluf manifest {path} is not valid JSON ({e}; cut short, or edited by "
                            f"hand?). " + _manifest_fix(path)) from None


def load_manifest(path: str, bins: Optional[Iterable[int]] = None) -> Optional[dict]:
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


def _manifest_fix(path: str, m: Any = None) -> str:
    script: str = m["script"] if isinstance(m, dict) and isinstance(m.get("script"), str) else "SCRIPT"
    nodes = m.get("nodes") if isinstance(m, dict) and isinstance(m.get("nodes"), int) else "N"
    return (f"cluf writes this file when it submits a run and reads it for --status, --resubmit, --cancel, "
            f"--gather and --wait. Restore it if you have a copy; otherwise move it away and submit the run "
            f"again with 'cluf {shlex.quote(script)} -n {nodes} -j {shlex.quote(os.path.dirname(path) or '.')} "
            f"--resume' (with your other options): the bins' journals are kept, so --resume skips the calls "
            f"they record as completed.")


def bin_records_dir(path: str) -> str:
    """``<stem>-<n>.manifest.bins``: one ``<bin>.json`` per bin changed since the last fold."""
    return path[:-len(".json")] + ".bins" if path.endswith(".json") else path + ".bins"


def _bin_record_names(path: str, bins: Optional[Iterable[int]] = None) -> List[str]:
    if bins is not None:
        return [f"{i}.json" for i in bins]
    folder = bin_records_dir(path)
    try:
        return [n for n in os.listdir(folder) if n.endswith(".json") and n[:-5].isdigit()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as e:
        raise ManifestError(f"Cannot read the folder {folder}: {e.strerror or e}. It holds the latest job of each "
                            f"bin that continued past its walltime, which cluf reads with the manifest {path}. Fix "
                            f"its permissions, or run cluf as the user who submitted the run.") from None


def _record_problem(record: str, path: str, what: str) -> ManifestError:
    return ManifestError(f"The record {record} of a bin's latest job (beside the cluf manifest {path}) {what}. "
                         f"Without it the manifest names the bin's job before its latest continuation; move it "
                         f"away if it is not cluf's, and see where the bin stands with "
                         f"'cluf --status {shlex.quote(os.path.dirname(path) or '.')}'.")


def _merge_bin_records(path: str, data: dict, bins: Optional[Iterable[int]] = None) -> None:
    folder = bin_records_dir(path)
    for name in _bin_record_names(path, bins):
        record = os.path.join(folder, name)
        if os.path.lexists(record) and not os.path.isfile(record):
            raise _record_problem(record, path, "is a directory" if os.path.isdir(record) else
                                  "is not a regular file")
        try:
            with open(record, encoding="utf-8") as f:
                job = json.load(f)
        except FileNotFoundError:  # folded meanwhile: the manifest has it
            continue
        except UnicodeDecodeError:  # (before ValueError, of which it is a kind)
            raise _record_problem(record, path, "is a binary file, not JSON") from None
        except ValueError as e:  # written whole (temp file, rename) by cluf: so damaged since, or not cluf's
            raise _record_problem(record, path, f"is not valid JSON ({e})") from None
        except RecursionError:
            raise _record_problem(record, path, "is nested too deep to be a job record") from None
        except OSError as e:
            raise _record_problem(record, path, f"cannot be read ({e.strerror or e}; fix its permissions, or run "
                                                f"cluf as the user who submitted the run)") from None
        if isinstance(data.get("jobs"), dict) and isinstance(job, dict):
            data["jobs"][name[:-5]] = job


def save_manifest(path: str, data: dict) -> None:
    """Write the manifest whole (temp file, then rename).  Hold :func:`manifest_lock` around
    the read-change-write, as :func:`update_manifest` does: jobs continuing themselves, cluf
    and ``cluf --wait`` may update one manifest at the same moment."""
    with replaced(path) as f:
        json.dump(data, f, indent=1)
        f.write("\n")


def update_manifest(path: str, plan: Optional[RunPlan], change: Callable[[dict], T]) -> T:
    """Load (or start, from ``plan``) the manifest, apply ``change(manifest)``, save; all under
    the lock.  The per-bin records are folded in (then removed).  Returns what ``change``
    returned."""
    with manifest_lock(path):
        m = load_manifest(path)
        if m is None:
            if plan is None:  # (a cancel: the manifest went away since it was read)
                raise ManifestError(f"The cluf manifest {path} is gone (moved or deleted meanwhile), so cluf "
                                    f"cannot record this change. Restore it, or see what is left with "
                                    f"'cluf --status {shlex.quote(os.path.dirname(path) or '.')}'.")
            m = new_manifest(plan)
        result = change(m)
        save_manifest(path, m)
        folder = bin_records_dir(path)
        for name in _bin_record_names(path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))
        return result


def update_bin(path: str, i: int, change: Callable[[dict], T]) -> T:
    """Apply ``change(manifest)``, which changes bin i's job only, under :func:`bin_lock`;
    the bin's job is written to its record (not the manifest).  Returns what ``change``
    returned."""
    with bin_lock(path, i):
        m = load_manifest(path, bins=[i])
        if m is None:
            raise FileNotFoundError(f"no cluf manifest at {path}")
        before = json.dumps(m["jobs"].get(str(i)), sort_keys=True)
        result = change(m)
        if json.dumps(m["jobs"].get(str(i)), sort_keys=True) != before:
            _write_bin_records(path, m, [i])
        return result


def _write_bin_records(path: str, m: dict, bins: Iterable[int]) -> None:
    """Write the jobs of ``bins`` in ``m`` to their per-bin records (whole: temp file, rename)."""
    folder = bin_records_dir(path)
    os.makedirs(folder, exist_ok=True)
    for i in bins:
        job = m["jobs"].get(str(i))
        if job is not None:
            with replaced(os.path.join(folder, f"{i}.json")) as f:
                json.dump(job, f)


class Recording:
    """How one cluf submission records its jobs in the manifest at ``path``, as a ``record_with``
    of dispatch.py: ``recording(change)`` changes the whole manifest (:func:`update_manifest`),
    ``recording(change, bins=B)`` a change of the jobs of the consecutive bins ``B`` only.

    The latter costs what those bins cost, not the manifest: under :func:`bin_lock` of the bins
    (so no whole rewrite meanwhile), it applies ``change`` to a copy of the manifest kept from
    the last read (read again only when the file was replaced since) with the bins' records
    merged, and writes the bins' jobs to their per-bin records, as a continuation does.  So a
    submission of N jobs writes O(N) bytes, not N whole manifests, and each job is on disk
    before the next is submitted.  :meth:`fold` (at the end of its ``with`` block, also after a
    refusal) folds the records into the manifest once."""

    def __init__(self, path: str, plan: Optional[RunPlan]) -> None:
        self.path, self.plan = path, plan
        self._copy: Optional[dict] = None
        self._inode: Optional[int] = None

    def __call__(self, change: Callable[[dict], T], bins: Optional[Sequence[int]] = None) -> T:
        if bins:
            with bin_lock(self.path, min(bins), max(bins) - min(bins) + 1):
                m = self._current()
                if m is not None:  # (else no manifest yet: the whole change below makes it)
                    _merge_bin_records(self.path, m, bins)
                    result = change(m)
                    _write_bin_records(self.path, m, bins)
                    return result
        self._copy = None
        return update_manifest(self.path, self.plan, change)

    def __enter__(self) -> "Recording":
        return self

    def __exit__(self, *exc: object) -> None:
        self.fold()

    def _current(self) -> Optional[dict]:
        """The manifest without its per-bin records (the caller merges those it needs)."""
        try:
            inode: Optional[int] = os.stat(self.path).st_ino
        except FileNotFoundError:
            inode = None
        if self._copy is None or inode != self._inode:
            self._copy = None if inode is None else load_manifest(self.path, bins=[])
            self._inode = inode
        return self._copy

    def fold(self) -> None:
        """Fold the per-bin records into the manifest (one whole rewrite).  A fold that cannot be
        written (a full disk) leaves the records, which every reader merges and the next whole
        change folds."""
        self._copy = None
        if os.path.exists(self.path):
            with contextlib.suppress(OSError):
                update_manifest(self.path, self.plan, lambda m: None)


def new_manifest(plan: RunPlan) -> dict:
    return {"script": plan.script, "nodes": plan.nodes, "scheduler": plan.scheduler.name,
            "jobs_dir": plan.jobs_dir, "plan": plan_to_dict(plan), "jobs": {}}


def find_manifests(jobs_dir: str) -> List[str]:
    try:
        names = sorted(os.listdir(jobs_dir))
    except OSError:
        return []
    return [os.path.join(jobs_dir, n) for n in names if n.endswith(MANIFEST_SUFFIX)]
