"""The run's manifest: its format, its lock, and the typed record of each bin's job.

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
bins stopping at once do not queue for one lock.  :func:`load_manifest` merges those records
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
import fcntl
import errno
import json
import os
import re
import shlex
import time
from typing import List, Optional

from ..core.errors import UserError
from ..core.files import replaced
from ..record import formats as results_formats
from .jobs import MANIFEST_SUFFIX, RunPlan, plan_to_dict


# --- a bin's job ------------------------------------------------------------------

_NOT_MARKED = object()  # a job record from before the journal mark


_NONE = type(None)


class _Field:
    """A job record's field: its key in the JSON, the JSON types it may have (checked by
    :func:`manifest_problem`: these fields are the only description of a job record), whether it
    must be there, and what it reads as when absent."""

    def __init__(self, key: str, types: tuple, default: object = None, required: bool = False):
        self.key, self.types, self.default, self.required = key, types, default, required

    def __get__(self, rec, owner=None):
        if rec is None:
            return self
        return rec._d.get(self.key, self.default)

    def __set__(self, rec, value):
        rec._d[self.key] = value


class JobRecord:
    """Bin i's job in the manifest (``jobs.<i>``, described above), by name.

    A view of the manifest's own dict (:meth:`from_dict`, :meth:`to_dict`): a change through
    it is a change of the manifest in hand, saved by the :func:`update_manifest` or
    :func:`update_bin` it was made under.  Keys it does not know are kept as they are."""

    __slots__ = ("_d",)

    bin = _Field("bin", (int,), required=True)
    script = _Field("script", (str,), required=True)
    id = _Field("id", (str, _NONE))
    array_id = _Field("array_id", (str, _NONE))
    resume = _Field("resume", (bool,), False)
    submitted = _Field("submitted", (str, _NONE))
    history = _Field("history", (list,), ())
    calls = _Field("calls", (int, _NONE))
    restarts = _Field("restarts", (int,), 0)
    cancelled = _Field("cancelled", (bool,), False)
    cancelled_by = _Field("cancelled_by", (str, _NONE))
    failed_reason = _Field("failed_reason", (str, _NONE))
    continue_failed = _Field("continue_failed", (str, _NONE))
    journal = _Field("journal", (dict, _NONE), _NOT_MARKED)

    def __init__(self, d: dict):
        self._d = d

    @classmethod
    def schema(cls) -> dict:
        """{key: (JSON types, required)} of every field, for the manifest's check."""
        return {f.key: (f.types, f.required) for f in vars(cls).values() if isinstance(f, _Field)}

    def __repr__(self):
        return f"JobRecord({self._d!r})"

    def mark_cancelled(self, by: str, keep_earlier=False):
        """The bin never continues: cancelled, by ``by`` (with ``keep_earlier``, a
        ``cancelled_by`` already there stays)."""
        self._d["cancelled"] = True
        if keep_earlier:
            self._d.setdefault("cancelled_by", by)
        else:
            self._d["cancelled_by"] = by

    def new_job(self, script_path: str, job_id: Optional[str], resume: bool, array_id: Optional[str],
                calls: Optional[int], journal=_NOT_MARKED):
        """A new job holds the bin: the previous one goes to the history, and the new one starts
        afresh (no cancel, no failure); ``journal`` is the bin's :func:`journal_mark` from before
        its submission."""
        job = self._d
        if job.get("id"):
            job["history"].append({"id": job["id"], "submitted": job.get("submitted")})
        job.update({"script": script_path, "id": job_id, "array_id": array_id, "resume": resume,
                    "submitted": time.strftime("%Y-%m-%dT%H:%M:%S")})
        for stale in ("cancelled", "cancelled_by", "failed_reason", "continue_failed"):
            job.pop(stale, None)
        if calls is not None:
            job["calls"] = calls
        if journal is not _NOT_MARKED:
            job["journal"] = journal


def job(manifest: dict, i: int) -> Optional[JobRecord]:
    """Bin i's job, or None when the bin was never submitted."""
    d = manifest.get("jobs", {}).get(str(i))
    return None if d is None else JobRecord(d)


def jobs_of(manifest: dict) -> List[JobRecord]:
    """The jobs of the submitted bins, in bin order."""
    return [JobRecord(d) for _, d in sorted(manifest["jobs"].items(), key=lambda kv: int(kv[0]))]


def submitted_bins(manifest: dict) -> List[int]:
    """The bins that have a job, in the manifest's order."""
    return [int(k) for k in manifest["jobs"]]


def record(manifest: dict, i: int, script_path: str, job_id: Optional[str], resume=False,
           array_id: Optional[str] = None, calls: Optional[int] = None, journal=_NOT_MARKED) -> JobRecord:
    """Record bin i's job; earlier submissions of the bin stay in its history."""
    rec = JobRecord(manifest["jobs"].setdefault(str(i), {"bin": i, "script": script_path, "history": []}))
    rec.new_job(script_path, job_id, resume, array_id, calls, journal)
    return rec


def journal_mark(path) -> Optional[dict]:
    """What the bin's journal at ``path`` is before a job of the bin is submitted: the header's
    ``created`` (None when it has none) and the file's size; None when there is no journal."""
    from ..record import journal as journal_mod

    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return None
    except OSError:
        return {"created": None, "size": 0}
    try:
        _, header = journal_mod.identify(path) if os.path.isfile(path) else (None, {})
    except OSError:
        header = {}
    created = header.get("created")
    return {"created": created if isinstance(created, (int, float)) else None, "size": size}


def journal_is_current(job: JobRecord, header: dict, size: int) -> bool:
    """Whether the bin's journal (its ``header`` and ``size`` now) holds a run of the bin's current
    job: it is another journal than the one :func:`journal_mark` saw before the job was submitted,
    or that one with more written to it since (a new run's start record, at least)."""
    mark = job.journal
    if mark is _NOT_MARKED or mark is None:
        return True
    created = header.get("created") if isinstance(header, dict) else None
    return created != mark.get("created") or size > mark.get("size", 0)


def plan_bins(manifest: dict, chosen):
    """Remember which bins a run meant to submit (so --resubmit finishes a submission that failed
    part way, but leaves alone the bins a '-b' run never meant to submit)."""
    manifest["planned"] = sorted(set(manifest.get("planned", [])) | set(chosen))


def planned_bins(manifest: dict) -> set:
    """The bins a submission meant to submit (all of them, in a manifest from before 'planned')."""
    return set(manifest.get("planned", range(manifest["nodes"])))


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
RESOURCES_SCHEMA = {name: ((int, _NONE), False) for name in ("walltime", "memory", "cpus", "gpus")}
RESOURCES_SCHEMA.update({name: ((str, _NONE), False) for name in ("queue", "account")})
JOB_SCHEMA = JobRecord.schema()


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
        mark = job.get("journal")
        if isinstance(mark, dict) and not (type(mark.get("size")) is int and mark["size"] >= 0
                                           and type(mark.get("created")) in (int, float, _NONE)):
            return f"jobs.{key}.'journal' is {json.dumps(mark)[:40]}, not a mark of the bin's journal"
    return None


_NO_FILE = object()


def _read_manifest(path):
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
    folder = bin_records_dir(path)
    try:
        return [n for n in os.listdir(folder) if n.endswith(".json") and n[:-5].isdigit()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as e:
        raise ManifestError(f"Cannot read the folder {folder}: {e.strerror or e}. It holds the latest job of each "
                            f"bin that continued past its walltime, which cluf reads with the manifest {path}. Fix "
                            f"its permissions, or run cluf as the user who submitted the run.") from None


def _record_problem(record, path, what):
    return ManifestError(f"The record {record} of a bin's latest job (beside the cluf manifest {path}) {what}. "
                         f"Without it the manifest names the bin's job before its latest continuation; move it "
                         f"away if it is not cluf's, and see where the bin stands with "
                         f"'cluf --status {shlex.quote(os.path.dirname(path) or '.')}'.")


def _merge_bin_records(path, data, bins=None):
    folder = bin_records_dir(path)
    for name in _bin_record_names(path, bins):
        record = os.path.join(folder, name)
        if os.path.lexists(record) and not os.path.isfile(record):
            raise _record_problem(record, path, "is a directory" if os.path.isdir(record) else
                                  "is not a regular file")
        try:
            with open(record, encoding="utf-8") as f:
                job = json.load(f)
        except (FileNotFoundError, ValueError, RecursionError):  # folded meanwhile (the manifest has it), or half-written
            continue
        except UnicodeDecodeError:
            raise _record_problem(record, path, "is a binary file, not JSON") from None
        except RecursionError:
            raise _record_problem(record, path, "is nested too deep to be a job record") from None
        except OSError as e:
            raise _record_problem(record, path, f"cannot be read ({e.strerror or e}; fix its permissions, or run "
                                                f"cluf as the user who submitted the run)") from None
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
    lock = path + ".lock"
    try:  # never through a symbolic link: cluf makes none here
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        what = {errno.ELOOP: "is a symbolic link", errno.EISDIR: "is a directory"}.get(
            e.errno, f"cannot be opened ({e.strerror or e})")
        raise ManifestError(f"The lock file of the cluf manifest {path}, {lock}, {what}, so cluf cannot change the "
                            f"manifest. Move it away when no cluf is working on this run (cluf makes a new one), or "
                            f"fix its permissions, or run cluf as the user who submitted the run.") from None
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


SUBMITTING_SUFFIX = ".submitting"
_SUBMITTING_TEXT = re.compile(rb"\A(cluf pid \d+\n)?\Z")


@contextlib.contextmanager
def submitting(path):
    """Held by the one cluf submitting into the manifest at PATH (see the module docstring);
    a second is refused with a UserError naming the first's pid."""
    lock = path + SUBMITTING_SUFFIX
    folder = os.path.dirname(path) or "."
    if os.path.lexists(lock) and (os.path.islink(lock) or not os.path.isfile(lock)):
        raise UserError(f"{lock} is not a lock file of cluf (it is a symbolic link, a directory or a special "
                        f"file), and cluf will not touch it. Move it away, or write the jobs elsewhere with -j DIR.")
    fd = _open_submitting(lock, folder)
    if fd is None:  # cannot even create it: writing the job scripts there fails next, and says so
        yield
        return
    try:
        try:
            text = os.pread(fd, 200, 0)
        except OSError:
            text = b""
        if not _SUBMITTING_TEXT.match(text):
            raise UserError(f"{lock} exists and is not a lock file of cluf (it holds other text), so cluf will "
                            f"neither overwrite nor remove it. Move it away, or write the jobs elsewhere with -j DIR.")
        held = _try_lock(fd)
        if held is False:
            words = text.decode("ascii", "replace").split()
            who = f"cluf pid {words[-1]}" if words and words[-1].isdigit() else "another cluf"
            raise UserError(f"Another cluf ({who}) is submitting into {folder} right now (it holds {lock}). "
                            f"Submitting the same bins beside it would run their calls twice. Wait for it to "
                            f"end, then see what it submitted with 'cluf --status {folder}'; or write this run's "
                            f"jobs elsewhere with -j DIR.")
        if held:
            try:  # the pid is for the message a second cluf gets: a full disk does not stop us here
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"cluf pid {os.getpid()}\n".encode(), 0)
            except OSError:
                pass
        yield
    finally:
        os.close(fd)


def _open_submitting(lock, folder):
    try:
        os.makedirs(folder, exist_ok=True)
        return os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EISDIR):
            raise UserError(f"{lock} is not a lock file of cluf, and cluf will not touch it. Move it away, or "
                            f"write the jobs elsewhere with -j DIR.") from None
        return None


def _try_lock(fd):
    """True: locked; False: another process holds it; None: this file system has no locks."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        return True
    except OSError as e:
        return False if e.errno in (errno.EACCES, errno.EAGAIN) else None


def update_manifest(path, plan: Optional[RunPlan], change):
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


def find_manifests(jobs_dir: str) -> List[str]:
    try:
        names = sorted(os.listdir(jobs_dir))
    except OSError:
        return []
    return [os.path.join(jobs_dir, n) for n in names if n.endswith(MANIFEST_SUFFIX)]
