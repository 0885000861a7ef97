"""``cluf --gather``: the values of a cluf run's bins, merged into one results file.

Each bin's job exports its own results file in the jobs dir (see
:mod:`cluster_func.record.results`); this reads them all (a torn record is skipped, with a
warning) and writes one file whole, in position order, saying how many positions have no value
yet.  A file named with ``-o`` is never overwritten.
"""

import os

from ..core.bins import format_positions
from ..core.errors import UserError
from ..record import journal as journal_mod
from ..record.results import ValueNotWritable, format_of, read_records, write_records
from . import jobs, manifest
from .status import check_bin_journal


def gather(jobs_dir, out=None) -> int:
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
        m = manifest.load_manifest(path)
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
        values, missing, not_done, unknown = {}, 0, [], []
        for i in range(plan.nodes):
            bin_values = _bin_values(plan, i, jobs_dir)
            values.update(bin_values)
            job = manifest.job(m, i)
            expected = job.calls if job is not None else None
            check_bin_journal(plan.path(i, ".journal"))
            st = journal_mod.read(plan.path(i, ".journal"))
            done = st.format is not None and st.last_status == "complete"
            if not done:
                not_done.append(i)
            if expected is not None:
                missing += max(0, expected - len(bin_values))
            elif not done or st.last_failed:
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
            _say_incomplete(jobs_dir, plan.nodes, missing, not_done, unknown)
    return status


def _bin_values(plan, i, jobs_dir) -> dict:
    """The values in bin i's results file, by position (none when it has no file yet)."""
    bin_values = {}
    f = plan.path(i, ".results." + plan.results)
    if os.path.lexists(f):
        if not os.path.isfile(f):
            raise UserError(f"The results file of bin {i}, {f}, is "
                            f"{'a directory' if os.path.isdir(f) else 'not a regular file'}, so it "
                            f"holds no values that cluf can gather. Move it away (the bin's job writes a "
                            f"new one when it runs again: cluf --resubmit {jobs_dir}) and gather again.")
        try:
            for pos, value in read_records(f):
                bin_values[pos] = value
        except OSError as e:
            raise UserError(f"Cannot read the results file of bin {i}, {f}: {e.strerror or e}. Fix its "
                            f"permissions (or run cluf as the user whose jobs wrote it) and gather "
                            f"again.") from None
    return bin_values


def _say_incomplete(jobs_dir, nodes, missing, not_done, unknown):
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
    print(f"cluf: incomplete: {'; '.join(parts)}. 'cluf --status {jobs_dir}' shows the bins.")
