#!/usr/bin/env python3
"""The cost of one ``cluf --wait`` poll for a run of 10,000 bins.

    python benchmarks/wait_bench.py [--quick] [--bins N] [--calls-per-bin K] [--polls P]

A fake Slurm run is made in a temporary jobs dir: a manifest of N bins (one job each, with a
walltime, as ``cluf --walltime`` writes it) and a format-2 journal per bin with K completed
calls, one ``ok`` record each (a slow call per batch: the most records a bin can have).  Half
the bins are done (their journal ends ``complete``); the other half are running: a stand-in
``squeue`` (first on PATH) lists their jobs, and their journals have no end yet.

``cluster_func.cluster.status.wait`` then runs on that jobs dir, for real, with its ``time.sleep``
replaced by a stand-in that returns at once (and, after the P-th poll, stops the wait as Ctrl-C would).
Between two polls, outside the timed part, 1% of the running bins' journals get 5 more
records, as if their jobs had completed calls meanwhile.  A poll's cost is the time from the
end of one sleep to the start of the next: reading the manifest, one scheduler query, the
journals (read on from where the last poll stopped), the progress line.  The first poll reads
every journal whole; the later ones only what was appended.

Also timed: the parts of a poll alone (loading the manifest, the stand-in query, a full read of
the journals, ``bin_states`` with a warm cache) and one continuation (``continue_bin`` of a bin
stopped at its walltime, with a stand-in ``sbatch``): under its bin's lock it reads the manifest
and writes the bin's record (benchmarks/continuation_bench.py times many at once).

The issue's target: one poll under 1 s for 10,000 bins, the first one too (issue 31).  ``run(quick=False)`` returns the
rows, for the benchmark suite (benchmarks/run.py, section ``wait``).
"""

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import types
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

try:
    from cluster_func.cluster import continuation, jobs, manifest, status
    from cluster_func.schedulers import SCHEDULERS
except ImportError:  # a source checkout that is not installed
    sys.path.insert(0, ROOT)
    from cluster_func.cluster import continuation, jobs, manifest, status
    from cluster_func.schedulers import SCHEDULERS

BINS = (10_000, 2_000)  # full, quick
CALLS_PER_BIN = (100, 20)
POLLS = (6, 4)
CONTINUATIONS = (10, 3)
TARGET_POLL_S = 1.0
FIRST_ID = 100_000


def _ok_record(pos, nodes):
    # one call: its position run, a content check (CRC-32 + length) and a digest
    return _line({"t": "ok", "pos": [[pos, 1, nodes]], "c": f"{pos * 2654435761 % 2**32:08x}1c",
                  "d": f"{pos * 11400714819323198485 % 2**64:016x}"})


def _line(rec):
    return json.dumps(rec, separators=(",", ":")) + "\n"  # as the journal's writer writes it


def make_run(folder, nodes, calls_per_bin):
    """The jobs dir of a fake Slurm run of ``nodes`` bins; returns (manifest path, plan, running bins)."""
    plan = jobs.RunPlan(script=os.path.join(folder, "sweep.py"), nodes=nodes, jobs_dir=os.path.join(folder, "jobs"),
                        submit_dir=folder, scheduler=SCHEDULERS["slurm"](),
                        clum_args=["--target", "target", "--args", "args", "--walltime", "01:00:00"],
                        passthrough=[], resources={"walltime": 3600})
    os.makedirs(plan.jobs_dir)
    with open(plan.script, "w") as f:
        f.write("def target(x):\n    pass\n\nargs = range(%d)\n" % (nodes * calls_per_bin))
    m = manifest.new_manifest(plan)
    manifest.plan_bins(m, range(nodes))
    running = list(range(1, nodes, 2))  # the odd bins; the even ones are done
    for i in range(nodes):
        manifest.record(m, i, plan.script_path(i), str(FIRST_ID + i), calls=calls_per_bin)
        with open(plan.path(i, ".journal"), "w") as f:
            f.write(_line({"cluster_func_journal": 2, "script": plan.script, "bins": f"{i}/{nodes}",
                           "mode": "round-robin", "created": 1.7e9}))
            f.write(_line({"t": "start", "time": 1.7e9, "pid": 1000 + i, "resume": False}))
            done = calls_per_bin if i % 2 == 0 else calls_per_bin // 2
            f.write("".join(_ok_record(i + k * nodes, nodes) for k in range(done)))
            if i % 2 == 0:
                f.write(_line({"t": "end", "done": done, "failed": 0, "status": "complete"}))
    path = plan.manifest_path()
    manifest.save_manifest(path, m)
    return path, plan, running


def stand_ins(bindir, running):
    """``squeue`` listing the running bins' jobs; ``sbatch`` printing a new id."""
    os.makedirs(bindir)
    listing = os.path.join(bindir, "squeue.out")
    with open(listing, "w") as f:
        f.write("".join(f"{FIRST_ID + i} RUNNING\n" for i in running))
    for name, body in (("squeue", f"cat {listing}"), ("sbatch", "echo 999999")):
        p = os.path.join(bindir, name)
        with open(p, "w") as f:
            f.write(f"#!/bin/sh\n{body}\n")
        os.chmod(p, 0o755)


def _grow(plan, bins, nodes, extra=5):
    """Append ``extra`` more completed calls to the journals of ``bins``."""
    for i in bins:
        path = plan.path(i, ".journal")
        with open(path, "a") as f:
            f.write("".join(_ok_record(i + (1_000_000 + k) * nodes, nodes) for k in range(extra)))


def time_wait(manifest_path, plan, running, nodes, polls):
    """Per-poll seconds of the real status.wait, its sleeps made instant."""
    marks = []  # (sleep started, sleep ended)
    grown = [0]
    g = max(1, len(running) // 100)  # 1% of the running bins per poll

    cpu = []  # this process's CPU seconds at each sleep's start and end (the load of others left out)

    def fake_sleep(_seconds):
        t0 = time.perf_counter()
        cpu.append(time.process_time())
        if len(marks) + 1 >= polls:
            marks.append((t0, None))
            raise KeyboardInterrupt
        k = grown[0] * g % len(running)
        _grow(plan, running[k:k + g], nodes)
        grown[0] += 1
        marks.append((t0, time.perf_counter()))
        cpu.append(time.process_time())

    out = io.StringIO()
    cpu0 = time.process_time()
    start = time.perf_counter()
    # status.py's own time module only (subprocess sleeps too, while it waits for the query)
    clock = types.SimpleNamespace(sleep=fake_sleep, monotonic=time.monotonic)
    with mock.patch.object(status, "time", clock), contextlib.redirect_stdout(io.StringIO()):
        code = status.wait(plan.jobs_dir, out=out)
    assert code == 130, (code, out.getvalue()[-2000:])
    ends = [start] + [e for _, e in marks[:-1]]
    return [s - e for (s, _), e in zip(marks, ends)], out.getvalue(), cpu[0] - cpu0


def time_parts(manifest_path, plan, nodes, reps=3):
    sched = plan.scheduler
    m = manifest.load_manifest(manifest_path)
    ids = [j["id"] for j in m["jobs"].values()]
    parts = {}

    def best(fn):
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    parts["load the manifest (json)"] = best(lambda: status.load_run(manifest_path))
    parts["one scheduler query (stand-in squeue) and its parsing"] = best(lambda: sched.query(ids))
    parts["bin_states, no cache (every journal read whole)"] = best(lambda: status.bin_states(m))
    cache = {}
    status.bin_states(m, cache)
    parts["bin_states, warm cache, nothing new"] = best(lambda: status.bin_states(m, cache))
    return parts


def time_continuations(manifest_path, plan, nodes, count):
    """continue_bin on ``count`` done bins made to look stopped at the walltime."""
    chosen = list(range(0, 2 * count, 2))
    for i in chosen:
        path = plan.path(i, ".journal")
        with open(path) as f:
            lines = f.readlines()
        lines[-1] = _line({"t": "end", "done": 1, "failed": 0, "status": "walltime"})
        with open(path, "w") as f:
            f.writelines(lines)
    m = manifest.load_manifest(manifest_path)
    times, said = [], None
    for i in chosen:
        t0 = time.perf_counter()
        said = continuation.continue_bin(manifest_path, i, m["jobs"][str(i)]["id"])
        times.append(time.perf_counter() - t0)
    assert said.words.startswith("continued as job 999999"), said
    return times


def run(quick=False, bins=None, calls_per_bin=None, polls=None, log=None):
    q = 1 if quick else 0
    nodes = bins or BINS[q]
    calls = calls_per_bin or CALLS_PER_BIN[q]
    polls = polls or POLLS[q]
    log = log or (lambda text: None)
    tmp = tempfile.mkdtemp(prefix="cluf-wait-bench-")
    old_path = os.environ.get("PATH", "")
    rows = []
    try:
        t0 = time.perf_counter()
        manifest_path, plan, running = make_run(tmp, nodes, calls)
        stand_ins(os.path.join(tmp, "bin"), running)
        os.environ["PATH"] = os.path.join(tmp, "bin") + os.pathsep + old_path
        journal_bytes = sum(os.path.getsize(plan.path(i, ".journal")) for i in range(nodes))
        log(f"made a run of {nodes:,} bins in {time.perf_counter() - t0:.1f} s: manifest "
            f"{os.path.getsize(manifest_path) / 1e6:.1f} MB, journals {journal_bytes / 1e6:.1f} MB")
        size = (f"{nodes:,} bins ({len(running):,} running), {calls} calls a bin; manifest "
                f"{os.path.getsize(manifest_path) / 1e6:.1f} MB, journals {journal_bytes / 1e6:.1f} MB")

        per_poll, said, first_cpu = time_wait(manifest_path, plan, running, nodes, polls)
        log(f"status.wait polls: {', '.join(f'{s:.3f}' for s in per_poll)} s")
        later = per_poll[1:]
        rows.append({"what": "cluf --wait: first poll (every journal read whole)", "seconds": round(per_poll[0], 3),
                     "note": size})
        rows.append({"what": "  the first poll's CPU seconds (this process: what other load does not inflate)",
                     "seconds": round(first_cpu, 3), "note": "time.process_time"})
        rows.append({"what": f"cluf --wait: a later poll (1% of the running bins' journals grew; median of "
                             f"{len(later)})", "seconds": round(statistics.median(later), 3),
                     "note": f"min {min(later):.3f}, max {max(later):.3f}"})
        progress = [line for line in said.splitlines() if line.startswith("cluf: bins")]
        rows[-1]["progress"] = progress[0] if progress else ""

        for what, seconds in time_parts(manifest_path, plan, nodes).items():
            rows.append({"what": f"  part: {what}", "seconds": round(seconds, 3), "note": "best of 3"})
        log("parts timed")

        conts = time_continuations(manifest_path, plan, nodes, CONTINUATIONS[q])
        med = statistics.median(conts)
        rows.append({"what": "one continuation (continue_bin: the bin's lock, read the manifest, write "
                             "the job script, stand-in sbatch, the bin's record)", "seconds": round(med, 3),
                     "note": f"median of {len(conts)}; bins do not wait for each other "
                             f"(continuation_bench.py)"})
        log(f"continuations: {', '.join(f'{s:.3f}' for s in conts)} s")
    finally:
        os.environ["PATH"] = old_path
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def verdict(rows):
    later = next(r for r in rows if r["what"].startswith("cluf --wait: a later poll"))
    first = rows[0]
    ok = later["seconds"] < TARGET_POLL_S and first["seconds"] < TARGET_POLL_S
    return ok, (f"one cluf --wait poll of {first['note'].split(';')[0]}: the first, reading every journal "
                f"whole, {first['seconds']:.3f} s, a later one {later['seconds']:.3f} s "
                f"(limit {TARGET_POLL_S:g} s each)")


def _format(rows):
    keys = ["what", "seconds", "note"]
    cells = [[str(r.get(k, "")) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.ljust(w) for k, w in zip(keys, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cell, widths)).rstrip() for cell in cells]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{BINS[1]:,} bins of {CALLS_PER_BIN[1]} calls")
    parser.add_argument("--bins", type=int, default=None, help=f"default {BINS[0]:,}")
    parser.add_argument("--calls-per-bin", type=int, default=None, help=f"default {CALLS_PER_BIN[0]}")
    parser.add_argument("--polls", type=int, default=None, help=f"default {POLLS[0]}")
    args = parser.parse_args(argv)
    rows = run(quick=args.quick, bins=args.bins, calls_per_bin=args.calls_per_bin, polls=args.polls,
               log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(_format(rows))
    ok, text = verdict(rows)
    print(f"\n{'PASS' if ok else 'FAIL'}: {text}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
