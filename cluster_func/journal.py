"""The run journal: what completed and what failed, so a run can be resumed.

A journal is a text file of JSON lines, append-only, never rewritten in place.
Records are written as results arrive (one write per round of results, so a
killed run loses none it had received) and fsync'ed about once a second.  A line that does not
parse (a record torn by a kill or a power loss) is ignored when reading.

Records (``t`` is the type):

``{"t": "start", "v": 1, "script": PATH, "bins": "0/1", "mode": "round-robin", "time": EPOCH, "pid": N}``
    a run began (a resumed run appends a new ``start`` to the same file).
``{"t": "ok", "pos": [[first, count, step], ...], "d": "HEX..."}``
    calls at these positions completed; ``d`` is their per-call digests, 16 hex
    digits each, in position order.
``{"t": "ok", "pos": [[first, count, step], ...], "bd": "HEX"}``
    the same for a batch of cheap calls (below 10 µs a call, where digesting each
    call would cost more than running it): ``bd`` is one digest of the whole batch.
``{"t": "fail", "pos": N, "d": "HEX", "attempt": K, "final": BOOL, "type": "ValueError", "msg": "...", "args": "repr"}``
    a call raised, died with its worker, or timed out; ``final`` is false when it will be retried.
``{"t": "end", "done": N, "failed": M, "status": "complete" | "interrupted" | "aborted"}``
    the run finished (``complete`` even when some calls failed).

A call's digest is the first 8 bytes of BLAKE2b over ``pickle.dumps(element, 4)`` (with sets
pickled in a sorted order, so that it does not depend on PYTHONHASHSEED):
resuming matches calls by digest, so a change of order does not matter.  A batch
digest (``bd``) is checked against the same positions on resume, then skipped
as a whole; if the elements there differ, they are run again.
"""

import hashlib
import json
import os
import pickle
import time
import zlib
from dataclasses import dataclass, field
from typing import Optional

from .errors import UserError
from .script import short_repr

PER_CALL_DIGEST_MIN_SECONDS = 10e-6
FLUSH_SECONDS = 1.0


_SET_TAG = "\x00cluster_func:set"


def _canonical(obj):
    """``obj`` with every set replaced by a tagged tuple in a fixed order: a set of strings
    iterates in an order that depends on PYTHONHASHSEED, and a call's digest must not."""
    t = type(obj)
    if t is tuple:
        return tuple(_canonical(x) for x in obj)
    if t is list:
        return [_canonical(x) for x in obj]
    if t is dict:
        return {k: _canonical(v) for k, v in obj.items()}
    if t is set or t is frozenset:
        items = sorted((_canonical(x) for x in obj), key=lambda x: pickle.dumps(x, 4))
        return (_SET_TAG, t.__name__, tuple(items))
    return obj


def call_digest(element) -> bytes:
    try:
        data = pickle.dumps(_canonical(element), 4)
    except Exception:  # noqa: BLE001 - fall back to repr for the odd unpicklable element
        data = repr(element).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=8).digest()


def batch_digest(elements) -> str:
    """Must match the runner's digest of the batch it sent (pickle protocol 4 of the list)."""
    data = pickle.dumps(list(elements), 4)
    return f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}{len(data):x}"


def encode_positions(positions):
    """Positions as [first, count, step] runs (a range is one run)."""
    if isinstance(positions, range):
        return [[positions.start, len(positions), positions.step]] if len(positions) else []
    runs = []
    i, n = 0, len(positions)
    while i < n:
        first = positions[i]
        if i + 1 < n:
            step = positions[i + 1] - first
            j = i + 1
            while j + 1 < n and positions[j + 1] - positions[j] == step:
                j += 1
            if step > 0:
                runs.append([first, j - i + 1, step])
                i = j + 1
                continue
        runs.append([first, 1, 1])
        i += 1
    return runs


def decode_positions(runs):
    out = []
    for first, count, step in runs:
        out.extend(range(first, first + count * step, step))
    return out


def default_path(script_path: str, bins_text: str) -> str:
    folder = os.path.join(os.path.dirname(script_path), ".cluster_func")
    stem = os.path.splitext(os.path.basename(script_path))[0]
    tag = "all" if bins_text in ("", "0/1") else "bins-" + bins_text.replace("/", "-of-").replace(",", "_")
    return os.path.join(folder, f"{stem}.{tag}.journal")


@dataclass
class JournalState:
    """What reading a journal found."""
    digests: set = field(default_factory=set)  # completed calls, per-call digests
    batches: dict = field(default_factory=dict)  # first position -> (position runs, batch digest)
    runs: int = 0
    last_done: int = 0
    last_failed: list = field(default_factory=list)  # final failures of the last run (records)
    last_status: Optional[str] = None  # None: the last run did not write its end
    torn: int = 0
    completed_total: int = 0


def read(path: str, for_resume=False) -> JournalState:
    """Read a journal; digests and batches only ``for_resume`` (the rest is counts)."""
    st = JournalState()
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return st
    with f:
        for raw in f:
            try:
                rec = json.loads(raw)
                t = rec["t"]
            except (ValueError, KeyError, TypeError):
                st.torn += 1
                continue
            if t == "start":
                st.runs += 1
                st.last_done, st.last_failed, st.last_status = 0, [], None
            elif t == "ok":
                runs = rec["pos"]
                n = sum(run[1] for run in runs)
                st.last_done += n
                st.completed_total += n
                if not for_resume:
                    continue
                if "d" in rec:
                    d = bytes.fromhex(rec["d"])
                    st.digests.update(d[i:i + 8] for i in range(0, len(d), 8))
                elif "bd" in rec and runs:
                    st.batches[runs[0][0]] = (runs, rec["bd"])
            elif t == "fail":
                if rec.get("final", True):
                    st.last_failed.append(rec)
            elif t == "end":
                st.last_status = rec.get("status", "complete")
    return st


class Journal:
    def __init__(self, path: str, script_path: str, bins_text: str, mode: str, resume: bool, warn):
        self.path = path
        self.lines = []
        self.last_sync = time.monotonic()
        folder = os.path.dirname(path)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise UserError(f"Cannot create the journal folder {folder}: {e.strerror}. "
                            f"Choose another place with --journal PATH.") from None
        self.previous = read(path, for_resume=resume) if os.path.exists(path) else None
        if not resume and self.previous is not None:
            prev = self.previous
            if prev.last_status is None or prev.last_failed:
                state = "did not finish" if prev.last_status is None else "finished with failed calls"
                warn(f"the previous run of this script and bin spec {state} "
                     f"({prev.last_done} calls completed, {len(prev.last_failed)} failed); starting over. "
                     f"--resume would skip the {prev.completed_total} completed calls. "
                     f"The previous journal is kept as {path}.prev.")
            os.replace(path, path + ".prev")
        try:
            self.f = open(path, "ab")
        except OSError as e:
            raise UserError(f"Cannot write the journal {path}: {e.strerror}. "
                            f"Choose another place with --journal PATH.") from None
        if self.f.tell() > 0:  # make sure a torn last line stays on its own line
            with open(path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    self.f.write(b"\n")
        self._add({"t": "start", "v": 1, "script": script_path, "bins": bins_text, "mode": mode,
                   "time": round(time.time(), 3), "pid": os.getpid()})
        self.flush()

    def _add(self, rec):
        self.lines.append(json.dumps(rec, separators=(",", ":")))

    def completed(self, positions, elements, seconds_per_call=None, payload_digest=None):
        rec = {"t": "ok", "pos": encode_positions(positions)}
        if payload_digest is not None and (seconds_per_call or 0) < PER_CALL_DIGEST_MIN_SECONDS:
            rec["bd"] = payload_digest
        else:
            rec["d"] = b"".join(call_digest(e) for e in elements).hex()
        self._add(rec)

    def failed(self, position, element, attempt, exc_type, message, final):
        self._add({"t": "fail", "pos": position, "d": call_digest(element).hex(), "attempt": attempt,
                   "final": final, "type": exc_type, "msg": str(message)[:2000],
                   "args": short_repr(element, 300)})

    def maybe_flush(self, now):
        """Write what is pending (one write: it survives the process being killed);
        fsync at most once every FLUSH_SECONDS (so a power loss loses at most that)."""
        if self.lines:
            self.flush(sync=now - self.last_sync >= FLUSH_SECONDS)

    def flush(self, sync=True):
        if self.lines:
            data = ("\n".join(self.lines) + "\n").encode("utf-8", "surrogatepass")
            self.lines = []
            self.f.write(data)
            self.f.flush()
        if sync:
            self.last_sync = time.monotonic()
            try:
                os.fsync(self.f.fileno())
            except OSError:
                pass

    def close(self, done, failed, status):
        self._add({"t": "end", "done": done, "failed": failed, "status": status})
        self.flush()
        self.f.close()


def resume_filter(work, state: JournalState, skipped: list):
    """Drop from ``work`` the calls ``state`` records as completed; count them in skipped[0].

    Per-call records match by digest, wherever the call now is.  A batch record
    (``bd``) matches when the elements now at its positions have its digest: the
    elements at those positions are held back until all have been seen, then
    skipped together, or run if they differ (or some position no longer exists).
    """
    digests = state.digests
    records = sorted(state.batches.items())  # [(first position, (runs, digest))]
    if not digests and not records:
        yield from work
        return

    def loose(items):
        for p, e in items:
            if digests and call_digest(e) in digests:
                skipped[0] += 1
            else:
                yield p, e

    nxt = 0  # next record to open
    open_records = []  # [last position, positions set, digest, {position: element}]
    for pos, elem in work:
        while nxt < len(records) and records[nxt][0] <= pos:
            positions = decode_positions(records[nxt][1][0])
            open_records.append([positions[-1], set(positions), records[nxt][1][1], {}])
            nxt += 1
        held = False
        for rec in open_records:
            if pos in rec[1]:
                rec[3][pos] = elem
                held = True
                break
        if not held:
            yield from loose(((pos, elem),))
        still_open = []
        for rec in open_records:
            last, positions, bd, seen = rec
            if len(seen) == len(positions):
                elements = [seen[p] for p in sorted(seen)]
                if batch_digest(elements) == bd:
                    skipped[0] += len(elements)
                else:
                    yield from loose(sorted(seen.items()))
            elif pos >= last:  # some of its positions are gone: run what was held
                yield from loose(sorted(seen.items()))
            else:
                still_open.append(rec)
        open_records = still_open
    for rec in open_records:
        yield from loose(sorted(rec[3].items()))
