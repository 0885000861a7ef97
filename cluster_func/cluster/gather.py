"""``cluf --gather``: the values of a cluf run's bins, merged into one results file.

Each bin's job exports its own results file in the jobs dir (see
:mod:`cluster_func.record.results`); this reads those of the bins' current jobs, checked as
:func:`_bin_values` says (a damaged file is named and its values left out), and writes one file
whole, in position order, saying how many positions have no value yet (and, in round-robin
binning, which).  A file named with ``-o`` is never overwritten.
"""

from __future__ import annotations

import os
import shlex
import sys
import warnings
import zlib
from typing import TYPE_CHECKING, Any, Sequence

from ..core.bins import format_positions
from ..core.errors import UserError
from ..record.results import TornRecords, ValueNotWritable, format_of, read_records, write_records
from . import jobs, manifest
from .jobs import ARRAY_BIN_VAR
from .status import check_bin_journal, current_journal, load_run

if TYPE_CHECKING:
    from ..record.journal import JournalState


def gather(jobs_dir: str | None, out: str | None = None) -> int:
    """Merge the results files of a cluf run's bins into one file in position order; say how
    many positions have no value (bins not done, calls failed).  Exit status 1 if any."""
    jobs_dir = os.path.abspath(jobs_dir or os.getcwd())
    manifests = manifest.find_manifests(jobs_dir)
    if not manifests:
        raise UserError(f"No cluf run in {jobs_dir}: there is no *{manifest.MANIFEST_SUFFIX} file there. Give the "
                        f"jobs dir of a run submitted with --results.")
    if out is not None and len(manifests) > 1:
        raise UserError(f"{jobs_dir} holds {len(manifests)} cluf runs; -o names one output file: gather "
                        f"without -o (one file per run) or give a jobs dir with one run.")
    status = 0
    for path in manifests:
        m = load_run(path)
        plan = jobs.plan_from_dict(m["plan"])
        if not plan.results:
            raise UserError(f"The run {path} was submitted without --results, so its jobs kept no values. "
                            f"Submit it with --results jsonl (or pkl) to collect them.")
        target = os.path.abspath(out) if out else path[:-len(manifest.MANIFEST_SUFFIX)] + ".results." + plan.results
        format_of(target)
        if out and os.path.lexists(target):
            raise UserError(f"cluf --gather -o {out}: that file exists, and --gather never overwrites a file "
                            f"named with -o (it may be yours). Remove it first, or name a new file with -o; "
                            f"without -o the merged file goes to the jobs dir, replaced at each --gather.")
        values: dict[int, Any] = {}
        missing, not_done, unknown, lacking = 0, [], [], []
        for i in range(plan.nodes):
            job = manifest.job(m, i)
            expected = job.calls if job is not None else None
            check_bin_journal(plan.path(i, ".journal"))
            st = current_journal(job, plan.path(i, ".journal")) if job is not None else None
            bin_values = _bin_values(plan, i, jobs_dir, job, st)
            values.update(bin_values)
            done = st is not None and st.format is not None and st.last_status == "complete"
            if not done:
                not_done.append(i)
            if expected is not None:
                missing += max(0, expected - len(bin_values))
                if _mode(st) == "round-robin":
                    lacking += [p for p in range(i, i + expected * plan.nodes, plan.nodes) if p not in bin_values]
            elif not done or st.last_failed:  # type: ignore[union-attr]  # (done: st is not None)
                unknown.append(i)
        try:
            n = write_records(target, ((p, values[p]) for p in sorted(values)))
        except ValueNotWritable as e:
            raise UserError(f"Cannot write {target}: {e}. Gather into a .pkl file with -o.") from None
        except OSError as e:
            raise UserError(f"Cannot write {target}: {e.strerror}.") from None
        print(f"cluf: gathered {n} values of {m['script']} into {target}.")
        if missing or unknown or not_done:
            status = 1
            _say_incomplete(jobs_dir, plan.nodes, missing, not_done, unknown, lacking)
    return status


def _mode(st: JournalState | None) -> str:
    """The binning of a bin's journal (round-robin when it does not say)."""
    mode = st.header.get("mode") if st is not None else None
    return mode if isinstance(mode, str) else "round-robin"


def _warn(text: str) -> None:
    print(f"cluf: warning: {text}", file=sys.stderr)


def _bin_values(plan: jobs.RunPlan, i: int, jobs_dir: str, job: manifest.JobRecord | None,
                st: JournalState | None) -> dict:
    """The values in bin i's results file, by position: none when it has no file yet, when the
    file is not one the bin's current job wrote (``st`` is its journal, None when the journal
    holds no run of that job), or when the file is damaged (said, naming the bin and the file).

    What is checked, as ``clum --resume`` checks its journal: the file's bytes are those whose
    size and CRC-32 the journal's last export record of the current job gives; every record
    parses; every position is one of the bin's (round-robin: position % bins == bin) and comes
    once."""
    f = plan.path(i, ".results." + plan.results)  # type: ignore[operator]  # (gather: a run with --results)
    if not os.path.lexists(f):
        return {}
    if not os.path.isfile(f):
        raise UserError(f"The results file of bin {i}, {f}, is "
                        f"{'a directory' if os.path.isdir(f) else 'not a regular file'}, so it "
                        f"holds no values that cluf can gather. Move it away (the bin's job writes a "
                        f"new one when it runs again: cluf --resubmit {jobs_dir}) and gather again.")
    if st is None:  # the bin's current job has not run: the file is an earlier submission's
        return {}
    try:
        with open(f, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise UserError(f"Cannot read the results file of bin {i}, {f}: {e.strerror or e}. Fix its "
                        f"permissions (or run cluf as the user whose jobs wrote it) and gather "
                        f"again.") from None
    exports = [e for e in st.exports
               if manifest.journal_is_current(job, st.header, e.get("offset", 0) + 1)]  # type: ignore[arg-type]
    rewrite = (f"Move it away and run the bin's job script again ('{_by_hand(job, i)}': it resumes, runs "  # type: ignore[arg-type]
               f"only the calls its journal does not record as completed and writes the file again from the "
               f"journal), then gather again")
    if not exports:
        _warn(f"bin {i}: {f} is not a results file of the bin's current job (its journal "
              f"{plan.path(i, '.journal')} records no export of it), so its values are left out. {rewrite}.")
        return {}
    last = exports[-1]
    crc = last.get("crc")
    same = len(data) == last["size"] and (f"{zlib.crc32(data):08x}" == crc if isinstance(crc, str)
                                          else os.stat(f).st_mtime_ns == last["mtime_ns"])
    if not same:
        _warn(f"bin {i}: {f} is not the file its job wrote: its {len(data)} bytes differ from those its journal "
              f"{plan.path(i, '.journal')} records ({last['size']} bytes"
              f"{', CRC-32 ' + crc if isinstance(crc, str) else ''}): changed or damaged since, so its values "
              f"are left out. {rewrite}.")
        return {}
    return _checked_records(plan, i, f, st, rewrite)


def _checked_records(plan: jobs.RunPlan, i: int, f: Any, st: JournalState | None, rewrite: str) -> dict:
    """The records of bin i's results file ``f`` by position, each a position of the bin, once;
    none when one is not (said)."""
    bin_values = {}
    round_robin = _mode(st) == "round-robin"
    with warnings.catch_warnings(record=True) as torn:
        warnings.simplefilter("always", TornRecords)
        for pos, value in read_records(f):
            if round_robin and pos % plan.nodes != i:
                why = f"position {pos} is not one of bin {i}'s (round-robin: position % {plan.nodes} is {i})"
            elif pos in bin_values:
                why = f"position {pos} is in it twice"
            else:
                bin_values[pos] = value
                continue
            _warn(f"bin {i}: {f} is damaged: {why}, so its values are left out. {rewrite}.")
            return {}
    if torn:
        _warn(f"bin {i}: {f} is damaged: {torn[0].message}; its values are left out. {rewrite}.")
        return {}
    return bin_values


def _by_hand(job: manifest.JobRecord, i: int) -> str:
    """How to run bin i's job script by hand."""
    if job.array_id is not None:
        return f"{ARRAY_BIN_VAR}={i} bash {shlex.quote(job.script)}"
    return f"bash {shlex.quote(job.script)}"


def _say_incomplete(jobs_dir: str, nodes: int, missing: int, not_done: list[int], unknown: list[int],
                    lacking: Sequence[int] = ()) -> None:
    """Say what a gathered run lacks: positions without a value, bins not done, bins whose call
    count is not known."""
    parts = []
    if missing:
        parts.append(f"{missing} positions have no value (calls not done or failed)")
    if not_done:
        parts.append(f"bins {format_positions(not_done)} of {nodes} are not done")
    if unknown:
        parts.append(f"the call count of bins {format_positions(unknown)} is not known, so what "
                     f"they lack is not counted")
    if lacking:
        shown = format_positions(sorted(lacking)[:LIST_AT_MOST]).replace(",", ", ")
        more = len(lacking) - LIST_AT_MOST
        parts.append(f"the positions without a value: {shown}" + (f" and {more} more" if more > 0 else ""))
    print(f"cluf: incomplete: {'; '.join(parts)}. 'cluf --status {jobs_dir}' shows the bins.")


LIST_AT_MOST = 50  # positions listed by name; the rest are counted
