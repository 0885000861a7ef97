"""Each bin's job in the run's manifest, as a :class:`JobRecord` (the format is documented in
manifest.py): its fields, a new job of the bin (the earlier ones go to its history), the mark of
the bin's journal before a job is submitted, and the bins a submission meant to submit."""

from __future__ import annotations

import os
import time
from typing import Any, Iterable, List, Optional


_NOT_MARKED = object()  # a job record from before the journal mark


_NONE = type(None)


class _Field:
    """A job record's field: its key in the JSON, the JSON types it may have (checked by
    :func:`manifest_problem`: these fields are the only description of a job record), whether it
    must be there, and what it reads as when absent."""

    def __init__(self, key: str, types: tuple, default: object = None, required: bool = False) -> None:
        self.key, self.types, self.default, self.required = key, types, default, required

    def __get__(self, rec: JobRecord | None, owner: type | None = None) -> Any:
        if rec is None:
            return self
        return rec._d.get(self.key, self.default)

    def __set__(self, rec: JobRecord, value: Any) -> None:
        rec._d[self.key] = value


class JobRecord:
    """Bin i's job in the manifest (``jobs.<i>``, described above), by name.

    A view of the manifest's own dict (``JobRecord(manifest["jobs"][str(i)])``): a change through
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

    def __init__(self, d: dict) -> None:
        self._d = d

    @classmethod
    def schema(cls) -> dict:
        """{key: (JSON types, required)} of every field, for the manifest's check."""
        return {f.key: (f.types, f.required) for f in vars(cls).values() if isinstance(f, _Field)}

    def __repr__(self) -> str:
        return f"JobRecord({self._d!r})"

    def mark_cancelled(self, by: str, keep_earlier: bool = False) -> None:
        """The bin never continues: cancelled, by ``by`` (with ``keep_earlier``, a
        ``cancelled_by`` already there stays)."""
        self._d["cancelled"] = True
        if keep_earlier:
            self._d.setdefault("cancelled_by", by)
        else:
            self._d["cancelled_by"] = by

    def new_job(self, script_path: str, job_id: Optional[str], resume: bool, array_id: Optional[str],
                calls: Optional[int], journal: Any = _NOT_MARKED) -> None:
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


def record(manifest: dict, i: int, script_path: str, job_id: Optional[str], resume: bool = False,
           array_id: Optional[str] = None, calls: Optional[int] = None, journal: Any = _NOT_MARKED) -> JobRecord:
    """Record bin i's job; earlier submissions of the bin stay in its history."""
    rec = JobRecord(manifest["jobs"].setdefault(str(i), {"bin": i, "script": script_path, "history": []}))
    rec.new_job(script_path, job_id, resume, array_id, calls, journal)
    return rec


def journal_mark(path: str) -> Optional[dict]:
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


def plan_bins(manifest: dict, chosen: Iterable[int]) -> None:
    """Remember which bins a run meant to submit (so --resubmit finishes a submission that failed
    part way, but leaves alone the bins a '-b' run never meant to submit)."""
    manifest["planned"] = sorted(set(manifest.get("planned", [])) | set(chosen))


def planned_bins(manifest: dict) -> set:
    """The bins a submission meant to submit (all of them, in a manifest from before 'planned')."""
    return set(manifest.get("planned", range(manifest["nodes"])))
