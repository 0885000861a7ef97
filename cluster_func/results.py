"""Collected return values: ``clum --results PATH`` and ``cluster_func.read_results``.

A results file holds one record per completed call: its position in ``args`` and what
``target`` returned.  The format comes from the file name:

``.jsonl``  JSON Lines, one ``{"pos": 17, "value": 0.93}`` a line (``pandas.read_json(PATH,
            lines=True)`` reads it).  Tuples become lists; NumPy scalars and arrays become
            numbers and lists (anything with ``tolist()``); a value JSON cannot hold makes
            that call fail, with its type named (never a silent ``repr``).
``.pkl``    a stream of pickles, each a tuple ``(pos, value)`` (load them one by one with
            ``pickle.load`` until EOFError), for values JSON cannot hold.

Workers turn values into records (the main process only writes bytes and never holds a
value).  A batch's records are written before the journal records the batch as completed,
so every call the journal says is complete has its value in the file; a call in flight when
a run was killed may be written twice (it runs again on ``--resume``): reading keeps one
record per position, the last.  Without ``--resume`` a new run keeps the old file as
``PATH.prev``, as the journal does; a file that is not a results file is never touched.
"""

import glob
import io
import json
import os
import pickle
from typing import Iterable, Iterator, Tuple, Union

from .errors import UserError
from .files import replaced

FORMATS = (".jsonl", ".pkl")


def format_of(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise UserError(f"--results {path}: the file name must end in .jsonl (JSON Lines, one "
                        f"{{\"pos\": N, \"value\": ...}} a line) or .pkl (pickled (pos, value) records, for "
                        f"values JSON cannot hold). Example: --results scores.jsonl")
    return ext[1:]


# --- in the worker ---------------------------------------------------------------------

class ValueNotWritable(TypeError):
    """The value a call returned cannot be written in the results file's format: that call
    fails with this message (and no traceback from inside the tool)."""

    no_traceback = True


def _json_default(value):
    tolist = getattr(value, "tolist", None)  # NumPy scalars and arrays
    if tolist is not None and callable(tolist):
        return tolist()
    t = type(value)
    name = t.__qualname__ if t.__module__ in ("builtins", "__cluster_func_target__") else \
        f"{t.__module__}.{t.__qualname__}"
    raise TypeError(f"the value returned is a {name}, "
                    f"which JSON cannot hold: return numbers, strings, lists or dicts, or write the "
                    f"results as pickles with --results PATH.pkl")


def encoder(fmt: str):
    """A function (position, value) -> the bytes of one record."""
    if fmt == "jsonl":
        dumps = json.JSONEncoder(separators=(",", ":"), default=_json_default).encode

        def encode(pos, value):
            try:
                text = dumps(value)
            except (TypeError, ValueError) as e:
                raise ValueNotWritable(str(e)) from None
            return f'{{"pos":{pos},"value":{text}}}\n'.encode("utf-8", "surrogatepass")
        return encode

    def encode_pickle(pos, value):
        try:
            return pickle.dumps((pos, value), 4)
        except Exception as e:  # noqa: BLE001
            raise ValueNotWritable(f"the value returned, a {type(value).__qualname__}, cannot be pickled: "
                                   f"{e}") from None
    return encode_pickle


# --- in the main process -----------------------------------------------------------------

def _first_record(path, fmt):
    """The first record of the file at path, or None if it is not a results file of ``fmt``."""
    with open(path, "rb") as f:
        if fmt == "jsonl":
            line = f.readline(1 << 20)
            try:
                rec = json.loads(line)
            except ValueError:
                return None
            return rec if isinstance(rec, dict) and set(rec) == {"pos", "value"} else None
        try:
            rec = pickle.load(f)
        except Exception:  # noqa: BLE001 - not a pickle, or not ours
            return None
        return rec if isinstance(rec, tuple) and len(rec) == 2 and type(rec[0]) is int else None


def _is_results_file(path, fmt):
    return os.path.getsize(path) == 0 or _first_record(path, fmt) is not None


class ResultsFile:
    """The results file of one run: checked, rotated or appended to, then written to."""

    def __init__(self, path: str, resume: bool):
        self.path = path
        self.format = format_of(path)
        self.broken = None  # the JournalWriteError that stopped writing
        if os.path.isdir(path):
            raise UserError(f"--results {path} is a directory. Name a file, e.g. --results "
                            f"{os.path.join(path, 'results.' + self.format)}.")
        folder = os.path.dirname(path) or "."
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise UserError(f"Cannot create the folder {folder} for --results: {e.strerror}.") from None
        if os.path.exists(path):
            if not os.path.isfile(path) or not _is_results_file(path, self.format):
                raise UserError(f"{path} is not a results file of clum ({self.format}), so clum will not "
                                f"move, overwrite or append to it. Name another file with --results PATH.")
            if not resume:
                prev = path + ".prev"
                if os.path.lexists(prev) and not (os.path.isfile(prev) and _is_results_file(prev, self.format)):
                    raise UserError(f"Cannot keep the previous results as {prev}: that file is not a results "
                                    f"file of clum, and clum will not overwrite it. Move it away, or name "
                                    f"another file with --results PATH.")
                os.replace(path, prev)
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"Cannot write the results file {path}: {e.strerror}. Name another file "
                            f"with --results PATH.") from None

    def write(self, data: bytes):
        """Write the records of some calls (one write); a failure raises JournalWriteError."""
        from .journal import JournalWriteError, _PartialWrite, _write_all

        if self.broken is not None:
            raise self.broken
        try:
            _write_all(self.fd, data)
        except _PartialWrite as e:
            self.broken = JournalWriteError(self.path, e.err, what="the results file")
            raise self.broken from None

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# --- reading -------------------------------------------------------------------------------------

def _records(path) -> Iterator[Tuple[int, object]]:
    fmt = format_of(path[:-len(".prev")] if path.endswith(".prev") else path)
    with open(path, "rb") as f:
        if fmt == "jsonl":
            for line in f:
                try:
                    rec = json.loads(line)
                    yield rec["pos"], rec["value"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line torn by a kill
        else:
            data = f.read()
            buf = io.BytesIO(data)
            while buf.tell() < len(data):
                try:
                    pos, value = pickle.load(buf)
                except Exception:  # noqa: BLE001 - a record torn by a kill: the rest is unreadable
                    break
                yield pos, value


def result_files(path: str):
    """The results files that ``path`` stands for: itself, or those of a cluf jobs dir."""
    if os.path.isdir(path):
        return sorted(glob.glob(os.path.join(glob.escape(path), "*.results.jsonl"))
                      + glob.glob(os.path.join(glob.escape(path), "*.results.pkl")))
    return [path]


def read_results(*paths: Union[str, Iterable[str]]) -> Iterator[Tuple[int, object]]:
    """Yield ``(position, value)`` in position order, one per position (the last written),
    from results files (``.jsonl`` or ``.pkl``), several of them (the ``--bins`` runs of
    several machines), or a cluf jobs dir."""
    files = []
    for p in paths:
        for one in ([p] if isinstance(p, (str, os.PathLike)) else list(p)):
            one = os.fspath(one)
            if not os.path.exists(one):
                raise FileNotFoundError(f"no results file or jobs dir at {one}")
            files += result_files(one)
    values = {}
    for path in files:
        for pos, value in _records(path):
            values[pos] = value
    for pos in sorted(values):
        yield pos, values[pos]


def write_records(path: str, items: Iterable[Tuple[int, object]]) -> int:
    """Write ``(position, value)`` items to a new results file (for ``cluf --gather``)."""
    encode = encoder(format_of(path))
    n = 0
    with replaced(path, "wb") as f:
        for pos, value in items:
            f.write(encode(pos, value))
            n += 1
    return n


# --- cluf --gather -------------------------------------------------------------------------------

def gather(jobs_dir, out=None) -> int:
    """Merge the results files of a cluf run's bins into one file in position order; say how
    many positions have no value (bins not done, calls failed).  Exit status 1 if any."""
    from . import jobs
    from . import journal as journal_mod
    from .bins import format_positions

    jobs_dir = os.path.abspath(jobs_dir or os.getcwd())
    manifests = jobs.find_manifests(jobs_dir)
    if not manifests:
        raise UserError(f"No cluf run in {jobs_dir}: there is no *{jobs.MANIFEST_SUFFIX} file there. Give the "
                        f"jobs dir of a run submitted with --results.")
    if out is not None and len(manifests) > 1:
        raise UserError(f"{jobs_dir} holds {len(manifests)} cluf runs; -o names one output file: gather "
                        f"without -o (one file per run) or give a jobs dir with one run.")
    status = 0
    for path in manifests:
        m = jobs.load_manifest(path)
        plan = jobs.plan_from_dict(m["plan"])
        if not plan.results:
            raise UserError(f"The run {path} was submitted without --results, so its jobs kept no values. "
                            f"Submit it with --results jsonl (or pkl) to collect them.")
        target = os.path.abspath(out) if out else path[:-len(jobs.MANIFEST_SUFFIX)] + ".results." + plan.results
        format_of(target)
        values, missing, not_done, unknown = {}, 0, [], []
        for i in range(plan.nodes):
            bin_values = {}
            f = plan.path(i, ".results." + plan.results)
            if os.path.exists(f):
                for pos, value in _records(f):
                    bin_values[pos] = value
            values.update(bin_values)
            expected = m["jobs"].get(str(i), {}).get("calls")
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
            parts = []
            if missing:
                parts.append(f"{missing} positions have no value (calls not done or failed)")
            if not_done:
                parts.append(f"bins {format_positions(not_done)} of {plan.nodes} are not done")
            if unknown:
                parts.append(f"the call count of bins {format_positions(unknown)} is not known, so what "
                             f"they lack is not counted")
            print(f"cluf: incomplete: {'; '.join(parts)}. 'cluf --status {jobs_dir}' shows the bins.")
    return status
